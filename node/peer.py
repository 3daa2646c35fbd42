"""The Trio shell around one `wire.connection.SecureConnection`.

`PeerConnection` owns a stream and the sans-IO core. It performs the handshake under a
deadline, then runs three tasks in its own nursery: a reader that feeds received bytes to the
core and dispatches events, a writer that sends whatever the core queued (coalescing many
frames into one `send_all`), and a keepalive ticker. Whatever goes wrong with the peer (a
`ProtocolError`, a broken stream, a timeout) ends this connection with a logged reason and
never escapes to the node.

Backpressure: senders append frames to the core's outgoing buffer and wait while more than
`HIGH_WATER_BYTES` are queued, so a slow peer slows its senders instead of growing memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from node.network import Network
from wire.connection import (
    ConnectionClosed,
    Event,
    ExtensionMessage,
    HandshakeCompleted,
    HelloReceived,
    PongReceived,
    SecureConnection,
    State,
)
from wire.errors import ProtocolError
from wire.identity import RemoteIdentity
from wire.messages import Hello

log = logging.getLogger("kinswarm.peer")

HANDSHAKE_TIMEOUT_SECONDS: Final = 10.0
KEEPALIVE_INTERVAL_SECONDS: Final = 30.0
MAX_PINGS_AWAITED: Final = 4
RECEIVE_CHUNK_BYTES: Final = 256 * 1024
HIGH_WATER_BYTES: Final = 1024 * 1024
SEND_TIMEOUT_SECONDS: Final = 60.0
"""A peer that accepts nothing for this long is gone, whatever TCP thinks (noticed at the
next keepalive tick: within SEND_TIMEOUT_SECONDS + KEEPALIVE_INTERVAL_SECONDS)."""
CLOSE_TIMEOUT_SECONDS: Final = 1.0

ExtensionHandler = Callable[["PeerConnection", memoryview], Awaitable[None]]


class PeerGone(Exception):
    """The connection ended; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PeerConnection:
    """An authenticated, encrypted connection to one remote node."""

    def __init__(
        self,
        *,
        network: Network,
        stream: trio.abc.Stream,
        core: SecureConnection,
        remote_address: str,
    ) -> None:
        self._network = network
        self._stream = stream
        self.core = core
        self.remote_address = remote_address
        self.remote: RemoteIdentity | None = None
        self.hello: Hello | None = None
        self.connected_at: float | None = None
        self.close_reason: str | None = None
        self.capability_key_index: int | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.round_trip_seconds: float | None = None
        self._ping_sent_at: dict[int, float] = {}
        self._sending_since: float | None = None
        """When the send under way began (None: no send): `tick` gives up on a peer stuck in
        one for SEND_TIMEOUT_SECONDS. A watchdog, not a deadline per send: a cancel scope
        around each of a flash crowd's millions of sends was ~9 % of its simulation."""
        self._handlers: dict[str, ExtensionHandler] = {}
        self._writer_wakeup = trio.Event()
        self._send_lock = trio.StrictFIFOLock()
        self._drained = trio.Event()
        self._open = trio.Event()
        self._closed = trio.Event()
        self._handshake_done = trio.Event()

    @property
    def is_initiator(self) -> bool:
        return self.core.is_initiator

    @property
    def node_id(self) -> bytes:
        if self.remote is None:
            raise RuntimeError("the handshake has not completed")
        return self.remote.node_id

    @property
    def is_open(self) -> bool:
        return self.core.state is State.OPEN and not self._closed.is_set()

    def set_extension_handler(self, name: str, handler: ExtensionHandler) -> None:
        self._handlers[name] = handler

    # -- running ----------------------------------------------------------------------------

    async def handshake(self) -> RemoteIdentity:
        """Run the handshake (and Hello exchange) under a deadline. Raises PeerGone."""
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_SECONDS):
                await self._flush()
                while self.core.state is not State.OPEN:
                    await self._receive_once(until_open=True)
        except trio.TooSlowError:
            await self._abort("handshake timed out")
        assert self.remote is not None
        self.connected_at = self._network.now()
        # Measure the round trip now, not at the first quiet keepalive: the request pipeline,
        # the reveal window and the metadata patience are sized from it (before, nothing
        # recorded a Ping's time, and every connection ran on their defaults).
        self._awaiting_pong(self.core.ping(), self.connected_at)
        return self.remote

    async def run(
        self,
        *,
        own_keepalive: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> str:
        """Serve the open connection until it ends and return why. Nothing the peer does
        makes this raise; cancelling it closes the connection.

        With `own_keepalive=False` the owner calls `tick()` every KEEPALIVE_INTERVAL_SECONDS
        instead (a Node ticks all its peers from one task rather than one task each)."""
        reason: str | None = None
        try:
            async with trio.open_nursery() as nursery:

                async def until_gone(part: Callable[[], Awaitable[None]]) -> None:
                    nonlocal reason
                    try:
                        await part()
                    except PeerGone as gone:
                        reason = reason or gone.reason
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_gone, self._reader)
                nursery.start_soon(until_gone, self._writer)
                if own_keepalive:
                    nursery.start_soon(until_gone, self._keepalive)
                task_status.started()
        finally:
            await self._close_stream()
        return reason or self.close_reason or "closed"

    async def send_extension(self, name: str, *payloads: bytes) -> None:
        """Queue extension messages, in order and all at once (nothing else sent on this
        connection comes between them); waits while the peer is slow. Raises PeerGone."""
        if not self.is_open:
            raise PeerGone(self.close_reason or "connection is not open")
        for payload in payloads:
            self.core.send_extension(name, payload)
        self._writer_wakeup.set()
        while self.core.pending_bytes > HIGH_WATER_BYTES and not self._closed.is_set():
            await self._drained.wait()
        if self._closed.is_set():
            raise PeerGone(self.close_reason or "closed")

    async def ping(self) -> None:
        """Send a Ping; its Pong updates `round_trip_seconds`."""
        self._awaiting_pong(self.core.ping(), self._network.now())

    async def aclose(self, reason: str) -> None:
        """Say goodbye and close, within CLOSE_TIMEOUT_SECONDS. Never raises: if the goodbye
        cannot be delivered (the peer is already gone), the connection is closed anyway."""
        if self._closed.is_set():
            return
        self.core.close(reason)
        self.close_reason = self.close_reason or reason
        with trio.move_on_after(CLOSE_TIMEOUT_SECONDS), contextlib.suppress(PeerGone):
            await self._flush()
        await self._close_stream()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # -- internals --------------------------------------------------------------------------

    async def _abort(self, reason: str) -> None:
        """Close after an error (sending a Goodbye if the channel is up) and raise PeerGone."""
        self.close_reason = self.close_reason or reason
        self.core.close(reason)
        with trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
            await self._flush()
        await self._close_stream()
        raise PeerGone(reason)

    async def _close_stream(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._drained.set()
            self._writer_wakeup.set()
            with trio.move_on_after(CLOSE_TIMEOUT_SECONDS) as scope:
                scope.shield = True
                await self._stream.aclose()

    async def _flush(self) -> None:
        """Send what the core queued. The reader (pongs), the writer and aclose all flush:
        the lock keeps their sends from overlapping, and taking the data inside it keeps the
        encrypted frames in the order their nonces were assigned."""
        async with self._send_lock:
            await self._send_queued()

    async def _send_queued(self) -> None:
        data = self.core.data_to_send()
        if data:
            self._sending_since = self._network.now()
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.close_reason = self.close_reason or f"send failed: {exc}"
                await self._close_stream()
                raise PeerGone(self.close_reason) from exc
            finally:
                self._sending_since = None
            self.bytes_sent += len(data)

    async def _receive_once(self, *, until_open: bool = False) -> None:
        """Read once and dispatch what the core decoded. With `until_open` (the handshake),
        stop after the Hello: messages that came in the same read wait in the core until
        `run()`, so no extension handler sees a peer its owner has not been told about."""
        try:
            data = await self._stream.receive_some(RECEIVE_CHUNK_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            reason = self.close_reason or f"connection lost: {exc or type(exc).__name__}"
            await self._close_stream()
            raise PeerGone(reason) from exc
        self.bytes_received += len(data)
        try:
            self.core.receive_data(data)
        except ProtocolError as exc:
            log.info("closing connection to %s: %s", self._describe(), exc)
            await self._abort(str(exc))
        while (event := self.core.next_event()) is not None:
            await self._dispatch(event)
            if until_open and isinstance(event, HelloReceived):
                break
        await self._flush()

    async def _dispatch_pending(self) -> None:
        while (event := self.core.next_event()) is not None:
            await self._dispatch(event)
        await self._flush()

    async def _dispatch(self, event: Event) -> None:
        if isinstance(event, HandshakeCompleted):
            self.remote = event.remote
            self.capability_key_index = event.capability_key_index
        elif isinstance(event, HelloReceived):
            self.hello = event.hello
        elif isinstance(event, ExtensionMessage):
            self._network.trace("message", event.name, size=len(event.payload))
            handler = self._handlers.get(event.name)
            if handler is not None:
                try:
                    await handler(self, event.payload)
                except PeerGone:
                    raise
                except ProtocolError as exc:
                    log.info("closing connection to %s: %s", self._describe(), exc)
                    await self._abort(str(exc))
                except Exception:  # a bug in a handler: log it, drop this peer, keep the node
                    log.exception(
                        "extension %s failed on a message from %s", event.name, self._describe()
                    )
                    await self._abort(f"internal error handling {event.name}")
        elif isinstance(event, PongReceived):
            sent_at = self._ping_sent_at.pop(event.nonce, None)
            if sent_at is not None:
                self.round_trip_seconds = self._network.now() - sent_at
        elif isinstance(event, ConnectionClosed):
            self.close_reason = f"peer said goodbye: {event.reason}"
            await self._close_stream()
            raise PeerGone(self.close_reason)

    async def _reader(self) -> None:
        await self._dispatch_pending()  # what arrived with the handshake's last read
        while True:
            await self._receive_once()

    async def _writer(self) -> None:
        while True:
            await self._writer_wakeup.wait()
            self._writer_wakeup = trio.Event()
            await self._flush()
            self._drained.set()
            self._drained = trio.Event()

    def tick(self) -> str | None:
        """One keepalive interval passed: ping if we have been quiet. Returns a reason if the
        peer has been silent too long, or has not taken what we send for SEND_TIMEOUT_SECONDS
        (the caller should then `aclose` it: closing the stream ends the stuck send)."""
        since = self._sending_since
        if since is not None and self._network.now() - since >= SEND_TIMEOUT_SECONDS:
            return "peer stopped reading"
        try:
            nonce = self.core.tick()
            if nonce is None and self.core.state is State.OPEN:
                # A fresh round trip each interval: the core's keepalive Ping if it sent
                # one, else one of ours (a busy link's round trip moves with its queue).
                nonce = self.core.ping()
        except ProtocolError as exc:
            return str(exc)
        if nonce is not None:
            self._awaiting_pong(nonce, self._network.now())
        return None

    def _awaiting_pong(self, nonce: int, sent_at: float) -> None:
        """Remember when Ping `nonce` went; a peer that never answers keeps only the last
        MAX_PINGS_AWAITED in memory."""
        self._ping_sent_at[nonce] = sent_at
        while len(self._ping_sent_at) > MAX_PINGS_AWAITED:
            del self._ping_sent_at[next(iter(self._ping_sent_at))]
        self._writer_wakeup.set()

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(KEEPALIVE_INTERVAL_SECONDS)
            reason = self.tick()
            if reason is not None:
                await self._abort(reason)

    def _describe(self) -> str:
        if self.remote is not None:
            return f"{self.remote.node_id.hex()[:16]}… at {self.remote_address}"
        return self.remote_address
