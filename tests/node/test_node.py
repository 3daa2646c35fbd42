"""Nodes talking over real loopback TCP and WebSocket, and surviving hostile input."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

import node.peer
from node.network import StreamAddress
from node.node import Node, NodeConfig, NodeStartError
from node.peer import PeerConnection, PeerGone
from node.realnet import TrioNetwork
from wire.identity import LocalIdentity

KEY = hashlib.sha256(b"federation key").digest()
LOOPBACK_TCP = StreamAddress("tcp", "127.0.0.1", 0)
LOOPBACK_WS = StreamAddress("ws", "127.0.0.1", 0)


def identity(name: str) -> LocalIdentity:
    return LocalIdentity(hashlib.sha256(name.encode()).digest())


@asynccontextmanager
async def running(
    name: str,
    *,
    listen: tuple[StreamAddress, ...] = (LOOPBACK_TCP, LOOPBACK_WS),
    keys: tuple[bytes, ...] = (),
    allow_open: bool = True,
    setup: Callable[[Node], None] | None = None,
    max_peers: int = 500,
) -> AsyncIterator[Node]:
    async with TrioNetwork(seed=1) as network:
        node = Node(
            network=network,
            identity=identity(name),
            config=NodeConfig(
                listen=listen, capability_keys=keys, allow_open=allow_open, max_peers=max_peers
            ),
        )
        if setup is not None:
            setup(node)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            yield node
            node.stop()


def address_of(node: Node, transport: str) -> StreamAddress:
    return next(a for a in node.listen_addresses if a.transport == transport)


async def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll a condition that spans several nodes (no single event covers it)."""
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_two_nodes_authenticate_and_exchange_extension_messages(transport: str) -> None:
    received: dict[str, list[bytes]] = {"a": [], "b": []}

    def echo_setup(label: str) -> Callable[[Node], None]:
        def setup(node: Node) -> None:
            async def on_message(peer: PeerConnection, payload: memoryview) -> None:
                received[label].append(payload)
                if payload == b"ping":
                    await peer.send_extension("ks.echo", b"pong")

            node.register_extension("ks.echo", 1, on_message)

        return setup

    async with running("a", setup=echo_setup("a")) as a, running("b", setup=echo_setup("b")) as b:
        peer = await a.connect(address_of(b, transport))
        assert peer.node_id == b.node_id
        await wait_for(lambda: a.node_id in b.peers)
        await peer.send_extension("ks.echo", b"ping")
        await wait_for(lambda: received["a"] == [b"pong"])
        assert received["b"] == [b"ping"]
        assert b.peers[a.node_id].hello is not None
        assert b.peers[a.node_id].hello.agent.startswith("kinswarm")


async def test_large_messages_arrive_intact_and_in_order() -> None:
    chunks: list[bytes] = []

    def setup(node: Node) -> None:
        async def on_message(peer: PeerConnection, payload: memoryview) -> None:
            chunks.append(payload)

        node.register_extension("ks.bulk", 1, on_message)

    async with running("a", setup=setup) as a, running("b", setup=setup) as b:
        peer = await a.connect(address_of(b, "tcp"))
        payloads = [bytes([i]) * (1024 * 1024) for i in range(8)]
        for payload in payloads:
            await peer.send_extension("ks.bulk", payload)
        await wait_for(lambda: len(chunks) == len(payloads), seconds=20)
        assert chunks == payloads


async def test_capability_key_gates_the_network() -> None:
    async with (
        running("gated", keys=(KEY,), allow_open=False) as gated,
        running("outsider") as outsider,
        running("member", keys=(KEY,)) as member,
    ):
        with pytest.raises(PeerGone):
            await outsider.connect(address_of(gated, "tcp"))
        assert gated.peers == {}
        peer = await member.connect(address_of(gated, "tcp"))
        assert peer.node_id == gated.node_id
        assert peer.capability_key_index == 0


async def test_expected_node_id_mismatch_fails() -> None:
    async with running("a") as a, running("b") as b:
        with pytest.raises(PeerGone, match="expected node"):
            await a.connect(address_of(b, "tcp"), expected_node_id=b"\x00" * 32)
        assert a.peers == {}


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"KSWM\x01\x00\x00\x00" + b"\x00\x20" + b"\x00" * 32,  # low-order ephemeral key
        b"KSWM\x01\x00\x00\x00\xff\xff" + b"x" * 100,  # announces 64 KiB, sends 100, hangs up
        b"KSWM\x09\x00\x00\x00",  # unknown version
        b"",  # connects and closes at once
    ],
)
async def test_garbage_closes_only_that_connection(garbage: bytes) -> None:
    async with running("target") as target, running("friend") as friend:
        stream = await trio.open_tcp_stream("127.0.0.1", address_of(target, "tcp").port)
        if garbage:
            await stream.send_all(garbage)
        await stream.send_eof()  # hang up our side; keep reading to see the node close
        with trio.fail_after(5):
            try:
                rest = await stream.receive_some(1024)
                assert rest == b"", "the node answers garbage by closing"
            except trio.BrokenResourceError:
                pass  # closed with unread data: a reset is also a close
        await stream.aclose()
        assert target.peers == {}
        assert target.service_crashes == 0
        peer = await friend.connect(address_of(target, "tcp"))  # the node still works
        assert peer.node_id == target.node_id


async def test_silent_client_is_dropped_after_the_handshake_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node.peer, "HANDSHAKE_TIMEOUT_SECONDS", 0.3)
    async with running("target") as target:
        stream = await trio.open_tcp_stream("127.0.0.1", address_of(target, "tcp").port)
        with trio.fail_after(5):
            try:
                assert await stream.receive_some(1024) == b""
            except trio.BrokenResourceError:
                pass
        await stream.aclose()


async def test_peer_vanishing_is_noticed() -> None:
    async with running("a") as a, running("b") as b:
        await a.connect(address_of(b, "tcp"))
        await wait_for(lambda: a.node_id in b.peers)
        await a.peers[b.node_id].aclose("going away")
        await wait_for(lambda: not b.peers and not a.peers)


async def test_simultaneous_dials_leave_one_agreed_connection() -> None:
    async with running("a") as a, running("b") as b:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.connect, address_of(b, "tcp"))
            nursery.start_soon(b.connect, address_of(a, "tcp"))
        await trio.sleep(0.2)
        await wait_for(lambda: b.node_id in a.peers and a.node_id in b.peers)
        a_side, b_side = a.peers[b.node_id], b.peers[a.node_id]
        smaller_is_a = a.node_id < b.node_id
        # Both kept the connection dialled by the node with the smaller id.
        assert a_side.is_initiator == smaller_is_a
        assert b_side.is_initiator == (not smaller_is_a)
        assert a_side.is_open and b_side.is_open


async def test_a_crashing_extension_handler_drops_only_that_peer() -> None:
    def setup(node: Node) -> None:
        async def on_message(peer: PeerConnection, payload: memoryview) -> None:
            raise RuntimeError("bug in handler")

        node.register_extension("ks.buggy", 1, on_message)

    async with running("a", setup=setup) as a, running("b", setup=setup) as b:
        peer = await a.connect(address_of(b, "tcp"))
        await peer.send_extension("ks.buggy", b"boom")
        await wait_for(lambda: not b.peers)
        again = await a.connect(address_of(b, "tcp"))
        assert again.is_open


async def test_port_in_use_fails_the_start() -> None:
    async with running("a", listen=(LOOPBACK_TCP,)) as a:
        taken = address_of(a, "tcp")
        async with TrioNetwork(seed=2) as network, trio.open_nursery() as nursery:
            node_b = Node(
                network=network, identity=identity("b"), config=NodeConfig(listen=(taken,))
            )
            with pytest.raises(NodeStartError, match=r"cannot listen on tcp://127\.0\.0\.1"):
                await nursery.start(node_b.run)


async def test_stop_is_clean_and_quick() -> None:
    async with running("a") as a, running("b") as b:
        await a.connect(address_of(b, "tcp"))
        with trio.fail_after(1):
            b.stop()
            await wait_for(lambda: not a.peers)


async def test_a_crashing_service_is_restarted_and_the_node_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    recovered = trio.Event()

    async def flaky(*, task_status: trio.TaskStatus[None]) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        if runs <= 2:
            await trio.sleep(0.01)
            raise RuntimeError(f"crash number {runs}")
        recovered.set()
        await trio.sleep_forever()

    async with running("a", setup=lambda n: n.add_service("flaky", flaky)) as a, running("b") as b:
        with trio.fail_after(5):
            await recovered.wait()  # restarted after 0.5 s and 1 s of backoff
        assert a.service_crashes == 2
        assert "service flaky crashed" in caplog.text
        peer = await b.connect(address_of(a, "tcp"))
        assert peer.node_id == a.node_id


async def test_concurrent_dials_to_one_address_share_one_connection() -> None:
    async with running("a") as a, running("b") as b:
        results = []

        async def dial() -> None:
            results.append(await a.connect(address_of(b, "tcp")))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(dial)
        assert len({id(peer) for peer in results}) == 1
        assert results[0].is_open and list(a.peers) == [b.node_id]


async def test_a_burst_of_dials_stays_within_max_peers() -> None:
    """Handshakes under way count towards the limit: eight peers dialling at the same
    instant get three connections, not eight (each passed a check of established peers)."""
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(running("hub", listen=(LOOPBACK_TCP,), max_peers=3))
        dialers = [
            await stack.enter_async_context(running(f"dialer {i}", listen=(LOOPBACK_TCP,)))
            for i in range(8)
        ]
        outcomes: list[str] = []

        async def dial(dialer: Node) -> None:
            try:
                await dialer.connect(address_of(hub, "tcp"))
                outcomes.append("connected")
            except (OSError, PeerGone):
                outcomes.append("refused")

        async with trio.open_nursery() as nursery:
            for dialer in dialers:
                nursery.start_soon(dial, dialer)
        await wait_for(lambda: len(hub.peers) == 3)
        await trio.sleep(0.2)  # nothing more gets in
        assert len(hub.peers) == 3
        assert outcomes.count("refused") >= 5
