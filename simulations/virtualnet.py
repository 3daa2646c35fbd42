"""A virtual network for the Network seam: hosts, links, bandwidth, latency, loss, partitions.

The real node code runs on it unchanged: each virtual host gets a `HostNetwork`, which
implements `node.network.Network` with in-memory streams and datagrams. Time is Trio's clock,
driven by a `MockClock` in simulation, and every random choice comes from the scenario seed.

The model, per byte sent from host A to host B:

1. **A's uplink** serialises it: a host has one upload capacity shared by all its connections
   and datagrams, first come first served (a token bucket that every flow draws from), so
   competing flows split the link.
2. **The link** delays it by the pair's one-way latency (`LatencyModel`). With probability
   `stream_loss` a stream segment is "lost" and arrives one retransmission timeout later, and
   everything behind it on that connection waits (TCP's head-of-line blocking). A datagram is
   dropped with probability `datagram_loss`.
3. **B's downlink** serialises it again (B's download capacity, shared the same way).
4. If A and B are in different **partitions** at delivery time, stream data is held and retried
   (as TCP retransmits) until the partition heals; datagrams are dropped. New connections across
   a partition time out.

Streams have a flow-control window: a sender blocks once `window_bytes` are unread by the
receiving application (acknowledgements travel back with the link latency), so a slow reader
slows its writer, as on a real socket. Times are whole microseconds, so equal deadlines stay
equal. Everything is delivered by one task (`World.run`) from one heap of (time, sequence,
action): no task or timer per message, which is what makes thousands of nodes affordable.

A host **crash** breaks every socket of the host (peers see a reset one latency later), frees
its ports and bumps its incarnation; the simulation harness cancels its tasks. A restarted host
keeps its address and disk. Dialling a host that is down is refused (its kernel answers);
dialling an unknown address or across a partition times out.
"""

from __future__ import annotations

import errno
import heapq
import logging
import math
import operator
import random
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import attrs
import trio

from node.network import HostPort, StreamAddress, StreamHandler, StreamTransport
from simulations.determinism import derive_random
from simulations.latency import LatencyModel
from simulations.trace import Trace

log = logging.getLogger("kinswarm.sim.network")

T = TypeVar("T")

SEGMENT_BYTES: Final = 64 * 1024
"""Stream writes are cut into segments of at most this size; competing flows interleave at
this granularity on a shared link."""
RETRANSMIT_MIN_US: Final = 200_000
"""A lost segment arrives this long (or two round trips, if longer) after it would have."""
PARTITION_RETRY_US: Final = 1_000_000
"""Stream data held by a partition is retransmitted on this period: once the partition
changes, it arrives at the next multiple of this after it was first held."""
CONNECT_TIMEOUT_S: Final = 10.0
"""Dials that get no answer (unknown host, partition) fail after this long, like realnet's."""
DATAGRAM_QUEUE_LIMIT: Final = 4096
"""Datagrams queued at an endpoint before further ones are dropped (a full socket buffer)."""
MAX_DATAGRAM_BYTES: Final = 65507
EPHEMERAL_PORT_START: Final = 49152
DELIVERY_SLACK_US: Final = 200
"""A downlink delivery due this soon after its arrival happens in the arrival callback rather
than as an event of its own: at most 0.2 ms early, and one heap event fewer per segment."""

_EOF: Final = b""
"""In a pipe's queue, the end-of-stream marker (FIN). Data segments are never empty."""


class _Reset:
    """In a pipe's queue, the connection-reset marker."""


_RESET: Final = _Reset()


@attrs.define
class WorldConfig:
    seed: int
    latency: LatencyModel = attrs.Factory(LatencyModel)
    stream_loss: float = 0.0
    datagram_loss: float = 0.0
    window_bytes: int = 2 * 1024 * 1024


def _serialisation_us(size: int, bytes_per_second: float) -> int:
    if bytes_per_second == math.inf or size == 0:
        return 0
    return math.ceil(size * 1_000_000 / bytes_per_second)


class _Uplink:
    """A host's upload link: one segment on the wire at a time, flows served round-robin.

    Each connection direction (and each datagram socket) is a flow with its own queue; the
    link takes one segment from each backlogged flow in turn, so competing flows share the
    capacity evenly whatever their window sizes (what TCP's congestion control converges to
    on a real link, without simulating congestion control)."""

    __slots__ = ("_active", "_busy", "_free_at_us", "_queues", "host")

    def __init__(self, host: VirtualHost) -> None:
        self.host = host
        self._queues: dict[object, deque[tuple[int, Callable[[Any, int], None], Any]]] = {}
        self._active: deque[object] = deque()
        self._busy = False
        self._free_at_us = 0

    def send(
        self, flow: object, size: int, on_departure: Callable[[Any, int], None], item: Any
    ) -> None:
        """Queue `item` (`size` bytes) on `flow`; `on_departure(item, departure_us)` runs when
        its last byte has left the host (at once, with a future time, if the link is idle)."""
        host = self.host
        host.bytes_sent += size
        world = host.world
        now = world.now_us()
        if host.upload_bytes_per_second == math.inf:
            on_departure(item, now)  # no serialisation: skip the queue entirely
            return
        if not self._busy and not self._active and self._free_at_us <= now:
            # Idle link: no queueing, so the departure time is known now; skip the event.
            self._free_at_us = now + _serialisation_us(size, host.upload_bytes_per_second)
            on_departure(item, self._free_at_us)
            return
        queue = self._queues.get(flow)
        if queue is None:
            queue = self._queues[flow] = deque()
        if not queue:
            self._active.append(flow)
        queue.append((size, on_departure, item))
        if not self._busy:
            self._busy = True
            world.schedule(max(now, self._free_at_us), self._transmit_next, None)

    def _transmit_next(self, unused: object = None) -> None:
        """The link is free: put the next segment (round-robin over flows) on the wire."""
        if not self._active:
            self._busy = False
            return
        flow = self._active.popleft()
        queue = self._queues[flow]
        size, on_departure, item = queue.popleft()
        if queue:
            self._active.append(flow)
        else:
            del self._queues[flow]
        world = self.host.world
        self._free_at_us = world.now_us() + _serialisation_us(
            size, self.host.upload_bytes_per_second
        )
        on_departure(item, self._free_at_us)
        world.schedule(self._free_at_us, self._transmit_next, None)

    def clear(self) -> None:
        """The host crashed: whatever was queued never leaves."""
        self._queues.clear()
        self._active.clear()
        self._free_at_us = 0


def host_address(index: int) -> str:
    """The address of host `index`: each host alone in its own /24 (10.a.b.c)."""
    return f"10.{index % 256}.{(index // 256) % 256}.{1 + index // 65536}"


class VirtualHost:
    """A machine on the virtual network: an address, link capacities, sockets, liveness."""

    def __init__(
        self,
        world: World,
        index: int,
        address: str,
        upload_bytes_per_second: float,
        download_bytes_per_second: float,
    ) -> None:
        self.world = world
        self.index = index
        self.address = address
        self.upload_bytes_per_second = upload_bytes_per_second
        self.download_bytes_per_second = download_bytes_per_second
        self.uplink = _Uplink(self)
        self.downlink_free_us = 0
        self.alive = True
        self.incarnation = 0
        self.listeners: dict[tuple[StreamTransport, int], _Listener] = {}
        self.endpoints: dict[int, VirtualDatagramEndpoint] = {}
        self.streams: dict[int, VirtualStream] = {}
        self._next_port = EPHEMERAL_PORT_START
        self.bytes_sent = 0
        self.bytes_received = 0

    def allocate_port(self) -> int:
        while True:
            port = self._next_port
            self._next_port = EPHEMERAL_PORT_START + (port + 1 - EPHEMERAL_PORT_START) % 16384
            in_use = any(key[1] == port for key in self.listeners) or port in self.endpoints
            if not in_use:
                return port

    def __repr__(self) -> str:
        return f"VirtualHost({self.index}, {self.address})"


class World:
    """The virtual network: every host, the delivery heap and the fault state."""

    def __init__(self, config: WorldConfig, trace: Trace | None = None) -> None:
        self.config = config
        self.trace = trace if trace is not None else Trace()
        self.hosts: list[VirtualHost] = []
        self.hosts_by_address: dict[str, VirtualHost] = {}
        self._random = derive_random(config.seed, "world")
        self._heap: list[tuple[int, int, Callable[[Any], None], Any]] = []
        self._sequence = 0
        self._sleep_scope: trio.CancelScope | None = None
        self._group_of: dict[int, int] | None = None
        self._held: dict[_Pipe, int] = {}
        """Pipes whose data a partition holds, with the time each was first held."""
        self._next_stream_id = 0
        self.running = False
        self.delivered_events = 0
        self._batch_now_us: int | None = None
        """While the delivery loop runs a batch, the time (reading the clock is not free)."""
        self.on_progress: Callable[[], None] | None = None
        """Called from the delivery loop at most once per simulated second (for displays)."""
        self._next_progress_us = 0

    # -- hosts and faults -----------------------------------------------------------------

    def add_host(
        self,
        *,
        upload_bytes_per_second: float = math.inf,
        download_bytes_per_second: float = math.inf,
        address: str | None = None,
    ) -> VirtualHost:
        index = len(self.hosts)
        address = address or host_address(index)
        if address in self.hosts_by_address:
            raise ValueError(f"address {address} is taken")
        host = VirtualHost(self, index, address, upload_bytes_per_second, download_bytes_per_second)
        self.hosts.append(host)
        self.hosts_by_address[address] = host
        return host

    def latency_us(self, a: VirtualHost, b: VirtualHost) -> int:
        if a is b:
            return 50  # loopback inside one host
        return self.config.latency.one_way_us(self.config.seed, a.index, b.index)

    def reachable(self, a: VirtualHost, b: VirtualHost) -> bool:
        groups = self._group_of
        return groups is None or groups.get(a.index, -1) == groups.get(b.index, -1)

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Split hosts (by index) into groups that cannot reach each other. Hosts in no group
        form one more group together."""
        self._group_of = {index: number for number, group in enumerate(groups) for index in group}
        self.trace.record("partition", *[len(group) for group in groups])
        self._retry_held()

    def heal(self) -> None:
        self._group_of = None
        self.trace.record("heal")
        self._retry_held()

    def hold(self, pipe: _Pipe) -> None:
        """A partition blocks `pipe`: park it (no polling) until the partition changes."""
        self._held.setdefault(pipe, self.now_us())

    def _retry_held(self) -> None:
        """Partitions changed: each held pipe retries at its next retransmission time."""
        now = self.now_us()
        held, self._held = self._held, {}
        for pipe, since in held.items():
            periods = max(1, -(-(now - since) // PARTITION_RETRY_US))
            self.schedule(since + periods * PARTITION_RETRY_US, pipe._deliver_due, 0)

    def crash(self, host: VirtualHost) -> None:
        """Break every socket of `host`; its peers see resets one latency later."""
        if not host.alive:
            return
        host.alive = False
        host.incarnation += 1
        self.trace.record("crash", host.index)
        for stream in list(host.streams.values()):
            stream._crash()
        host.streams.clear()
        for endpoint in list(host.endpoints.values()):
            endpoint._crash()
        host.endpoints.clear()
        host.listeners.clear()
        host.uplink.clear()

    def restart(self, host: VirtualHost) -> None:
        """Bring a crashed host back (same address, empty socket tables)."""
        if host.alive:
            return
        host.alive = True
        host.downlink_free_us = 0
        self.trace.record("restart", host.index)

    # -- the delivery loop ----------------------------------------------------------------

    def now_us(self) -> int:
        cached = self._batch_now_us
        if cached is not None:
            return cached
        return round(trio.current_time() * 1_000_000)

    def schedule(self, at_us: int, action: Callable[[Any], None], argument: Any) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (at_us, self._sequence, action, argument))
        scope = self._sleep_scope
        if scope is not None and at_us / 1_000_000 < scope.deadline:
            scope.deadline = at_us / 1_000_000

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver every scheduled event at its time, forever. One task for the whole world."""
        heap = self._heap
        self.running = True
        task_status.started()
        try:
            while True:
                now = round(trio.current_time() * 1_000_000)
                self._batch_now_us = now
                try:
                    while heap and heap[0][0] <= now:
                        _, _, action, argument = heapq.heappop(heap)
                        self.delivered_events += 1
                        action(argument)
                finally:
                    self._batch_now_us = None
                if self.on_progress is not None and now >= self._next_progress_us:
                    self._next_progress_us = now + 1_000_000
                    self.on_progress()
                deadline = heap[0][0] / 1_000_000 if heap else math.inf
                with trio.CancelScope(deadline=deadline) as scope:
                    self._sleep_scope = scope
                    await trio.sleep_forever()
                self._sleep_scope = None
        finally:
            self.running = False
            self._sleep_scope = None

    def random(self) -> float:
        return self._random.random()

    def next_stream_id(self) -> int:
        self._next_stream_id += 1
        return self._next_stream_id

    # -- transmission -----------------------------------------------------------------------

    def downlink_delivery_us(self, target: VirtualHost, size: int) -> int:
        """Reserve `size` bytes on `target`'s downlink from now; returns when they are in."""
        delivery = max(self.now_us(), target.downlink_free_us) + _serialisation_us(
            size, target.download_bytes_per_second
        )
        target.downlink_free_us = delivery
        target.bytes_received += size
        return delivery


class _Pipe:
    """One direction of a stream: bytes from `source` to `target`, in order."""

    __slots__ = (
        "_reader_wakeup",
        "_writer_wakeup",
        "buffered",
        "chunks",
        "eof",
        "last_arrival_us",
        "latency_us",
        "pending",
        "reader_closed",
        "reset",
        "source",
        "target",
        "target_incarnation",
        "unacknowledged",
        "world",
        "writer_broken",
    )

    def __init__(self, world: World, source: VirtualHost, target: VirtualHost) -> None:
        self.world = world
        self.source = source
        self.target = target
        self.target_incarnation = target.incarnation
        self.latency_us = world.latency_us(source, target)
        self.last_arrival_us = 0
        self.pending: deque[tuple[int, bytes | _Reset]] = deque()
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.unacknowledged = 0
        self.eof = False
        self.reset = False
        self.reader_closed = False
        self.writer_broken = False
        self._reader_wakeup: trio.Event | None = None
        self._writer_wakeup: trio.Event | None = None

    # sender side

    def transmit(self, item: bytes | _Reset) -> None:
        size = len(item) if isinstance(item, bytes) else 0
        if size:
            self.unacknowledged += size
            self.world.trace.record("segment", self.source.index, self.target.index, size=size)
        self.source.uplink.send(self, size, self._departed, item)

    def _departed(self, item: bytes | _Reset, departure_us: int) -> None:
        world = self.world
        arrival = departure_us + self.latency_us
        if item and world.config.stream_loss and world.random() < world.config.stream_loss:
            arrival += max(RETRANSMIT_MIN_US, 4 * self.latency_us)
            world.trace.record("segment-lost", self.source.index, self.target.index)
        arrival = max(arrival, self.last_arrival_us)  # in order: head-of-line blocking
        self.last_arrival_us = arrival
        world.schedule(arrival, self._arrive, item)

    def _arrive(self, item: bytes | _Reset) -> None:
        if self.target.incarnation != self.target_incarnation:
            return  # the receiving host crashed since: its sockets are gone
        size = len(item) if isinstance(item, bytes) else 0
        world = self.world
        delivery = world.downlink_delivery_us(self.target, size)
        self.pending.append((delivery, item))
        if delivery - world.now_us() <= DELIVERY_SLACK_US:
            self._deliver_due(DELIVERY_SLACK_US)
        else:
            world.schedule(delivery, self._deliver_due, 0)

    def _deliver_due(self, slack_us: int) -> None:
        world = self.world
        now = world.now_us() + slack_us
        pending = self.pending
        delivered = False
        while pending and pending[0][0] <= now:
            if not world.reachable(self.source, self.target):
                world.hold(self)
                break
            _, item = pending.popleft()
            if self.reader_closed:
                continue
            if item is _RESET:
                self.reset = True
            elif not item:
                self.eof = True
            else:
                assert isinstance(item, bytes)
                self.chunks.append(item)
                self.buffered += len(item)
            delivered = True
        if delivered:
            self.wake_reader()

    def _acknowledge(self, size: int) -> None:
        self.unacknowledged -= size
        self.wake_writer()

    def break_writer(self, _: object = None) -> None:
        self.writer_broken = True
        self.wake_writer()

    # receiver side

    def take(self, max_bytes: int) -> bytes:
        """Take up to `max_bytes` buffered bytes (joined), acknowledging them to the sender."""
        chunks = self.chunks
        first = chunks.popleft()
        if len(first) > max_bytes:
            chunks.appendleft(first[max_bytes:])
            data = first[:max_bytes]
        else:
            parts = [first]
            size = len(first)
            while chunks and size + len(chunks[0]) <= max_bytes:
                chunk = chunks.popleft()
                parts.append(chunk)
                size += len(chunk)
            data = first if len(parts) == 1 else b"".join(parts)
        self.buffered -= len(data)
        if self._writer_wakeup is None and self.unacknowledged * 2 < self.world.config.window_bytes:
            # The sender is nowhere near its window: when the ack arrives changes nothing.
            self.unacknowledged -= len(data)
        else:
            self.world.schedule(self.world.now_us() + self.latency_us, self._acknowledge, len(data))
        return data

    # wakeups

    async def wait_readable(self) -> None:
        event = self._reader_wakeup = trio.Event()
        await event.wait()

    async def wait_writable(self) -> None:
        event = self._writer_wakeup = trio.Event()
        await event.wait()

    def wake_reader(self) -> None:
        if self._reader_wakeup is not None:
            self._reader_wakeup.set()
            self._reader_wakeup = None

    def wake_writer(self) -> None:
        if self._writer_wakeup is not None:
            self._writer_wakeup.set()
            self._writer_wakeup = None


class VirtualStream(trio.abc.HalfCloseableStream):
    """One end of a virtual TCP connection."""

    def __init__(self, host: VirtualHost, outgoing: _Pipe, incoming: _Pipe) -> None:
        self.host = host
        self.world = host.world
        self.stream_id = self.world.next_stream_id()
        self._outgoing = outgoing
        self._incoming = incoming
        self._closed = False
        self._sent_eof = False
        self._sending = False
        self._receiving = False
        host.streams[self.stream_id] = self

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            self._check_sendable()
            view = memoryview(data).cast("B")
            window = self.world.config.window_bytes
            pipe = self._outgoing
            for start in range(0, len(view), SEGMENT_BYTES):
                segment = bytes(view[start : start + SEGMENT_BYTES])
                while pipe.unacknowledged and pipe.unacknowledged + len(segment) > window:
                    await pipe.wait_writable()
                    self._check_sendable()
                pipe.transmit(segment)
        finally:
            self._sending = False

    def _check_sendable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if self._sent_eof:
            raise trio.ClosedResourceError("cannot send after send_eof")
        if self._outgoing.writer_broken or not self.host.alive:
            raise trio.BrokenResourceError("connection reset by peer")

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            pipe = self._outgoing
            while not self._closed and pipe.unacknowledged >= self.world.config.window_bytes:
                await pipe.wait_writable()
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("stream is closed")
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for floats, as sockets do
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        self._receiving = True
        try:
            pipe = self._incoming
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream is closed")
                if pipe.buffered:
                    await trio.lowlevel.checkpoint()
                    if self._closed:
                        raise trio.ClosedResourceError("stream is closed")
                    return pipe.take(max_bytes or SEGMENT_BYTES)
                if pipe.reset:
                    await trio.lowlevel.checkpoint()
                    raise trio.BrokenResourceError("connection reset by peer")
                if pipe.eof:
                    await trio.lowlevel.checkpoint()
                    return b""
                await pipe.wait_readable()
        finally:
            self._receiving = False

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if not self._sent_eof:
            self._sent_eof = True
            self._outgoing.transmit(_EOF)

    async def aclose(self) -> None:
        self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.host.streams.pop(self.stream_id, None)
        world = self.world
        if self.host.alive:
            if not self._sent_eof:
                self._sent_eof = True
                self._outgoing.transmit(_EOF)
            # Data the peer sends from now on is refused: its writer learns one latency later.
            self._incoming.reader_closed = True
            world.schedule(
                world.now_us() + self._incoming.latency_us, self._incoming.break_writer, None
            )
            world.trace.record("close", self.host.index, self._outgoing.target.index)
        self._incoming.wake_reader()
        self._outgoing.wake_writer()

    def _crash(self) -> None:
        """Our host died: the peer gets a reset after the in-flight data."""
        world = self.world
        self._closed = True
        self._outgoing.transmit(_RESET)
        world.schedule(
            world.now_us() + self._incoming.latency_us, self._incoming.break_writer, None
        )
        self._incoming.reader_closed = True
        self._incoming.wake_reader()
        self._outgoing.wake_writer()


@attrs.define
class _Listener:
    host: VirtualHost
    transport: StreamTransport
    port: int
    handler: StreamHandler
    nursery: trio.Nursery
    incarnation: int


class VirtualDatagramEndpoint:
    """A bound virtual UDP socket."""

    def __init__(self, host: VirtualHost, port: int) -> None:
        self.host = host
        self.world = host.world
        self._port = port
        self._queue: deque[tuple[bytes, HostPort]] = deque()
        self._wakeup: trio.Event | None = None
        self._closed = False
        self.dropped_full = 0

    @property
    def local_address(self) -> HostPort:
        return (self.host.address, self._port)

    async def send(self, data: bytes, destination: HostPort) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("endpoint is closed")
        if len(data) > MAX_DATAGRAM_BYTES:
            return  # the kernel would refuse it; like realnet, the datagram is just lost
        world = self.world
        source = self.host
        target = world.hosts_by_address.get(destination[0])
        world.trace.record(
            "datagram", source.index, -1 if target is None else target.index, size=len(data)
        )
        if target is None:
            return
        if world.config.datagram_loss and world.random() < world.config.datagram_loss:
            world.trace.record("datagram-lost", source.index, target.index)
            return
        source.uplink.send(
            self,
            len(data),
            _datagram_departed,
            (target, destination[1], data, self.local_address, source),
        )

    async def receive(self) -> tuple[bytes, HostPort]:
        while True:
            if self._closed:
                raise trio.ClosedResourceError("endpoint is closed")
            if self._queue:
                await trio.lowlevel.checkpoint()
                return self._queue.popleft()
            event = self._wakeup = trio.Event()
            await event.wait()

    async def aclose(self) -> None:
        self._crash()
        await trio.lowlevel.checkpoint()

    def _deliver(self, item: tuple[bytes, HostPort]) -> None:
        if self._closed:
            return
        if len(self._queue) >= DATAGRAM_QUEUE_LIMIT:
            self.dropped_full += 1
            return
        self._queue.append(item)
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def _crash(self) -> None:
        if not self._closed:
            self._closed = True
            if self.host.endpoints.get(self._port) is self:
                del self.host.endpoints[self._port]
            if self._wakeup is not None:
                self._wakeup.set()


def _datagram_departed(
    argument: tuple[VirtualHost, int, bytes, HostPort, VirtualHost], departure_us: int
) -> None:
    target, _, _, _, source = argument
    world = target.world
    world.schedule(departure_us + world.latency_us(source, target), _datagram_arrival, argument)


def _datagram_arrival(
    argument: tuple[VirtualHost, int, bytes, HostPort, VirtualHost],
) -> None:
    target, port, data, source_address, source = argument
    world = target.world
    if not target.alive or not world.reachable(source, target):
        world.trace.record("datagram-dropped", source.index, target.index)
        return
    endpoint = target.endpoints.get(port)
    if endpoint is None:
        return
    delivery = world.downlink_delivery_us(target, len(data))
    world.schedule(delivery, endpoint._deliver, (data, source_address))


class HostNetwork:
    """The Network seam for one virtual host (one incarnation of it)."""

    def __init__(self, host: VirtualHost) -> None:
        self.host = host
        self.world = host.world
        seed = self.world.config.seed
        self._random = derive_random(seed, "host", host.index, host.incarnation, "random")
        self._crypto = derive_random(seed, "host", host.index, host.incarnation, "crypto")
        self.connect_timeout = CONNECT_TIMEOUT_S

    async def __aenter__(self) -> Self:
        if not self.world.running:
            raise RuntimeError("the World's delivery task is not running")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    @property
    def random(self) -> random.Random:
        return self._random

    def crypto_random(self, size: int) -> bytes:
        return self._crypto.randbytes(size)

    def now(self) -> float:
        return trio.current_time()

    def trace(self, event: str, *fields: int | str, size: int = 0) -> None:
        self.world.trace.record(event, self.host.index, *fields, size=size)

    async def run_blocking(self, function: Callable[..., T], *args: Any) -> T:
        await trio.lowlevel.checkpoint()
        return function(*args)

    # -- streams --------------------------------------------------------------------------

    async def open_stream(self, address: StreamAddress) -> trio.abc.Stream:
        host = self.host
        world = self.world
        if not host.alive:
            raise OSError(errno.ENETDOWN, "this host is down")
        target = world.hosts_by_address.get(address.host)
        port = host.allocate_port()
        world.trace.record(
            "connect", host.index, -1 if target is None else target.index, address.port
        )
        outcome: dict[str, Any] = {}
        answered = trio.Event()

        def finish(result: Any) -> None:
            if answered.is_set():
                if isinstance(result, VirtualStream):  # the dialler gave up meanwhile
                    result._close()
                return
            outcome["result"] = result
            answered.set()

        if target is not None and world.reachable(host, target):
            latency = world.latency_us(host, target)
            world.schedule(
                world.now_us() + latency,
                _syn_arrival,
                (host, port, target, address, latency, finish),
            )
        with trio.move_on_after(self.connect_timeout):
            await answered.wait()
        if not answered.is_set():
            answered.set()  # late answers are discarded by finish()
            world.trace.record("connect-timeout", host.index, address.port)
            raise TimeoutError(f"connecting to {address} timed out")
        result = outcome["result"]
        if isinstance(result, BaseException):
            raise result
        assert isinstance(result, VirtualStream)
        return result

    async def serve_streams(
        self,
        address: StreamAddress,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[StreamAddress] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        host = self.host
        if address.host not in (host.address, "0.0.0.0"):
            raise OSError(errno.EADDRNOTAVAIL, f"{address.host} is not this host's address")
        port = address.port or host.allocate_port()
        key = (address.transport, port)
        if key in host.listeners:
            raise OSError(errno.EADDRINUSE, f"{address.transport} port {port} is in use")
        async with trio.open_nursery() as nursery:
            listener = _Listener(host, address.transport, port, handler, nursery, host.incarnation)
            host.listeners[key] = listener
            try:
                task_status.started(StreamAddress(address.transport, host.address, port))
                await trio.sleep_forever()
            finally:
                if host.listeners.get(key) is listener:
                    del host.listeners[key]
                nursery.cancel_scope.cancel()

    # -- datagrams ------------------------------------------------------------------------

    async def open_datagram_endpoint(self, address: HostPort) -> VirtualDatagramEndpoint:
        await trio.lowlevel.checkpoint()
        host = self.host
        if not host.alive:
            raise OSError(errno.ENETDOWN, "this host is down")
        if address[0] not in (host.address, "0.0.0.0"):
            raise OSError(errno.EADDRNOTAVAIL, f"{address[0]} is not this host's address")
        port = address[1] or host.allocate_port()
        if port in host.endpoints:
            raise OSError(errno.EADDRINUSE, f"udp port {port} is in use")
        endpoint = VirtualDatagramEndpoint(host, port)
        host.endpoints[port] = endpoint
        return endpoint


def _syn_arrival(
    argument: tuple[VirtualHost, int, VirtualHost, StreamAddress, int, Callable[[Any], None]],
) -> None:
    """A connection request reaches its target: accept, or refuse, or vanish."""
    client, client_port, server, address, latency, finish = argument
    world = server.world
    answer_at = world.now_us() + latency
    if not world.reachable(client, server):
        return  # lost in the partition: the dialler times out
    listener = server.listeners.get((address.transport, address.port))
    if not server.alive or listener is None:
        world.trace.record("refused", client.index, server.index, address.port)
        refusal = ConnectionRefusedError(errno.ECONNREFUSED, f"{address} refused the connection")
        world.schedule(answer_at, finish, refusal)
        return
    to_server = _Pipe(world, client, server)
    to_client = _Pipe(world, server, client)
    server_stream = VirtualStream(server, to_client, to_server)
    client_incarnation = client.incarnation

    def complete(_: None) -> None:
        if client.incarnation != client_incarnation or not client.alive:
            server_stream._close()
            return
        finish(VirtualStream(client, to_server, to_client))

    try:
        listener.nursery.start_soon(
            _run_handler, listener, server_stream, (client.address, client_port)
        )
    except RuntimeError:  # the listener is shutting down
        server_stream._close()
        world.schedule(answer_at, finish, ConnectionRefusedError(errno.ECONNREFUSED, "closed"))
        return
    world.trace.record("accept", client.index, server.index, address.port)
    world.schedule(answer_at, complete, None)


async def _run_handler(listener: _Listener, stream: VirtualStream, remote: HostPort) -> None:
    try:
        await listener.handler(stream, remote)
    except Exception:
        log.exception("stream handler on %s:%d failed", listener.host.address, listener.port)
    finally:
        stream._close()
