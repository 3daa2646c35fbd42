"""TrioNetwork on loopback sockets: the Network conformance suite, then what only real sockets
(and the WebSocket adapter) have to show."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio_websocket

from node import realnet
from node.network import HostPort, StreamAddress, StreamHandler, StreamTransport
from node.realnet import WS_MAX_MESSAGE_BYTES, WS_PATH, TrioNetwork
from tests.node.network_conformance import (
    OTHER_CHECKS,
    STREAM_CHECKS,
    NetworkPair,
    OtherCheck,
    StreamCheck,
    assert_echoes,
    echo,
    receive_exactly,
    receive_until_eof,
    serving,
)


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


LOOPBACK_HOSTS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param(
        "::1",
        id="ipv6",
        marks=pytest.mark.skipif(
            not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)"
        ),
    ),
]


@pytest.fixture(params=LOOPBACK_HOSTS)
def host(request: pytest.FixtureRequest) -> str:
    value = request.param
    assert isinstance(value, str)
    return value


@pytest.fixture
async def pair(host: str) -> AsyncIterator[NetworkPair]:
    async with TrioNetwork(seed=1) as a, TrioNetwork(seed=2) as b:
        yield NetworkPair(a, host, b, host)


@pytest.fixture
async def network() -> AsyncIterator[TrioNetwork]:
    async with TrioNetwork(seed=3) as running:
        yield running


class _Outcome:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: bytes | BaseException | None = None


def _first_receive_recorder() -> tuple[_Outcome, StreamHandler]:
    """A handler that records what its first receive_some returned or raised."""
    outcome = _Outcome()

    async def receive_once(stream: trio.abc.Stream, remote: HostPort) -> None:
        try:
            outcome.result = bytes(await stream.receive_some())
        except trio.BrokenResourceError as exc:
            outcome.result = exc
        outcome.done.set()

    return outcome, receive_once


@asynccontextmanager
async def plain_ws_client(
    host: str, port: int, *, path: str = WS_PATH
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio_websocket client whose TCP stream we own.

    `trio_websocket.open_websocket` leaks its socket when the server closes first or rejects the
    upgrade (its `aclose` returns early and never closes the TCP stream), which some tests here
    provoke on purpose.
    """
    tcp = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as nursery:
            connection = await trio_websocket.wrap_client_stream(
                nursery, tcp, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", path
            )
            try:
                yield connection
            finally:
                with trio.move_on_after(2):
                    await connection.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(tcp)


# ---- the conformance suite ----


@pytest.mark.parametrize("transport", ["tcp", "ws"])
@pytest.mark.parametrize("check", STREAM_CHECKS, ids=lambda check: check.__name__[6:])
async def test_stream_conformance(
    pair: NetworkPair, transport: StreamTransport, check: StreamCheck
) -> None:
    await check(pair, transport)


@pytest.mark.parametrize("check", OTHER_CHECKS, ids=lambda check: check.__name__[6:])
async def test_conformance(pair: NetworkPair, check: OtherCheck) -> None:
    await check(pair)


# ---- the real network only ----


def test_seed_makes_random_reproducible() -> None:
    first, second = TrioNetwork(seed=42), TrioNetwork(seed=42)
    assert [first.random.random() for _ in range(5)] == [second.random.random() for _ in range(5)]
    assert TrioNetwork().random.random() != TrioNetwork().random.random()


async def test_tcp_nodelay_on_both_ends(network: TrioNetwork, host: str) -> None:
    accepted_nodelay: list[int] = []

    async def handler(stream: trio.abc.Stream, remote: HostPort) -> None:
        assert isinstance(stream, trio.SocketStream)
        accepted_nodelay.append(stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        await echo(stream, remote)

    with trio.fail_after(5):
        async with (
            serving(network, host, "tcp", handler) as address,
            await network.open_stream(address) as stream,
        ):
            assert isinstance(stream, trio.SocketStream)
            assert stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            await assert_echoes(stream, b"x")
    assert accepted_nodelay and accepted_nodelay[0]


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_handler_exception_is_logged(
    network: TrioNetwork, transport: StreamTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kinswarm.network")

    async def fail(stream: trio.abc.Stream, remote: HostPort) -> None:
        raise ValueError("deliberate handler bug")

    with trio.fail_after(5):
        async with (
            serving(network, "127.0.0.1", transport, fail) as address,
            await network.open_stream(address) as stream,
        ):
            assert await stream.receive_some() == b""
    failures = [
        record
        for record in caplog.records
        if record.name == "kinswarm.network" and record.exc_info is not None
    ]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], ValueError)


async def test_serving_a_taken_port_raises_oserror(network: TrioNetwork) -> None:
    with trio.fail_after(5):
        async with (
            serving(network, "127.0.0.1", "tcp", echo) as address,
            trio.open_nursery() as nursery,
        ):
            with pytest.raises(OSError):
                await nursery.start(network.serve_streams, address, echo)


async def test_dial_times_out_as_oserror() -> None:
    """A peer that accepts TCP but never answers the upgrade costs at most connect_timeout."""

    async def silent(stream: trio.abc.Stream, remote: HostPort) -> None:
        await trio.sleep_forever()

    async with TrioNetwork(connect_timeout=0.3) as impatient:
        with trio.fail_after(5):
            async with serving(impatient, "127.0.0.1", "tcp", silent) as address:
                ws_address = StreamAddress("ws", address.host, address.port)
                with pytest.raises(TimeoutError):
                    await impatient.open_stream(ws_address)


async def test_errors_leave_a_running_network_unwrapped() -> None:
    with pytest.raises(ValueError, match="from the block"):
        async with TrioNetwork():
            raise ValueError("from the block")
    # ...even when the block is being cancelled as it raises.
    with trio.CancelScope() as outer, pytest.raises(ValueError, match="while cancelled"):
        async with TrioNetwork():
            outer.cancel()
            raise ValueError("while cancelled")


def test_connect_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        TrioNetwork(connect_timeout=0)


async def test_ws_dial_needs_a_running_network() -> None:
    with pytest.raises(RuntimeError, match="async with TrioNetwork"):
        await TrioNetwork().open_stream(StreamAddress("ws", "127.0.0.1", 9))


async def test_ws_streams_break_when_the_network_closes(host: str) -> None:
    async with TrioNetwork() as listener_network:
        with trio.fail_after(5):
            async with serving(listener_network, host, "ws", echo) as address:
                async with TrioNetwork() as dialer:
                    stream = await dialer.open_stream(address)
                    await assert_echoes(stream, b"alive")
                with pytest.raises(trio.BrokenResourceError):
                    await stream.receive_some()
                await stream.aclose()


async def test_ws_interop_with_a_plain_trio_websocket_client(
    network: TrioNetwork, host: str
) -> None:
    with trio.fail_after(5):
        async with (
            serving(network, host, "ws", echo) as address,
            plain_ws_client(host, address.port) as client,
        ):
            await client.send_message(b"binary hello")
            assert await client.get_message() == b"binary hello"


async def test_ws_interop_with_a_plain_trio_websocket_server(
    network: TrioNetwork, host: str
) -> None:
    paths: list[str] = []

    async def echo_messages(request: trio_websocket.WebSocketRequest) -> None:
        paths.append(request.path)
        connection = await request.accept()
        while True:
            try:
                await connection.send_message(await connection.get_message())
            except trio_websocket.ConnectionClosed:
                return

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, echo_messages, host, 0, None
            )
            address = StreamAddress("ws", host, server.port)
            async with await network.open_stream(address) as stream:
                await assert_echoes(stream, b"hello, plain server")
            nursery.cancel_scope.cancel()
    assert paths == [WS_PATH]


async def test_ws_upgrade_request_names_the_host_properly(network: TrioNetwork, host: str) -> None:
    """The Host header brackets IPv6 literals (RFC 7230), unlike trio_websocket's own dialer."""
    requests: list[bytes] = []

    async def refuse_upgrade(stream: trio.abc.Stream, remote: HostPort) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some()
        requests.append(request)
        await stream.send_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    with trio.fail_after(5):
        async with serving(network, host, "tcp", refuse_upgrade) as address:
            with pytest.raises(ConnectionRefusedError, match="HTTP 403"):
                await network.open_stream(StreamAddress("ws", host, address.port))
    bracketed = f"[{host}]" if ":" in host else host
    request_line, *header_lines = requests[0].decode("ascii").split("\r\n")
    assert request_line == f"GET {WS_PATH} HTTP/1.1"
    assert f"host: {bracketed}:{address.port}" in [line.lower() for line in header_lines]


async def test_ws_listener_drops_silent_and_garbage_connections(
    network: TrioNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither a client that never sends its upgrade nor one that sends garbage holds the
    listener up: both are dropped, and the next real client is served."""
    monkeypatch.setattr(realnet, "WS_HANDSHAKE_TIMEOUT_S", 0.2)
    with trio.fail_after(5):
        async with serving(network, "127.0.0.1", "ws", echo) as address:
            async with await trio.open_tcp_stream("127.0.0.1", address.port) as silent:
                assert await silent.receive_some() == b""  # dropped after the timeout
            async with await trio.open_tcp_stream("127.0.0.1", address.port) as garbage:
                await garbage.send_all(b"\x00\x01 this is not HTTP\r\n\r\n")
                response = await receive_until_eof(garbage)
                assert response.startswith(b"HTTP/1.1 400")
            async with await network.open_stream(address) as stream:
                await assert_echoes(stream, b"served after the bad ones")


async def test_ws_wrong_path_is_rejected(network: TrioNetwork) -> None:
    with trio.fail_after(5):
        async with serving(network, "127.0.0.1", "ws", echo) as address:
            rejected_with_404 = pytest.RaisesExc(
                trio_websocket.ConnectionRejected, check=lambda exc: exc.status_code == 404
            )
            with pytest.RaisesGroup(rejected_with_404, flatten_subgroups=True):
                async with plain_ws_client("127.0.0.1", address.port, path="/elsewhere"):
                    pass


async def test_ws_rejected_dial_raises_connection_refused(network: TrioNetwork) -> None:
    async def refuse(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(403)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, refuse, "127.0.0.1", 0, None
            )
            with pytest.raises(ConnectionRefusedError, match="HTTP 403"):
                await network.open_stream(StreamAddress("ws", "127.0.0.1", server.port))
            nursery.cancel_scope.cancel()


async def test_ws_text_message_breaks_the_stream(network: TrioNetwork) -> None:
    outcome, receive_once = _first_receive_recorder()

    with trio.fail_after(5):
        async with (
            serving(network, "127.0.0.1", "ws", receive_once) as address,
            plain_ws_client("127.0.0.1", address.port) as client,
        ):
            await client.send_message("text is not spoken here")
            await outcome.done.wait()
    assert isinstance(outcome.result, trio.BrokenResourceError)
    assert "text" in str(outcome.result)


async def test_ws_oversized_message_breaks_the_stream(network: TrioNetwork) -> None:
    outcome, receive_once = _first_receive_recorder()

    with trio.fail_after(5):
        async with (
            serving(network, "127.0.0.1", "ws", receive_once) as address,
            plain_ws_client("127.0.0.1", address.port) as client,
        ):
            await client.send_message(bytes(WS_MAX_MESSAGE_BYTES + 1))
            await outcome.done.wait()
    assert isinstance(outcome.result, trio.BrokenResourceError)


async def test_ws_large_send_is_split_into_messages(network: TrioNetwork) -> None:
    size = WS_MAX_MESSAGE_BYTES + 12345
    message_sizes: list[int] = []

    async def count_messages(request: trio_websocket.WebSocketRequest) -> None:
        connection = await request.accept()
        while sum(message_sizes) < size:
            message = await connection.get_message()
            message_sizes.append(len(message))
        await connection.send_message(b"done")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    count_messages,
                    "127.0.0.1",
                    0,
                    None,
                    max_message_size=WS_MAX_MESSAGE_BYTES,
                )
            )
            address = StreamAddress("ws", "127.0.0.1", server.port)
            async with await network.open_stream(address) as stream:
                await stream.send_all(bytes(size))
                assert await receive_exactly(stream, 4) == b"done"
            nursery.cancel_scope.cancel()
    assert message_sizes == [WS_MAX_MESSAGE_BYTES, 12345]


async def test_ws_abrupt_close_is_broken_not_eof(network: TrioNetwork, host: str) -> None:
    outcome, receive_once = _first_receive_recorder()

    with trio.fail_after(5):
        async with serving(network, host, "ws", receive_once) as address:
            stream = await network.open_stream(address)
            await trio.aclose_forcefully(stream)  # TCP closed without a close frame
            await outcome.done.wait()
    assert isinstance(outcome.result, trio.BrokenResourceError)


async def test_datagram_send_errors_are_counted_not_raised(network: TrioNetwork) -> None:
    endpoint = await network.open_datagram_endpoint(("127.0.0.1", 0))
    try:
        await endpoint.send(b"nowhere", ("::1", 9))  # an IPv6 destination from an IPv4 socket
        assert endpoint.send_failures == 1
    finally:
        await endpoint.aclose()
