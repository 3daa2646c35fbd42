"""PeerConnection (the Trio shell) over in-memory streams, with a man in the middle.

Whatever the other end or the wire does, the connection ends with a reason and nothing escapes
the connection task."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable

import pytest
import trio
import trio.testing

import node.peer
from node.peer import PeerConnection, PeerGone
from node.realnet import TrioNetwork
from wire.connection import SecureConnection
from wire.identity import LocalIdentity

ALICE = LocalIdentity(hashlib.sha256(b"alice").digest())
BOB = LocalIdentity(hashlib.sha256(b"bob").digest())
KEY = hashlib.sha256(b"key").digest()
Tamper = Callable[[int, bytes], list[bytes | None]]
"""(chunk index, bytes) -> what to do, in order: bytes are forwarded, None cuts the stream."""


def connection_pair(
    network: TrioNetwork,
    alice_stream: trio.abc.Stream,
    bob_stream: trio.abc.Stream,
    *,
    alice_key: bytes | None = None,
    bob_keys: tuple[bytes, ...] = (),
) -> tuple[PeerConnection, PeerConnection]:
    """Alice dials, Bob answers, each over its own end of a stream pair."""

    def connection(stream: trio.abc.Stream, core: SecureConnection, far: str) -> PeerConnection:
        return PeerConnection(network=network, stream=stream, core=core, remote_address=far)

    alice_core = SecureConnection.initiator(
        ALICE,
        ephemeral_private_key=network.crypto_random(32),
        extensions={"ks.test": 1},
        capability_key=alice_key,
    )
    bob_core = SecureConnection.responder(
        BOB,
        ephemeral_private_key=network.crypto_random(32),
        extensions={"ks.test": 1},
        capability_keys=bob_keys,
        allow_open=not bob_keys,
    )
    return connection(alice_stream, alice_core, "bob"), connection(bob_stream, bob_core, "alice")


def make_pair(
    tamper_to_bob: Tamper | None = None,
    *,
    alice_key: bytes | None = None,
    bob_keys: tuple[bytes, ...] = (),
    coalesce_to_alice: bool = False,
    delay_s: float = 0.0,
) -> tuple[PeerConnection, PeerConnection, Callable[[trio.Nursery], None]]:
    """`delay_s`: every chunk is held this long on its way, each direction."""
    network = TrioNetwork(seed=0)
    alice_stream, alice_far = trio.testing.memory_stream_pair()
    bob_stream, bob_far = trio.testing.memory_stream_pair()

    async def relay(
        source: trio.abc.Stream, sink: trio.abc.Stream, tamper: Tamper | None, coalesce: bool
    ) -> None:
        index = 0
        try:
            while data := await source.receive_some(65536):
                if coalesce and tamper is None:
                    # Gather what follows within 50 ms into one chunk, as a busy TCP
                    # stack does.
                    with trio.move_on_after(0.05):
                        while more := await source.receive_some(65536):
                            data += more
                actions = tamper(index, data) if tamper else [data]
                index += 1
                if delay_s:
                    await trio.sleep(delay_s)
                for action in actions:
                    if action is None:
                        raise trio.ClosedResourceError
                    await sink.send_all(action)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await sink.aclose()
        await source.aclose()

    def start_relays(nursery: trio.Nursery) -> None:
        nursery.start_soon(relay, alice_far, bob_far, tamper_to_bob, False)
        nursery.start_soon(relay, bob_far, alice_far, None, coalesce_to_alice)

    alice, bob = connection_pair(
        network, alice_stream, bob_stream, alice_key=alice_key, bob_keys=bob_keys
    )
    return alice, bob, start_relays


async def handshake_both(alice: PeerConnection, bob: PeerConnection) -> dict[str, object]:
    outcome: dict[str, object] = {}

    async def one(name: str, peer: PeerConnection) -> None:
        try:
            outcome[name] = await peer.handshake()
        except PeerGone as gone:
            outcome[name] = gone

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "alice", alice)
        nursery.start_soon(one, "bob", bob)
    return outcome


async def test_handshake_and_messages_over_memory_streams() -> None:
    alice, bob, start_relays = make_pair()
    got: list[bytes] = []
    arrived = trio.Event()

    async def on_test(peer: PeerConnection, payload: memoryview) -> None:
        got.append(payload)
        arrived.set()

    bob.set_extension_handler("ks.test", on_test)
    async with trio.open_nursery() as nursery:
        start_relays(nursery)
        outcome = await handshake_both(alice, bob)
        assert outcome["alice"].node_id == BOB.node_id  # type: ignore[attr-defined]
        assert outcome["bob"].node_id == ALICE.node_id  # type: ignore[attr-defined]
        nursery.start_soon(alice.run)
        nursery.start_soon(bob.run)
        await alice.send_extension("ks.test", b"hello")
        with trio.fail_after(2):
            await arrived.wait()
        await alice.aclose("done")
    assert got == [b"hello"]


async def test_a_message_that_arrives_with_the_handshake_waits_for_run() -> None:
    """The owner registers a peer between `handshake()` and `run()` (Node's connected
    callbacks); a message the other side sent right after its Hello, read in the same chunk,
    must not reach the handler before that."""
    alice, bob, start_relays = make_pair(coalesce_to_alice=True)
    running = False
    got: list[tuple[bytes, bool]] = []
    arrived = trio.Event()

    async def on_test(peer: PeerConnection, payload: memoryview) -> None:
        got.append((payload, running))
        arrived.set()

    alice.set_extension_handler("ks.test", on_test)

    async def bob_side() -> None:
        await bob.handshake()
        nursery.start_soon(bob.run)
        await bob.send_extension("ks.test", b"early")

    async with trio.open_nursery() as nursery:
        start_relays(nursery)
        nursery.start_soon(bob_side)
        await alice.handshake()
        await trio.sleep(0.2)
        running = True
        nursery.start_soon(alice.run)
        with trio.fail_after(2):
            await arrived.wait()
        await alice.aclose("done")
    assert got == [(b"early", True)]


async def test_wrong_capability_key_fails_both_sides_with_reasons() -> None:
    alice, bob, start_relays = make_pair(
        alice_key=hashlib.sha256(b"wrong").digest(), bob_keys=(KEY,)
    )
    async with trio.open_nursery() as nursery:
        start_relays(nursery)
        outcome = await handshake_both(alice, bob)
    assert isinstance(outcome["bob"], PeerGone)
    assert "capability keys" in outcome["bob"].reason
    assert isinstance(outcome["alice"], PeerGone)
    assert alice.remote is None and bob.remote is None


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda i, d: [d[:-1] + bytes([d[-1] ^ 1])] if i == 0 else [d], "authentication|handshake"),
        (lambda i, d: [None], "during the handshake|connection lost"),
        (lambda i, d: [d[:10], None], "during the handshake|connection lost"),
        (lambda i, d: [d[:10]], "timed out"),  # half a message, then silence
    ],
    ids=["flipped-bit", "cut-at-once", "cut-mid-message", "stalled"],
)
async def test_damaged_handshake_fails_with_a_reason(
    tamper: Tamper, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node.peer, "HANDSHAKE_TIMEOUT_SECONDS", 0.5)
    alice, bob, start_relays = make_pair(tamper)
    async with trio.open_nursery() as nursery:
        start_relays(nursery)
        outcome = await handshake_both(alice, bob)
    failures = [o for o in outcome.values() if isinstance(o, PeerGone)]
    assert failures, outcome
    assert any(re.search(reason, f.reason) for f in failures), failures


class AfterSetup:
    """A tamper that leaves Alice's chunks alone (handshake, Hello, cipher switch) until
    `armed`, then applies `change` to each."""

    def __init__(self, change: Callable[[bytes], list[bytes | None]]) -> None:
        self.change = change
        self.armed = False

    def __call__(self, index: int, data: bytes) -> list[bytes | None]:
        return self.change(data) if self.armed else [data]


@pytest.mark.parametrize(
    ("change", "reason", "delivered"),
    [
        (lambda d: [d[:-1] + bytes([d[-1] ^ 0x80])], "failed authentication", 0),
        (lambda d: [d, d], "failed authentication", 1),  # delivered once, the replay refused
        (lambda d: [d[:-3], None], "inside a frame", 0),
        (lambda d: [None], "truncated|without a goodbye|connection lost", 0),
    ],
    ids=["tampered", "replayed", "cut-mid-frame", "cut"],
)
async def test_damaged_session_ends_with_a_reason_and_nothing_escapes(
    change: Callable[[bytes], list[bytes | None]], reason: str, delivered: int
) -> None:
    tamper = AfterSetup(change)
    alice, bob, start_relays = make_pair(tamper)
    received: list[bytes] = []

    async def on_test(peer: PeerConnection, payload: memoryview) -> None:
        received.append(payload)

    bob.set_extension_handler("ks.test", on_test)
    reasons: dict[str, str] = {}

    async def run(name: str, peer: PeerConnection) -> None:
        reasons[name] = await peer.run()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            start_relays(nursery)
            await handshake_both(alice, bob)
            nursery.start_soon(run, "alice", alice)
            nursery.start_soon(run, "bob", bob)
            await trio.sleep(0.05)  # let the Hellos (and cipher switches) through untouched
            tamper.armed = True
            await alice.send_extension("ks.test", b"important")
    assert received == [b"important"] * delivered
    assert re.search(reason, reasons["bob"]), reasons


async def test_aclose_never_raises_when_the_peer_is_already_gone() -> None:
    alice, bob, start_relays = make_pair()
    async with trio.open_nursery() as nursery:
        start_relays(nursery)
        await handshake_both(alice, bob)
        nursery.start_soon(bob.run)
        await bob.aclose("leaving")
        await trio.sleep(0.05)
        alice.core.send_extension("ks.test", b"x" * 100_000)  # queue, then close into a dead peer
        await alice.aclose("duplicate connection")  # must not raise PeerGone
        assert alice.close_reason == "duplicate connection"


async def test_reader_and_writer_never_send_at_once() -> None:
    """Pongs (sent by the reader) and bulk messages (sent by the writer) interleave on one
    stream without two `send_all` calls overlapping."""
    alice, bob, start_relays = make_pair()
    got: list[bytes] = []

    async def on_test(peer: PeerConnection, payload: memoryview) -> None:
        got.append(payload)

    bob.set_extension_handler("ks.test", on_test)
    async with trio.open_nursery() as nursery:
        start_relays(nursery)
        await handshake_both(alice, bob)
        nursery.start_soon(alice.run)
        nursery.start_soon(bob.run)
        with trio.fail_after(5):
            for index in range(200):
                await alice.send_extension("ks.test", bytes([index % 256]) * 20_000)
                if index % 10 == 0:
                    await bob.ping()  # bob's reader answers alice's pings while writing
                    await alice.ping()
            while len(got) < 200:  # noqa: ASYNC110 - counting arrivals
                await trio.sleep(0.01)
        await alice.aclose("done")
    assert len(got) == 200


class StallingStream(trio.abc.Stream):
    """A stream whose sends block once `stalled` is set, until it is closed: what a TCP
    socket does when the peer stops reading and both buffers are full."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.stalled = False
        self._closed = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.stalled:
            await self._closed.wait()
            raise trio.ClosedResourceError("closed while sending")
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        self._closed.set()
        await self.inner.aclose()


async def test_a_peer_that_stops_reading_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A send that cannot finish within SEND_TIMEOUT_SECONDS (the peer stopped reading, the
    buffers are full) ends the connection at the next keepalive tick with that reason,
    rather than holding the writer, and every message queued for this peer, forever."""
    monkeypatch.setattr(node.peer, "SEND_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(node.peer, "KEEPALIVE_INTERVAL_SECONDS", 0.2)
    network = TrioNetwork(seed=0)
    alice_end, bob_end = trio.testing.memory_stream_pair()
    alice_stream = StallingStream(alice_end)
    alice, bob = connection_pair(network, alice_stream, bob_end)
    outcome = await handshake_both(alice, bob)
    assert outcome["alice"].node_id == BOB.node_id  # type: ignore[attr-defined]
    alice_stream.stalled = True
    reason: list[str] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def run_alice() -> None:
                reason.append(await alice.run())

            nursery.start_soon(run_alice)
            await alice.send_extension("ks.test", b"never read")
    assert reason == ["peer stopped reading"]
    with pytest.raises(PeerGone):
        await alice.send_extension("ks.test", b"too late")
    await bob.aclose("done")


async def test_the_round_trip_is_measured_as_the_connection_opens() -> None:
    """The request pipeline, the reveal window and the metadata patience are sized from
    `round_trip_seconds`; it must be known a round trip after connecting, not at the first
    keepalive (30 s later; before, no Ping's time was recorded at all and it stayed None).
    The relay here holds every chunk 20 ms each way."""
    alice, bob, start_relays = make_pair(delay_s=0.02)
    async with trio.open_nursery() as nursery:
        start_relays(nursery)
        await handshake_both(alice, bob)
        assert alice.round_trip_seconds is None and bob.round_trip_seconds is None
        nursery.start_soon(functools.partial(alice.run, own_keepalive=False))
        nursery.start_soon(functools.partial(bob.run, own_keepalive=False))
        await trio.sleep(0.5)  # a few round trips
        assert alice.round_trip_seconds is not None and bob.round_trip_seconds is not None
        assert 0.04 <= alice.round_trip_seconds < 0.5
        assert 0.04 <= bob.round_trip_seconds < 0.5
        alice.tick()  # a keepalive interval passed: a fresh sample is asked for, and answered
        assert len(alice._ping_sent_at) == 1
        await trio.sleep(0.5)
        assert not alice._ping_sent_at
        await alice.aclose("done")
        assert alice.tick() is None  # a closed connection pings nobody, and does not raise
        nursery.cancel_scope.cancel()


def test_a_peer_that_never_answers_pings_costs_a_bounded_memory() -> None:
    network = TrioNetwork(seed=0)
    alice_stream, _ = trio.testing.memory_stream_pair()
    bob_stream, _ = trio.testing.memory_stream_pair()
    alice, _ = connection_pair(network, alice_stream, bob_stream)
    for nonce in range(100):
        alice._awaiting_pong(nonce, float(nonce))
    assert list(alice._ping_sent_at) == [96, 97, 98, 99]
