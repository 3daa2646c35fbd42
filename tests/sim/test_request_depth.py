"""Requests when few blocks are left to ask for (`node.swarm.pipeline`), on the virtual
network with the real engine: deterministic, and seconds of simulated time."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from node.swarm.pipeline import MIN_DEPTH, SCARCE_BLOCKS, SCARCE_MIN_DEPTH
from node.swarm.session import Session
from simulations.harness import Simulation
from simulations.latency import LatencyModel
from simulations.memstore import Content
from simulations.scenarios.swarm import SwarmNodes, address_of
from simulations.virtualnet import WorldConfig
from wire.merkle import BLOCK_SIZE

BLOCKS = 32
"""Fewer than `SCARCE_BLOCKS`: scarce from the first request on."""
SLOW_UPLOAD = 16_000.0
"""About a block a second."""
FAST_UPLOAD = 2_000_000.0


async def test_a_slow_seed_is_not_left_holding_the_last_blocks(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """One leecher, a slow seed and a fast one, and a file of fewer blocks than
    `SCARCE_BLOCKS`: the engine allows the slow seed two requests at a time (with the usual
    floor it allowed eight: eight seconds of that seed's upload), the fast one as many as its
    rate fills, and the download is done in about a second, nearly all from the fast seed
    (1.33 s: a piece the fast seed shows while it is on its way from the slow one holds a
    place in the fast one's window of two until it arrives; 0.99 s when endgame asked the
    fast seed for such a piece at once whenever at most three blocks were awaited, which
    in a crowd's first seconds doubled 7 % of the blocks)."""
    content = Content(seed=7)
    file = content.generate("depth", BLOCKS * BLOCK_SIZE)
    manifest, layers = content.container("depth", [("data.bin", file)], BLOCK_SIZE)
    swarm = SwarmNodes(content)
    world = WorldConfig(seed=7, latency=LatencyModel(40, 40, "fixed"))
    simulation = Simulation(world, tmp_path)
    async with simulation.running():
        hosts = {}
        for name, upload in (("slow", SLOW_UPLOAD), ("fast", FAST_UPLOAD), ("leecher", 1e6)):
            host = simulation.add_host(
                upload_bytes_per_second=upload, download_bytes_per_second=8e6
            )
            swarm.upload[host.index] = upload
            hosts[name] = host
        for name in ("slow", "fast"):
            swarm.store(hosts[name].index).add_container(
                manifest, layers, Path("/virtual") / name / manifest.name, complete=True, now=0.0
            )
        factory = swarm.factory()
        nodes = {name: await simulation.start(host, factory) for name, host in hosts.items()}
        engine = swarm.engines[hosts["leecher"].index]
        depths: list[tuple[bytes, int, int]] = []
        measure = engine._depth

        def recorded_depth(session: Session) -> int:
            depth = measure(session)
            depths.append((session.node_id, engine.picker.requestable_blocks, depth))
            return depth

        engine._depth = recorded_depth  # type: ignore[method-assign]
        started = trio.current_time()
        download = await engine.get(
            manifest.id, peers=[address_of(hosts["slow"]), address_of(hosts["fast"])]
        )
        with trio.fail_after(60):
            await download.done.wait()
        elapsed = trio.current_time() - started
        received = swarm.ledger.down(swarm.engines)
    assert download.state == "complete"
    from_slow = received[hosts["leecher"].index, nodes["slow"].node_id]
    from_fast = received[hosts["leecher"].index, nodes["fast"].node_id]
    assert from_fast >= (BLOCKS - 3) * BLOCK_SIZE, (from_slow, from_fast)
    assert elapsed < 1.5, elapsed  # with the usual floor: 8 s, waiting on the slow seed
    slow_id, fast_id = nodes["slow"].node_id, nodes["fast"].node_id
    assert BLOCKS < SCARCE_BLOCKS  # so every request here is made with blocks scarce
    assert {depth for peer, _, depth in depths if peer == slow_id} == {SCARCE_MIN_DEPTH} == {2}
    assert max(depth for peer, _, depth in depths if peer == fast_id) > MIN_DEPTH
