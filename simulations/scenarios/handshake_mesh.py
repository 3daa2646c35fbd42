"""`handshake-mesh`: N nodes each keep k random peers connected, over a lossy network with a
partition in the middle of the run. Reports dial success and handshake latency.

Nodes join over the first 30 simulated seconds. The network has round trips of 20-300 ms
(log-normal), 1% stream segment loss (as retransmission delay) and 2% datagram loss. From 40%
of the run, for a fifth of it but at least 180 s (longer than the 120 s idle timeout, so
connections across it die), the hosts are split into two random halves: dials across the split
time out and connections across it stall and drop; after the heal, nodes re-dial.
`connection_success_rate` counts dials to nodes that were up and reachable; dials across the
partition are reported separately (they must all fail).
"""

from __future__ import annotations

from typing import Any

import trio

from simulations.harness import ScenarioParams, ScenarioSpec, Simulation, register
from simulations.latency import LatencyModel
from simulations.scenarios.mesh import Mesh, start_staggered
from simulations.virtualnet import WorldConfig

DEGREE = 4
JOIN_SECONDS = 30.0
PARTITION_MIN_SECONDS = 180.0


def world(seed: int) -> WorldConfig:
    return WorldConfig(
        seed=seed,
        latency=LatencyModel(20, 300, "lognormal"),
        stream_loss=0.01,
        datagram_loss=0.02,
    )


async def run(simulation: Simulation, params: ScenarioParams) -> dict[str, Any]:
    for _ in range(params.nodes):
        upload = simulation.random.choice([1, 2, 5, 10]) * 1_000_000
        simulation.add_host(upload_bytes_per_second=upload, download_bytes_per_second=4 * upload)
    mesh = Mesh(simulation, DEGREE)
    mesh.prepare()
    T = params.sim_seconds
    async with trio.open_nursery() as nursery:
        nursery.start_soon(start_staggered, simulation, mesh.factory(), min(JOIN_SECONDS, T / 4))
        await trio.sleep_until(simulation.started_at + 0.4 * T)
        shuffled = list(simulation.hosts)
        simulation.random.shuffle(shuffled)
        half = len(shuffled) // 2
        simulation.partition([shuffled[:half], shuffled[half:]])
        connected_before = mesh.connected_fraction()
        await trio.sleep(max(0.2 * T, PARTITION_MIN_SECONDS))
        simulation.heal()
        await trio.sleep_until(simulation.started_at + max(T, simulation.elapsed + 60))
        nursery.cancel_scope.cancel()
    return {
        **mesh.stats.summary(),
        "degree": DEGREE,
        "connected_fraction_before_partition": round(connected_before, 4),
        "connected_fraction_end": round(mesh.connected_fraction(), 4),
    }


DESCRIPTION = (__doc__ or "").split(": ", 1)[-1].split("\n\n")[0].replace("\n", " ")

register(
    ScenarioSpec(
        name="handshake-mesh",
        description=DESCRIPTION,
        run=run,
        default_nodes=100,
        default_sim_seconds=600.0,
        world=world,
    )
)
