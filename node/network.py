"""The Network seam: every byte and every tick the node sees passes through one object.

The node never calls `trio.open_tcp_stream`, `time.time()` or `random` directly. It is handed a
`Network` at construction and asks it to dial, listen, bind a datagram socket, tell the time,
draw random numbers and run blocking work. `node.realnet.TrioNetwork` implements it with real
sockets; the simulator implements it with virtual hosts under a mock clock.

Lifecycle: an implementation may need background tasks of its own (a WebSocket client's frame
reader, the simulator's delivery loop), so a Network is an async context manager and is entered
before use: `async with TrioNetwork() as network: ...`. Because both obey
the same contract (checked by one conformance suite in the tests), the node code that runs in a
simulation is the code that runs in production.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar

import attrs
import trio

T = TypeVar("T")

StreamTransport = Literal["tcp", "ws"]
HostPort = tuple[str, int]
"""A numeric host and a port, as sockets report them (IPv6 hosts without brackets)."""

_SCHEMES: dict[str, StreamTransport] = {"tcp": "tcp", "ws": "ws"}


def _check_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return port


@attrs.frozen
class StreamAddress:
    """Where a stream listener is, or where to dial: a transport, a host and a port."""

    transport: StreamTransport
    host: str
    port: int = attrs.field(converter=_check_port)

    @classmethod
    def parse(cls, text: str, *, default_transport: StreamTransport = "tcp") -> StreamAddress:
        """Parse `tcp://HOST:PORT`, `ws://HOST:PORT` or plain `HOST:PORT`.

        IPv6 hosts are written in brackets: `[::1]:7420`. Raises ValueError with the reason.
        """
        transport = default_transport
        rest = text.strip()
        if "://" in rest:
            scheme, rest = rest.split("://", 1)
            if scheme not in _SCHEMES:
                raise ValueError(f"unknown transport {scheme!r} in {text!r} (use tcp or ws)")
            transport = _SCHEMES[scheme]
        rest = rest.rstrip("/")
        if rest.startswith("["):
            host, bracket, port_text = rest[1:].partition("]")
            if not bracket or not port_text.startswith(":"):
                raise ValueError(f"cannot parse address {text!r}: expected [IPv6]:PORT")
            port_text = port_text[1:]
        else:
            host, colon, port_text = rest.rpartition(":")
            if not colon or ":" in host:
                raise ValueError(f"cannot parse address {text!r}: expected HOST:PORT")
        if not host:
            raise ValueError(f"address {text!r} has no host")
        if not port_text.isdigit():
            raise ValueError(f"address {text!r} has no numeric port")
        return cls(transport, host, int(port_text))

    @property
    def host_port(self) -> HostPort:
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


StreamHandler = Callable[[trio.abc.Stream, HostPort], Awaitable[None]]
"""Called for each accepted stream with the remote's (host, port). The listener closes the
stream after the handler returns or raises."""


class DatagramEndpoint(Protocol):
    """A bound datagram socket (UDP on real networks)."""

    @property
    def local_address(self) -> HostPort: ...

    async def send(self, data: bytes, destination: HostPort) -> None:
        """Send one datagram. Never blocks for long and never raises for network trouble: the
        datagram is lost, as on a congested link. After `aclose`, raises ClosedResourceError."""

    async def receive(self) -> tuple[bytes, HostPort]:
        """Wait for the next datagram and its source."""

    async def aclose(self) -> None: ...


class Network(Protocol):
    """Everything the node needs from the outside world. See the module docstring."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    @property
    def random(self) -> random.Random:
        """The node's generator for non-secret choices (peer picks, jitter, tie-breaks)."""

    def crypto_random(self, size: int) -> bytes:
        """Bytes for keys and nonces: os.urandom on real networks, seeded in simulation."""

    def now(self) -> float:
        """Monotonic seconds (Trio's clock, so MockClock drives it in simulation)."""

    def trace(self, event: str, *fields: int | str, size: int = 0) -> None:
        """Record a protocol event (a message by type and size) in the simulation's trace,
        whose digest proves a run reproducible. Real networks ignore it."""

    async def open_stream(self, address: StreamAddress) -> trio.abc.Stream:
        """Dial `address`, within a deadline of the implementation's choosing. Raises OSError
        if it cannot be reached (a timeout is `TimeoutError`, also an OSError)."""

    async def serve_streams(
        self,
        address: StreamAddress,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[StreamAddress] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on `address` (a numeric host), report the bound address (the real port if 0
        was asked) through `task_status.started`, and run `handler` for each accepted stream
        until cancelled. A handler that raises is logged; the listener keeps serving. Failing
        to bind raises OSError before `started`."""

    async def open_datagram_endpoint(self, address: HostPort) -> DatagramEndpoint:
        """Bind a datagram socket on `address` (port 0 picks one)."""

    async def run_blocking(self, function: Callable[..., T], *args: Any) -> T:
        """Run CPU- or disk-bound work (hashing, SQLite): in a worker thread on real networks,
        as a plain call in the simulator (a thread would let the mock clock jump)."""
