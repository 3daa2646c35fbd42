"""Real Nodes on the virtual network: behaviour that needs minutes of simulated time."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from node.network import StreamAddress
from node.node import Node, NodeConfig
from node.peer import PeerConnection
from simulations.harness import SimHost, Simulation
from simulations.latency import LatencyModel
from simulations.virtualnet import HostNetwork, WorldConfig
from wire.identity import LocalIdentity


def factory(sim_host: SimHost, network: HostNetwork, identity: LocalIdentity) -> Node:
    return Node(
        network=network,
        identity=identity,
        config=NodeConfig(listen=(StreamAddress("tcp", sim_host.address, 7420),)),
    )


async def test_quiet_connections_ping_and_silent_ones_time_out(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    simulation = Simulation(WorldConfig(seed=3, latency=LatencyModel(50, 50, "fixed")), tmp_path)
    async with simulation.running():
        a_host, b_host = simulation.add_host(), simulation.add_host()
        a = await simulation.start(a_host, factory)
        b = await simulation.start(b_host, factory)
        ended: list[str] = []

        async def note_end(peer: PeerConnection) -> None:
            ended.append(peer.close_reason or "")

        a.on_peer_disconnected(note_end)
        await a.connect(StreamAddress("tcp", b_host.address, 7420))
        segments_before = simulation.trace.events_by_kind["segment"]
        await trio.sleep(300)  # five minutes of silence from the application
        pings = simulation.trace.events_by_kind["segment"] - segments_before
        # Each side pings every 30 s (the keepalive, and the round trip's fresh sample) and
        # answers the other's: 40 segments in 300 s, and the two pings of the connect.
        assert 10 <= pings <= 44, "keepalive pings and pongs every 30 s, nothing more"
        assert b.node_id in a.peers and a.node_id in b.peers

        simulation.partition([[a_host], [b_host]])
        started = trio.current_time()
        while a.peers or b.peers:  # noqa: ASYNC110 - two nodes, no single event
            await trio.sleep(1)
        dropped_after = trio.current_time() - started
        assert 90 <= dropped_after <= 181, "dropped by the 120 s idle timeout (+ one tick)"
        assert any("idle timeout" in reason for reason in ended), ended
