"""The real network behind the Network seam: TCP, WebSocket and UDP sockets on Trio.

`TrioNetwork` is the production implementation of `node.network.Network`; the simulator is the
other one, and `tests/node/network_conformance.py` holds both to the same contract. What this
module adds to the raw libraries is the contract itself:

- every dial is bounded (`connect_timeout`), every accepted stream is closed after its handler,
  and a handler that raises is logged without taking its listener down;
- a WebSocket connection is presented as a plain `trio.abc.Stream` (`WebSocketStream`), so the
  code above the seam cannot tell WebSocket peers from TCP peers;
- datagram sends never block for long and never raise for network trouble (UDP is lossy anyway;
  the DHT above it already copes with loss).

Lifecycle: trio_websocket runs a reader task per connection (it answers pings and close frames
without waiting for the application to read), and a task needs a nursery. A listener has one;
a dial does not, since `open_stream` returns a bare stream. So a `TrioNetwork` that dials `ws://`
addresses must be entered first: `async with TrioNetwork() as network: ...`. Its nursery holds
only the readers of dialed WebSocket connections; leaving the block ends them.

This module must never: keep module-level state, read the wall clock, buffer without a bound,
or let an error from one peer escape into a listener or into the node.
"""

from __future__ import annotations

import logging
import operator
import os
import random
import socket
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, final

import trio
import trio_websocket

from node.network import HostPort, StreamAddress, StreamHandler, StreamTransport

if TYPE_CHECKING:
    from node.network import DatagramEndpoint, Network

T = TypeVar("T")

logger = logging.getLogger("kinswarm.network")

WS_PATH: Final = "/kinswarm"
"""The HTTP path of the WebSocket upgrade. Anything else is rejected with 404, so a kinswarm
listener can share a port with, or sit behind, an ordinary web server."""

WS_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
"""Largest WebSocket message we accept (trio_websocket closes with 1009 above it). Bigger
`send_all` calls are split, so this bounds memory per message, never what a stream can carry."""

WS_RECEIVE_BUFFER_BYTES: Final = 64 * 1024
"""How much trio_websocket reads from TCP at once. Its default (4 KiB) costs a wakeup per 4 KiB;
64 KiB matches our write size (1 MiB reads are slower again: they allocate more)."""

WS_MESSAGE_QUEUE_SIZE: Final = 1
"""Messages trio_websocket may queue ahead of `receive_some`. One keeps backpressure end to end:
an application that stops reading stops the TCP window, with at most (1 + 1) * 4 MiB held per
connection. The price: while the queue is full the reader answers no ping or close frame, so a
peer's `aclose` may wait out `WS_CLOSE_TIMEOUT_S` before it drops the connection."""

WS_HANDSHAKE_TIMEOUT_S: Final = 10.0
"""How long an accepted TCP connection may take to send its upgrade request before we drop it
(trio_websocket's server waits 60 s by default, which lets idle sockets pile up)."""

WS_CLOSE_TIMEOUT_S: Final = 5.0
"""How long `aclose` waits for the peer's closing frame before dropping the TCP connection."""

CONNECT_TIMEOUT_S: Final = 10.0
"""Default bound on one whole dial: TCP connect plus, for ws, the upgrade handshake. Without it a
dial to a black-holed address waits for the kernel's SYN retries (about two minutes)."""

DATAGRAM_MAX_BYTES: Final = 65535
"""Receive buffer for one datagram: more than the largest UDP payload (65,507 bytes over IPv4),
so no datagram is ever truncated."""

DATAGRAM_SEND_TIMEOUT_S: Final = 0.1
"""A UDP send waits at most this long for socket buffer space; after that the datagram is
dropped and counted, as a router would drop it."""

_CLEAN_CLOSE_CODES: Final = frozenset({1000, 1001})
"""WebSocket close codes that mean end-of-stream: normal closure and "going away" (what browsers
send when a page closes). Every other code, and a TCP drop (1006), means the stream broke."""


def _host_port(sockaddr: Any) -> HostPort:
    """(host, port) from a socket address; IPv6 addresses carry flow info and scope id too."""
    return (str(sockaddr[0]), int(sockaddr[1]))


def _set_nodelay(stream: trio.SocketStream) -> None:
    """Disable Nagle: our frames are written whole, so waiting to coalesce only adds latency.

    Trio already does this for every `SocketStream`; we set it again so the property is ours and
    checked by our tests, not an implementation detail we happen to inherit.
    """
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)


def _ws_host_header(host: str, port: int) -> str:
    """The Host header for the upgrade request; IPv6 literals need brackets (RFC 7230 5.4).

    trio_websocket's own `connect_websocket` omits them, which is one reason we dial the TCP
    stream ourselves and wrap it.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _innermost(error: BaseException) -> BaseException:
    """Unwrap exception groups that hold a single exception (Trio nurseries wrap everything)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


@final
class WebSocketStream(trio.abc.Stream):
    """A byte stream carried in binary WebSocket messages, for peers that can only speak HTTP.

    Everything above the Network seam wants a `trio.abc.Stream`, so message boundaries carry no
    meaning here: `send_all` sends its bytes as one binary message (split at
    `WS_MAX_MESSAGE_BYTES`; empty data sends nothing, because an empty message would look like
    nothing at all to the peer), and `receive_some` returns the rest of the current message
    before waiting for the next one.

    Errors follow Trio's stream conventions, so callers handle WebSocket peers and TCP peers the
    same way: a clean close by the peer (1000/1001) reads as EOF (`b""`), anything else (a TCP
    drop, an oversized message, a text message, which kinswarm never sends) as
    `trio.BrokenResourceError`; using the stream after our own `aclose` raises
    `trio.ClosedResourceError`; two tasks sending (or receiving) at once raise
    `trio.BusyResourceError`.

    `remote` is the peer's (host, port). `transport`, when given, is the TCP stream underneath:
    `aclose` force-closes it at the end, because trio_websocket's own `aclose` returns without
    closing TCP when the peer closed first (the socket would leak until the peer hangs up).
    """

    def __init__(
        self,
        connection: trio_websocket.WebSocketConnection,
        remote: HostPort,
        *,
        transport: trio.abc.AsyncResource | None = None,
    ) -> None:
        self._connection = connection
        self.remote: HostPort = remote
        self._transport = transport
        self._pending = b""
        self._pending_offset = 0
        self._closed = False
        self._broken_reason: str | None = None
        self._receiving = False
        self._sending = False
        self._receive_scope: trio.CancelScope | None = None
        self._send_scope: trio.CancelScope | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("this stream was closed")
            if not data:
                await trio.lowlevel.checkpoint()
                return
            for chunk in self._chunks(data):
                await self._send_message(chunk)
        finally:
            self._sending = False

    @staticmethod
    def _chunks(data: bytes | bytearray | memoryview) -> Sequence[bytes]:
        """The messages for `data`: itself if it fits (no copy), else slices of the maximum."""
        if isinstance(data, bytes) and len(data) <= WS_MAX_MESSAGE_BYTES:
            return (data,)
        view = memoryview(data).cast("B")
        return [
            bytes(view[start : start + WS_MAX_MESSAGE_BYTES])
            for start in range(0, len(view), WS_MAX_MESSAGE_BYTES)
        ]

    async def _send_message(self, message: bytes) -> None:
        # Our own scope lets `aclose` wake a blocked sender with ClosedResourceError, as Trio's
        # streams do, instead of leaving it to trio_websocket's internals.
        with trio.CancelScope() as scope:
            self._send_scope = scope
            try:
                await self._connection.send_message(message)
            except trio_websocket.ConnectionClosed as exc:
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed") from None
                raise trio.BrokenResourceError(f"WebSocket closed: {exc.reason}") from None
            finally:
                self._send_scope = None
        if scope.cancelled_caught:
            raise trio.ClosedResourceError("this stream was closed while sending")

    async def wait_send_all_might_not_block(self) -> None:
        # trio_websocket exposes no writability; returning at once is allowed ("might").
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("this stream was closed")
            await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("this stream was closed")
            if self._pending_offset < len(self._pending):
                # Every call is a checkpoint, even when the data is already here.
                await trio.lowlevel.checkpoint()
            else:
                message = await self._next_message()
                if not message:
                    return b""
                if max_bytes is None or len(message) <= max_bytes:
                    return message
                self._pending, self._pending_offset = message, 0
            return self._take(max_bytes)
        finally:
            self._receiving = False

    def _take(self, max_bytes: int | None) -> bytes:
        start = self._pending_offset
        end = len(self._pending)
        if max_bytes is not None:
            end = min(end, start + max_bytes)
        chunk = self._pending[start:end]
        if end == len(self._pending):
            self._pending, self._pending_offset = b"", 0
        else:
            self._pending_offset = end
        return chunk

    async def _next_message(self) -> bytes:
        """The next non-empty binary message; b"" on a clean close."""
        if self._broken_reason is not None:
            raise trio.BrokenResourceError(self._broken_reason)
        while True:
            with trio.CancelScope() as scope:
                self._receive_scope = scope
                try:
                    message = await self._connection.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    if self._closed:
                        raise trio.ClosedResourceError("this stream was closed") from None
                    if exc.reason is not None and exc.reason.code in _CLEAN_CLOSE_CODES:
                        # get_message raises without yielding; a receive is a checkpoint.
                        await trio.lowlevel.checkpoint()
                        return b""
                    raise trio.BrokenResourceError(
                        f"WebSocket closed abnormally: {exc.reason}"
                    ) from None
                finally:
                    self._receive_scope = None
            if scope.cancelled_caught:
                raise trio.ClosedResourceError("this stream was closed while receiving")
            if isinstance(message, str):
                self._broken_reason = "peer sent a text WebSocket message; kinswarm is binary only"
                raise trio.BrokenResourceError(self._broken_reason)
            if message:
                return message

    async def aclose(self) -> None:
        """Close gracefully (send a close frame, wait up to `WS_CLOSE_TIMEOUT_S` for the peer's),
        then drop the TCP connection. Idempotent; when cancelled it still closes, abruptly."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        for scope in (self._receive_scope, self._send_scope):
            if scope is not None:
                scope.cancel()
        try:
            with trio.move_on_after(WS_CLOSE_TIMEOUT_S):
                await self._connection.aclose()
            # trio_websocket returns without a checkpoint when the peer closed first.
            await trio.lowlevel.checkpoint()
        finally:
            if self._transport is not None:
                await trio.aclose_forcefully(self._transport)


@final
class TrioDatagramEndpoint:
    """A bound UDP socket (see `node.network.DatagramEndpoint`).

    `send` never raises for network trouble: an `OSError` (unreachable, no route, a datagram too
    big) or a send buffer that stays full for `DATAGRAM_SEND_TIMEOUT_S` drops the datagram and
    counts it in `send_failures`, because UDP is lossy anyway and the DHT retries. Destinations
    should be numeric: a host name is resolved in a worker thread on every send.
    """

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._socket = sock
        self._local_address = _host_port(sock.getsockname())
        self._closed = False
        self.send_failures = 0
        """Datagrams dropped at send time (errors and timeouts)."""

    @property
    def local_address(self) -> HostPort:
        return self._local_address

    async def send(self, data: bytes, destination: HostPort) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this datagram endpoint was closed")
        with trio.move_on_after(DATAGRAM_SEND_TIMEOUT_S) as scope:
            try:
                await self._socket.sendto(data, destination)
            except OSError as exc:
                self.send_failures += 1
                logger.debug("datagram to %s dropped: %s", destination, exc)
                return
        if scope.cancelled_caught:
            self.send_failures += 1
            logger.debug("datagram to %s dropped: send buffer full", destination)

    async def receive(self) -> tuple[bytes, HostPort]:
        if self._closed:
            raise trio.ClosedResourceError("this datagram endpoint was closed")
        while True:
            try:
                data, source = await self._socket.recvfrom(DATAGRAM_MAX_BYTES)
            except (ConnectionResetError, ConnectionRefusedError):
                # An ICMP error for an earlier send, reported on this call (Windows does this
                # for unconnected sockets). It says nothing about the next datagram.
                continue
            return data, _host_port(source)

    async def aclose(self) -> None:
        """Close the socket; a task blocked in `receive` wakes with ClosedResourceError."""
        self._closed = True
        self._socket.close()
        await trio.lowlevel.checkpoint()


@final
class TrioNetwork:
    """`node.network.Network` on real sockets. See the module docstring.

    `seed` seeds `random` (non-secret choices only: peer picks, jitter); None draws a fresh seed
    from `os.urandom`. `connect_timeout` bounds each dial. Enter it (`async with`) before
    dialing WebSocket addresses; everything else works either way.
    """

    def __init__(
        self, *, seed: int | None = None, connect_timeout: float = CONNECT_TIMEOUT_S
    ) -> None:
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, not {connect_timeout!r}")
        if seed is None:
            seed = int.from_bytes(os.urandom(32), "big")
        self._random = random.Random(seed)
        self._connect_timeout = connect_timeout
        self._nursery: trio.Nursery | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._exit_shield = trio.CancelScope()

    async def __aenter__(self) -> Self:
        if self._exit_stack is not None:
            raise RuntimeError("this TrioNetwork is already running")
        stack = AsyncExitStack()
        self._exit_shield = stack.enter_context(trio.CancelScope())
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._nursery is not None and self._exit_stack is not None
        # Connections still open belong to a node that is going away: end their readers.
        self._nursery.cancel_scope.cancel()
        stack, self._exit_stack, self._nursery = self._exit_stack, None, None
        # The block's own exception is not fed to the nursery, so it propagates as itself
        # rather than wrapped in an ExceptionGroup. The shield (a scope around the nursery)
        # keeps an outer cancellation from replacing it; the wait is short, since every task
        # inside was just cancelled and only force-closes a socket on the way out.
        self._exit_shield.shield = True
        await stack.aclose()

    @property
    def random(self) -> random.Random:
        return self._random

    def crypto_random(self, size: int) -> bytes:
        return os.urandom(size)

    def now(self) -> float:
        return trio.current_time()

    def trace(self, event: str, *fields: int | str, size: int = 0) -> None:
        """Only simulations keep a trace; on real sockets this costs one call."""

    async def run_blocking(self, function: Callable[..., T], *args: Any) -> T:
        # abandon_on_cancel=False: the work (a SQLite write, a hash) finishes even if we are
        # cancelled, so no thread keeps touching state the caller believes is released.
        return await trio.to_thread.run_sync(partial(function, *args), abandon_on_cancel=False)

    # ---- streams: dialing ----

    async def open_stream(self, address: StreamAddress) -> trio.abc.Stream:
        with trio.move_on_after(self._connect_timeout):
            if address.transport == "tcp":
                return await self._dial_tcp(address.host, address.port)
            return await self._dial_ws(address.host, address.port)
        raise TimeoutError(f"could not connect to {address} within {self._connect_timeout} s")

    async def _dial_tcp(self, host: str, port: int) -> trio.SocketStream:
        stream = await trio.open_tcp_stream(host, port)
        try:
            _set_nodelay(stream)
        except OSError:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def _dial_ws(self, host: str, port: int) -> WebSocketStream:
        if self._nursery is None:
            raise RuntimeError(
                "dialing a ws:// address needs a running TrioNetwork: use "
                "`async with TrioNetwork() as network:` (the connection's reader task lives there)"
            )
        tcp = await self._dial_tcp(host, port)
        try:
            stream: WebSocketStream = await self._nursery.start(
                self._run_ws_client, tcp, _ws_host_header(host, port), (host, port)
            )
        except BaseException:
            await trio.aclose_forcefully(tcp)  # also if the task never ran (nursery closing)
            raise
        return stream

    async def _run_ws_client(
        self,
        tcp: trio.SocketStream,
        host_header: str,
        remote: HostPort,
        *,
        task_status: trio.TaskStatus[WebSocketStream],
    ) -> None:
        """Own one client WebSocket connection for its whole life.

        Until `started`, this runs in the dialer's context, so the dialer's deadline bounds the
        handshake and a failure is raised to it (as an OSError). After that, it runs in the
        network's nursery and holds the connection's reader task; a crash of that task is logged
        here and never reaches the nursery.

        A server that accepts TCP and then hangs up without answering the upgrade is only noticed
        at the deadline: trio_websocket's handshake wait does not end when its reader sees EOF.
        """
        started = False
        try:
            async with trio.open_nursery() as connection_nursery:
                connection = await trio_websocket.wrap_client_stream(
                    connection_nursery,
                    tcp,
                    host_header,
                    WS_PATH,
                    message_queue_size=WS_MESSAGE_QUEUE_SIZE,
                    max_message_size=WS_MAX_MESSAGE_BYTES,
                    receive_buffer_size=WS_RECEIVE_BUFFER_BYTES,
                )
                started = True
                task_status.started(WebSocketStream(connection, remote, transport=tcp))
        except Exception as exc:
            if not started:
                error = self._ws_dial_error(exc, remote)
                if error is exc:
                    raise
                raise error from exc
            logger.warning("WebSocket connection to %s failed", remote, exc_info=True)
        finally:
            await trio.aclose_forcefully(tcp)

    @staticmethod
    def _ws_dial_error(error: Exception, remote: HostPort) -> BaseException:
        inner = _innermost(error)
        if isinstance(inner, trio_websocket.ConnectionRejected):
            return ConnectionRefusedError(
                f"{remote[0]}:{remote[1]} rejected the WebSocket upgrade (HTTP {inner.status_code})"
            )
        if isinstance(inner, OSError | trio_websocket.HandshakeError | trio.BrokenResourceError):
            return ConnectionError(
                f"WebSocket handshake with {remote[0]}:{remote[1]} failed: {inner!r}"
            )
        return error

    # ---- streams: listening ----

    async def serve_streams(
        self,
        address: StreamAddress,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[StreamAddress] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on `address` until cancelled; see `node.network.Network.serve_streams`.

        Each handler runs in the listener's handler nursery with the remote's (host, port);
        its stream is closed after it returns or raises; an exception is logged and the
        listener keeps accepting. Cancelling this task closes the listening sockets.
        """
        listeners = await trio.open_tcp_listeners(address.port, host=address.host)
        try:
            bound = _bound_address(address.transport, listeners)
            accept = self._accept_tcp if address.transport == "tcp" else self._accept_ws
            # The sockets are already listening: connections that arrive before the accept
            # loops start wait in the kernel's backlog.
            task_status.started(bound)
            await trio.serve_listeners(partial(accept, handler), listeners)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    @staticmethod
    def _accepted_remote(stream: trio.SocketStream) -> HostPort | None:
        """Set up an accepted TCP stream; its peer's (host, port), or None if it already left
        (then serve_listeners closes the stream as soon as we return)."""
        try:
            _set_nodelay(stream)
            return _host_port(stream.socket.getpeername())
        except OSError as exc:
            logger.debug("dropping an accepted connection: %s", exc)
            return None

    async def _accept_tcp(self, handler: StreamHandler, stream: trio.SocketStream) -> None:
        remote = self._accepted_remote(stream)
        if remote is not None:
            await _run_handler(handler, stream, remote)

    async def _accept_ws(self, handler: StreamHandler, stream: trio.SocketStream) -> None:
        """Upgrade an accepted TCP stream to WebSocket, then run `handler` on it.

        We accept TCP ourselves and wrap each stream with `trio_websocket.wrap_server_stream`
        instead of running `trio_websocket.WebSocketServer`, so that TCP and WebSocket share one
        accept path, the reader task lives in a nursery we guard (a crash there is logged here,
        not raised into the listener), and `WebSocketStream.aclose` can drop the TCP stream.
        """
        remote = self._accepted_remote(stream)
        if remote is None:
            return
        try:
            async with trio.open_nursery() as connection_nursery:
                await self._serve_ws_connection(connection_nursery, handler, stream, remote)
                connection_nursery.cancel_scope.cancel()  # the reader, if still running
        except Exception:
            logger.warning("WebSocket connection from %s:%s failed", *remote, exc_info=True)

    async def _serve_ws_connection(
        self,
        connection_nursery: trio.Nursery,
        handler: StreamHandler,
        stream: trio.SocketStream,
        remote: HostPort,
    ) -> None:
        request: trio_websocket.WebSocketRequest | None = None
        with trio.move_on_after(WS_HANDSHAKE_TIMEOUT_S):
            request = await trio_websocket.wrap_server_stream(
                connection_nursery,
                stream,
                message_queue_size=WS_MESSAGE_QUEUE_SIZE,
                max_message_size=WS_MAX_MESSAGE_BYTES,
                receive_buffer_size=WS_RECEIVE_BUFFER_BYTES,
            )
        if request is None:
            logger.debug("no WebSocket upgrade from %s:%s in time", *remote)
            return
        try:
            if request.path.partition("?")[0] != WS_PATH:
                await request.reject(404, body=b"not a kinswarm endpoint\n")
                return
            connection = await request.accept()
        except trio_websocket.ConnectionClosed as exc:
            logger.debug("WebSocket upgrade from %s:%s failed: %s", *remote, exc)
            return
        ws_stream = WebSocketStream(connection, remote, transport=stream)
        await _run_handler(handler, ws_stream, remote)

    # ---- datagrams ----

    async def open_datagram_endpoint(self, address: HostPort) -> TrioDatagramEndpoint:
        """Bind a UDP socket. IPv6 sockets are v6-only, as Trio's TCP listeners are, so a
        source address is never an IPv4-mapped `::ffff:a.b.c.d` the DHT would not recognise."""
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            await sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        return TrioDatagramEndpoint(sock)


def _bound_address(
    transport: StreamTransport, listeners: Sequence[trio.SocketListener]
) -> StreamAddress:
    """The address actually bound. Several listeners (a name resolving to several addresses)
    must agree on the port, or there is no single address to report."""
    socknames = [_host_port(listener.socket.getsockname()) for listener in listeners]
    ports = {port for _, port in socknames}
    if len(ports) != 1:
        raise ValueError(
            f"listening sockets {socknames} got different ports; "
            "ask for a numeric host or a fixed port"
        )
    host, port = socknames[0]
    return StreamAddress(transport, host, port)


async def _run_handler(handler: StreamHandler, stream: trio.abc.Stream, remote: HostPort) -> None:
    """Run one connection handler so that nothing it does can stop its listener."""
    try:
        await handler(stream, remote)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        # A peer hanging up mid-conversation is routine, not a bug worth a traceback.
        logger.info("connection from %s:%s lost: %r", remote[0], remote[1], exc)
    except Exception:
        logger.exception("handler for connection from %s:%s failed", remote[0], remote[1])
    finally:
        try:
            await stream.aclose()
        except Exception as exc:
            logger.debug("closing the stream from %s:%s failed: %r", remote[0], remote[1], exc)


if TYPE_CHECKING:
    # The structural checks mypy runs: these fail if the seam and this module drift apart.
    _network: type[Network] = TrioNetwork
    _endpoint: type[DatagramEndpoint] = TrioDatagramEndpoint
