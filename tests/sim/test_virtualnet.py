"""The virtual network: the Network conformance suite, then bandwidth, latency, loss,
partitions and crashes, each checked against what the model promises."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from node.network import HostPort, StreamAddress, StreamTransport
from simulations.latency import LatencyModel
from simulations.virtualnet import HostNetwork, VirtualHost, World, WorldConfig
from tests.node.network_conformance import (
    OTHER_CHECKS,
    STREAM_CHECKS,
    NetworkPair,
    OtherCheck,
    StreamCheck,
    receive_exactly,
    serving,
)

MIB = 1024 * 1024


@pytest.fixture
async def world() -> AsyncIterator[World]:
    world = World(WorldConfig(seed=1, latency=LatencyModel(20, 100)))
    async with trio.open_nursery() as nursery:
        await nursery.start(world.run)
        yield world
        nursery.cancel_scope.cancel()


@pytest.fixture
async def pair(world: World) -> AsyncIterator[NetworkPair]:
    a, b = world.add_host(), world.add_host()
    async with HostNetwork(a) as net_a, HostNetwork(b) as net_b:
        yield NetworkPair(net_a, a.address, net_b, b.address)


@pytest.mark.parametrize("transport", ["tcp", "ws"])
@pytest.mark.parametrize("check", STREAM_CHECKS, ids=lambda c: c.__name__)
async def test_stream_conformance(
    autojump_clock: trio.testing.MockClock,
    pair: NetworkPair,
    transport: StreamTransport,
    check: StreamCheck,
) -> None:
    await check(pair, transport)


@pytest.mark.parametrize("check", OTHER_CHECKS, ids=lambda c: c.__name__)
async def test_other_conformance(
    autojump_clock: trio.testing.MockClock, pair: NetworkPair, check: OtherCheck
) -> None:
    await check(pair)


async def sink(received: list[int], done: trio.Event, expected: int) -> object:
    async def handler(stream: trio.abc.Stream, remote: HostPort) -> None:
        while data := await stream.receive_some(MIB):
            received.append(len(data))
            if sum(received) >= expected:
                done.set()

    return handler


async def timed_transfer(
    world: World, sender: VirtualHost, receiver: VirtualHost, size: int
) -> float:
    """Send `size` bytes sender→receiver; return simulated seconds until the last byte."""
    got: list[int] = []
    done = trio.Event()

    async def handler(stream: trio.abc.Stream, remote: HostPort) -> None:
        while data := await stream.receive_some(MIB):
            got.append(len(data))
            if sum(got) >= size:
                done.set()

    async with serving(HostNetwork(receiver), receiver.address, "tcp", handler) as address:
        stream = await HostNetwork(sender).open_stream(address)
        started = trio.current_time()
        await stream.send_all(bytes(size))
        await done.wait()
        elapsed = trio.current_time() - started
        await stream.aclose()
    return elapsed


async def test_ten_mib_over_one_mib_per_second_takes_ten_seconds(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    world.config.latency = LatencyModel(0, 0, "fixed")
    sender = world.add_host(upload_bytes_per_second=MIB)
    receiver = world.add_host()
    elapsed = await timed_transfer(world, sender, receiver, 10 * MIB)
    assert elapsed == pytest.approx(10.0, rel=0.02)


async def test_download_capacity_limits_too(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    world.config.latency = LatencyModel(0, 0, "fixed")
    sender = world.add_host()
    receiver = world.add_host(download_bytes_per_second=2 * MIB)
    assert await timed_transfer(world, sender, receiver, 10 * MIB) == pytest.approx(5.0, rel=0.02)


async def test_two_competing_flows_share_the_uplink(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    world.config.latency = LatencyModel(0, 0, "fixed")
    sender = world.add_host(upload_bytes_per_second=MIB)
    receivers = [world.add_host(), world.add_host()]
    finish: dict[int, float] = {}
    started = trio.current_time()

    async def flow(index: int) -> None:
        finish[index] = started + await timed_transfer(world, sender, receivers[index], 5 * MIB)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flow, 0)
        nursery.start_soon(flow, 1)
    # Together they need 10 s; sharing fairly, each finishes near the end, not one at 5 s.
    assert finish[0] - started == pytest.approx(10.0, rel=0.05)
    assert finish[1] - started == pytest.approx(10.0, rel=0.05)


async def test_latency_delays_every_byte_and_handshakes_cost_round_trips(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    world.config.latency = LatencyModel(80, 80, "fixed")  # 40 ms one way
    a, b = world.add_host(), world.add_host()
    arrived: list[float] = []
    arrival = trio.Event()

    async def handler(stream: trio.abc.Stream, remote: HostPort) -> None:
        await receive_exactly(stream, 5)
        arrived.append(trio.current_time())
        arrival.set()

    async with serving(HostNetwork(b), b.address, "tcp", handler) as address:
        started = trio.current_time()
        stream = await HostNetwork(a).open_stream(address)
        assert trio.current_time() - started == pytest.approx(0.080, abs=1e-6)  # SYN, SYN-ACK
        sent = trio.current_time()
        await stream.send_all(b"hello")
        with trio.fail_after(1):
            await arrival.wait()
        assert arrived[0] - sent == pytest.approx(0.040, abs=1e-6)
        await stream.aclose()


async def test_latencies_follow_the_configured_range(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    world.config.latency = LatencyModel(20, 300)
    hosts = [world.add_host() for _ in range(200)]
    rtts = [2 * world.latency_us(hosts[0], other) / 1000 for other in hosts[1:]]
    assert min(rtts) >= 20 and max(rtts) <= 300
    assert max(rtts) - min(rtts) > 200  # spread over the range, not one value
    assert world.latency_us(hosts[3], hosts[9]) == world.latency_us(hosts[9], hosts[3])


async def test_datagram_loss_rate_is_respected(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    world.config.datagram_loss = 0.2
    a, b = world.add_host(), world.add_host()
    sender = await HostNetwork(a).open_datagram_endpoint((a.address, 0))
    receiver = await HostNetwork(b).open_datagram_endpoint((b.address, 0))
    for index in range(2000):
        await sender.send(index.to_bytes(4, "big"), receiver.local_address)
    await trio.sleep(1)
    received = 0
    with trio.move_on_after(0.001):
        while True:
            await receiver.receive()
            received += 1
    assert received == pytest.approx(1600, abs=90)  # 20% lost; 90 is about 4 sigma


async def test_stream_loss_delays_but_never_reorders(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    world.config.stream_loss = 0.3
    world.config.latency = LatencyModel(50, 50, "fixed")
    a, b = world.add_host(upload_bytes_per_second=10 * MIB), world.add_host()
    blocks = [bytes([i]) * 65536 for i in range(64)]
    got = bytearray()
    done = trio.Event()

    async def handler(stream: trio.abc.Stream, remote: HostPort) -> None:
        got.extend(await receive_exactly(stream, 64 * 65536))
        done.set()

    async with serving(HostNetwork(b), b.address, "tcp", handler) as address:
        stream = await HostNetwork(a).open_stream(address)
        started = trio.current_time()
        for block in blocks:
            await stream.send_all(block)
        await done.wait()
        elapsed = trio.current_time() - started
    assert bytes(got) == b"".join(blocks)
    assert elapsed > 0.4 + 0.2  # the lossless time, plus at least one retransmission
    assert world.trace.events_by_kind["segment-lost"] > 5


async def test_partition_blocks_new_connections_and_holds_data_until_healed(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    world.config.latency = LatencyModel(20, 20, "fixed")
    a, b = world.add_host(), world.add_host()
    got: list[bytes] = []
    arrived = trio.Event()

    async def handler(stream: trio.abc.Stream, remote: HostPort) -> None:
        got.append(await receive_exactly(stream, 4))
        arrived.set()

    async with serving(HostNetwork(b), b.address, "tcp", handler) as address:
        stream = await HostNetwork(a).open_stream(address)
        world.partition([[a.index], [b.index]])
        await stream.send_all(b"held")
        with trio.move_on_after(5):
            await arrived.wait()
        assert not got, "data crossed a partition"
        with pytest.raises(TimeoutError):
            await HostNetwork(a).open_stream(address)  # new dials time out
        healed_at = trio.current_time()
        world.heal()
        await arrived.wait()
        assert got == [b"held"]
        assert trio.current_time() - healed_at <= 1.0 + 0.02  # the next retransmission
        await stream.aclose()
    other = await HostNetwork(a).open_datagram_endpoint((a.address, 0))
    target = await HostNetwork(b).open_datagram_endpoint((b.address, 0))
    world.partition([[a.index], [b.index]])
    await other.send(b"x", target.local_address)
    with trio.move_on_after(2) as scope:
        await target.receive()
    assert scope.cancelled_caught, "a datagram crossed a partition"


async def test_crash_resets_peers_and_frees_ports(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    world.config.latency = LatencyModel(20, 20, "fixed")
    a, b = world.add_host(), world.add_host()
    net_b = HostNetwork(b)
    outcome: list[str] = []

    async def handler(stream: trio.abc.Stream, remote: HostPort) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            net_b.serve_streams, StreamAddress("tcp", b.address, 7000), handler
        )
        stream = await HostNetwork(a).open_stream(address)
        world.crash(b)
        try:
            await stream.receive_some()
        except trio.BrokenResourceError:
            outcome.append("reset")
        assert outcome == ["reset"]
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"x")
        with pytest.raises(ConnectionRefusedError):
            await HostNetwork(a).open_stream(address)  # host down: refused
        nursery.cancel_scope.cancel()
    world.restart(b)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            HostNetwork(b).serve_streams, StreamAddress("tcp", b.address, 7000), handler
        )
        again = await HostNetwork(a).open_stream(address)
        await again.aclose()
        nursery.cancel_scope.cancel()


async def test_unknown_address_times_out(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.add_host()
    with pytest.raises(TimeoutError):
        await HostNetwork(a).open_stream(StreamAddress("tcp", "10.99.99.99", 1))


async def test_a_slow_reader_slows_the_writer(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    world.config.window_bytes = 256 * 1024
    a, b = world.add_host(), world.add_host()
    release = trio.Event()

    async def lazy(stream: trio.abc.Stream, remote: HostPort) -> None:
        await release.wait()
        while await stream.receive_some():
            pass

    async with serving(HostNetwork(b), b.address, "tcp", lazy) as address:
        stream = await HostNetwork(a).open_stream(address)
        with trio.move_on_after(5) as blocked:
            await stream.send_all(bytes(MIB))
        assert blocked.cancelled_caught, "the writer was not held back by the window"
        release.set()
        await stream.aclose()


def test_infinite_bandwidth_is_the_default() -> None:
    world = World(WorldConfig(seed=1))
    host = world.add_host()
    assert math.isinf(host.upload_bytes_per_second)
