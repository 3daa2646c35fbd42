"""The Network seam's conformance suite: what every `node.network.Network` must do.

The node runs unchanged on real sockets and in the simulator only if both implementations obey
one contract, so the contract is written here once, as checks, and each implementation runs all
of them (the idea of Trio's `check_two_way_stream`, which is one of the checks). This module is
not collected by pytest by itself; `test_realnet.py` runs it against `TrioNetwork`, and the
simulator's tests are meant to run it against the virtual network.

An implementation provides a `NetworkPair`: two networks (say, two hosts) that can reach each
other, with the numeric host each one is reachable at. Network `b` listens and `a` dials, so a
simulator can give them different addresses and check that sources are reported correctly. The
checks only use the `Network` interface, Trio's clock and Trio's testing helpers, so they run
under a `MockClock` as well as in real time; every check bounds itself with `CHECK_TIMEOUT_S`.

Stream checks take `(pair, transport)` and run once per transport (`STREAM_CHECKS`); the others
take `(pair)` (`OTHER_CHECKS`). An implementation's test module needs only a fixture and two
parametrized tests (see `test_realnet.py`):

    @pytest.fixture
    async def pair() -> AsyncIterator[NetworkPair]:
        async with MyNetwork(...) as a, MyNetwork(...) as b:
            yield NetworkPair(a, "10.0.0.1", b, "10.0.0.2")

    @pytest.mark.parametrize("transport", ["tcp", "ws"])
    @pytest.mark.parametrize("check", STREAM_CHECKS)
    async def test_stream_conformance(pair, transport, check):
        await check(pair, transport)
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

import attrs
import pytest
import trio
import trio.testing

from node.network import HostPort, Network, StreamAddress, StreamHandler, StreamTransport

CHECK_TIMEOUT_S: Final = 10.0
"""Upper bound on any one check: a hang fails the check instead of the whole test run."""

FAIL_FAST_S: Final = 2.0
"""How quickly a dial to a closed port must fail ("connection refused", not a timeout)."""

BULK_BLOCK_BYTES: Final = 64 * 1024
BULK_BLOCK_COUNT: Final = 64
"""The bulk check moves 64 x 64 KiB = 4 MiB each way, at the same time."""


@attrs.frozen
class NetworkPair:
    """Two networks that can reach each other: `a` dials, `b` listens.

    `a_host` and `b_host` are the numeric hosts they are reachable at; the real network uses the
    same loopback address for both, the simulator can use two virtual hosts.
    """

    a: Network
    a_host: str
    b: Network
    b_host: str


StreamCheck = Callable[[NetworkPair, StreamTransport], Awaitable[None]]
OtherCheck = Callable[[NetworkPair], Awaitable[None]]


# ---- helpers ----


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    """Read exactly `size` bytes; fail on EOF before that."""
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some(min(size - len(received), 256 * 1024))
        assert chunk, f"EOF after {len(received)} of {size} bytes"
        received += chunk
    return bytes(received)


async def receive_until_eof(stream: trio.abc.Stream) -> bytes:
    received = bytearray()
    while chunk := await stream.receive_some():
        received += chunk
    return bytes(received)


async def echo(stream: trio.abc.Stream, remote: HostPort) -> None:
    """A handler that sends back whatever it receives, until EOF."""
    while data := await stream.receive_some():
        await stream.send_all(data)


async def assert_echoes(stream: trio.abc.Stream, message: bytes) -> None:
    await stream.send_all(message)
    assert await receive_exactly(stream, len(message)) == message


@asynccontextmanager
async def serving(
    network: Network, host: str, transport: StreamTransport, handler: StreamHandler
) -> AsyncIterator[StreamAddress]:
    """Run a listener on (`host`, any port) for the duration of the block; yield its address."""
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            network.serve_streams, StreamAddress(transport, host, 0), handler
        )
        assert isinstance(address, StreamAddress)
        yield address
        nursery.cancel_scope.cancel()


async def assert_dial_refused(network: Network, address: StreamAddress) -> None:
    with trio.fail_after(FAIL_FAST_S), pytest.raises(OSError):
        stream = await network.open_stream(address)
        await stream.aclose()


def bulk_block(index: int, salt: bytes) -> bytes:
    """A 64 KiB block that differs from every other block, so reordering is detected."""
    return hashlib.sha256(salt + index.to_bytes(4, "big")).digest() * (BULK_BLOCK_BYTES // 32)


# ---- stream checks ----


async def check_stream_echo(pair: NetworkPair, transport: StreamTransport) -> None:
    """Bytes flow both ways, and the handler learns the dialer's host."""
    remotes: list[HostPort] = []

    async def greet_then_echo(stream: trio.abc.Stream, remote: HostPort) -> None:
        remotes.append(remote)
        await stream.send_all(b"hello from b")
        await echo(stream, remote)

    with trio.fail_after(CHECK_TIMEOUT_S):
        async with (
            serving(pair.b, pair.b_host, transport, greet_then_echo) as address,
            await pair.a.open_stream(address) as stream,
        ):
            assert await receive_exactly(stream, 12) == b"hello from b"
            for message in (b"x", b"ping" * 100, bytes(range(256)) * 300):
                await assert_echoes(stream, message)
    assert len(remotes) == 1
    host, port = remotes[0]
    assert host == pair.a_host
    assert 0 < port < 65536


async def check_bulk_transfer_in_order(pair: NetworkPair, transport: StreamTransport) -> None:
    """Many 64 KiB writes, both ways at once, arrive intact and in order."""
    to_b = [bulk_block(i, b"a->b") for i in range(BULK_BLOCK_COUNT)]
    to_a = [bulk_block(i, b"b->a") for i in range(BULK_BLOCK_COUNT)]
    total = BULK_BLOCK_COUNT * BULK_BLOCK_BYTES
    received_by_b: list[bytes] = []
    handler_done = trio.Event()

    async def send_blocks(stream: trio.abc.Stream, blocks: list[bytes]) -> None:
        for block in blocks:
            await stream.send_all(block)

    async def exchange(stream: trio.abc.Stream, blocks: list[bytes]) -> bytes:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_blocks, stream, blocks)
            return await receive_exactly(stream, total)

    async def handler(stream: trio.abc.Stream, remote: HostPort) -> None:
        received_by_b.append(await exchange(stream, to_a))
        received_by_b.append(bytes(await stream.receive_some()))  # EOF once a has closed
        handler_done.set()

    with trio.fail_after(CHECK_TIMEOUT_S):
        async with serving(pair.b, pair.b_host, transport, handler) as address:
            async with await pair.a.open_stream(address) as stream:
                received_by_a = await exchange(stream, to_b)
            await handler_done.wait()
    assert received_by_a == b"".join(to_a)
    assert received_by_b == [b"".join(to_b), b""]


async def check_eof_after_dialer_closes(pair: NetworkPair, transport: StreamTransport) -> None:
    """The handler reads everything the dialer sent, then EOF, after the dialer's aclose."""
    received = trio.Event()
    got: list[bytes] = []

    async def handler(stream: trio.abc.Stream, remote: HostPort) -> None:
        got.append(await receive_until_eof(stream))
        received.set()

    with trio.fail_after(CHECK_TIMEOUT_S):
        async with serving(pair.b, pair.b_host, transport, handler) as address:
            stream = await pair.a.open_stream(address)
            await stream.send_all(b"last words")
            await stream.aclose()
            await received.wait()
    assert got == [b"last words"]


async def check_eof_after_handler_returns(pair: NetworkPair, transport: StreamTransport) -> None:
    """The listener closes a stream once its handler returns; the dialer sees data, then EOF."""

    async def say_goodbye(stream: trio.abc.Stream, remote: HostPort) -> None:
        await stream.send_all(b"so long")

    with trio.fail_after(CHECK_TIMEOUT_S):
        async with (
            serving(pair.b, pair.b_host, transport, say_goodbye) as address,
            await pair.a.open_stream(address) as stream,
        ):
            assert await receive_until_eof(stream) == b"so long"
            assert await stream.receive_some() == b"", "EOF is sticky"


async def check_dial_unused_port_fails_fast(pair: NetworkPair, transport: StreamTransport) -> None:
    """Dialing a port nobody listens on raises OSError at once, not after a timeout."""
    with trio.fail_after(CHECK_TIMEOUT_S):
        async with serving(pair.b, pair.b_host, transport, echo) as address:
            pass  # bound, then closed: a port that nobody listens on any more
        await assert_dial_refused(pair.a, address)


async def check_cancelled_listener_closes_port(
    pair: NetworkPair, transport: StreamTransport
) -> None:
    """Cancelling a listener ends serve_streams, ends its handlers and closes the port."""
    handler_started = trio.Event()
    handler_cancelled = trio.Event()

    async def echo_until_cancelled(stream: trio.abc.Stream, remote: HostPort) -> None:
        handler_started.set()
        try:
            await echo(stream, remote)
        except trio.Cancelled:
            handler_cancelled.set()
            raise

    with trio.fail_after(CHECK_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(
                pair.b.serve_streams,
                StreamAddress(transport, pair.b_host, 0),
                echo_until_cancelled,
            )
            stream = await pair.a.open_stream(address)
            await assert_echoes(stream, b"still here")
            await handler_started.wait()
            nursery.cancel_scope.cancel()
        # serve_streams has returned (the nursery is done), and took its handler with it.
        assert handler_cancelled.is_set()
        try:
            assert await stream.receive_some() == b""
        except trio.BrokenResourceError:
            pass  # an abrupt close (say, WebSocket without a close frame) is fine too
        await stream.aclose()
        await assert_dial_refused(pair.a, address)


async def check_handler_exception_keeps_listener(
    pair: NetworkPair, transport: StreamTransport
) -> None:
    """A handler that raises loses its own connection, nothing more."""
    calls = 0

    async def fail_first(stream: trio.abc.Stream, remote: HostPort) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("deliberate failure in the first handler")
        await echo(stream, remote)

    with trio.fail_after(CHECK_TIMEOUT_S):
        async with (
            serving(pair.b, pair.b_host, transport, fail_first) as address,
            await pair.a.open_stream(address) as first,
        ):
            try:
                assert await first.receive_some() == b""
            except trio.BrokenResourceError:
                pass
            async with await pair.a.open_stream(address) as second:
                await assert_echoes(second, b"the listener survived")
    assert calls == 2


async def check_port_zero_reports_real_port(pair: NetworkPair, transport: StreamTransport) -> None:
    """serve_streams on port 0 reports the port it got, and that port reaches that listener."""

    def tagger(tag: bytes) -> StreamHandler:
        async def send_tag(stream: trio.abc.Stream, remote: HostPort) -> None:
            await stream.send_all(tag)

        return send_tag

    with trio.fail_after(CHECK_TIMEOUT_S):
        async with (
            serving(pair.b, pair.b_host, transport, tagger(b"one")) as first,
            serving(pair.b, pair.b_host, transport, tagger(b"two")) as second,
        ):
            for address in (first, second):
                assert address.transport == transport
                assert address.host == pair.b_host
                assert address.port != 0
            assert first.port != second.port
            for address, tag in ((first, b"one"), (second, b"two")):
                async with await pair.a.open_stream(address) as stream:
                    assert await receive_until_eof(stream) == tag


async def check_trio_stream_contract(pair: NetworkPair, transport: StreamTransport) -> None:
    """Both ends of a connection pass `trio.testing.check_two_way_stream`.

    That is Trio's own generic suite (EOF, closing, cancellation, concurrent use, a 1 MiB
    duplex transfer in random chunk sizes); code above the seam relies on exactly this.
    """
    send_accepted, receive_accepted = trio.open_memory_channel[trio.abc.Stream](0)

    async def hand_over(stream: trio.abc.Stream, remote: HostPort) -> None:
        await send_accepted.send(stream)
        await trio.sleep_forever()  # keep the stream open; the check closes it

    with trio.fail_after(CHECK_TIMEOUT_S):
        async with serving(pair.b, pair.b_host, transport, hand_over) as address:

            async def stream_maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
                dialed = await pair.a.open_stream(address)
                accepted = await receive_accepted.receive()
                return dialed, accepted

            await trio.testing.check_two_way_stream(stream_maker, None)


STREAM_CHECKS: Final[tuple[StreamCheck, ...]] = (
    check_stream_echo,
    check_bulk_transfer_in_order,
    check_eof_after_dialer_closes,
    check_eof_after_handler_returns,
    check_dial_unused_port_fails_fast,
    check_cancelled_listener_closes_port,
    check_handler_exception_keeps_listener,
    check_port_zero_reports_real_port,
    check_trio_stream_contract,
)


# ---- datagrams, blocking work, clock and randomness ----


async def check_datagram_round_trip(pair: NetworkPair) -> None:
    """Datagrams arrive whole, from the sender's bound address, and the reply path works."""
    with trio.fail_after(CHECK_TIMEOUT_S):
        endpoint_a = await pair.a.open_datagram_endpoint((pair.a_host, 0))
        endpoint_b = await pair.b.open_datagram_endpoint((pair.b_host, 0))
        try:
            for endpoint, host in ((endpoint_a, pair.a_host), (endpoint_b, pair.b_host)):
                assert endpoint.local_address[0] == host
                assert endpoint.local_address[1] != 0

            await endpoint_a.send(b"ping", endpoint_b.local_address)
            data, source = await endpoint_b.receive()
            assert (data, source) == (b"ping", endpoint_a.local_address)
            await endpoint_b.send(b"pong", source)
            assert await endpoint_a.receive() == (b"pong", endpoint_b.local_address)

            # Boundaries are kept: three sends, three datagrams (order is not promised).
            payloads = [b"\x01", bytes(range(256)) * 5, b"\xab" * 8000]
            for payload in payloads:
                await endpoint_a.send(payload, endpoint_b.local_address)
            received = [(await endpoint_b.receive())[0] for _ in payloads]
            assert sorted(received) == sorted(payloads)
        finally:
            await endpoint_a.aclose()
            await endpoint_b.aclose()


async def check_datagram_close(pair: NetworkPair) -> None:
    """aclose wakes a blocked receive with ClosedResourceError; later use raises it too."""
    with trio.fail_after(CHECK_TIMEOUT_S):
        endpoint = await pair.b.open_datagram_endpoint((pair.b_host, 0))
        woke = trio.Event()

        async def receive_until_closed() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await endpoint.receive()
            woke.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_until_closed)
            await trio.testing.wait_all_tasks_blocked()
            await endpoint.aclose()
        assert woke.is_set()
        with pytest.raises(trio.ClosedResourceError):
            await endpoint.receive()
        with pytest.raises(trio.ClosedResourceError):
            await endpoint.send(b"x", (pair.a_host, 9))


async def check_run_blocking(pair: NetworkPair) -> None:
    """run_blocking returns the function's value and raises its exception."""
    with trio.fail_after(CHECK_TIMEOUT_S):
        assert await pair.a.run_blocking(pow, 2, 10) == 1024
        assert await pair.a.run_blocking(sorted, [3, 1, 2]) == [1, 2, 3]
        with pytest.raises(ZeroDivisionError):
            await pair.a.run_blocking(divmod, 1, 0)


async def check_clock_and_randomness(pair: NetworkPair) -> None:
    """now() is Trio's clock; random is a Random; crypto_random gives the size asked for."""
    for network in (pair.a, pair.b):
        before = network.now()
        await trio.sleep(0.01)
        after = network.now()
        assert after >= before + 0.01
        assert after <= trio.current_time()
        assert isinstance(network.random, random.Random)
        assert len(network.crypto_random(32)) == 32
        assert network.crypto_random(16) != network.crypto_random(16)
    assert pair.a.random is not pair.b.random


OTHER_CHECKS: Final[tuple[OtherCheck, ...]] = (
    check_datagram_round_trip,
    check_datagram_close,
    check_run_blocking,
    check_clock_and_randomness,
)
