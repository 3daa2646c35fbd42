"""`crash-restart`: nodes crash and come back while the rest keep working.

N nodes keep k random peers connected (as in handshake-mesh, on a loss-free network). Every
20 simulated seconds, 5% of the running nodes are killed (their sockets reset, their tasks
cancelled) and each comes back after 10-60 s from its data directory, with the same identity.
Crashing stops at 80% of the run so everything can recover. Reported: the share of intended
links between never-crashed nodes that stayed open (sampled every 10 s), whether every node
reconnected at the end, that restarted nodes kept their ids, and that no surviving node had a
service crash.
"""

from __future__ import annotations

from typing import Any

import trio

from simulations.harness import ScenarioParams, ScenarioSpec, SimHost, Simulation, register
from simulations.latency import LatencyModel
from simulations.scenarios.mesh import Mesh, start_staggered
from simulations.virtualnet import WorldConfig

DEGREE = 4
CRASH_EVERY_SECONDS = 20.0
CRASH_FRACTION = 0.05
DOWN_SECONDS = (10.0, 60.0)


def world(seed: int) -> WorldConfig:
    return WorldConfig(seed=seed, latency=LatencyModel(20, 200, "lognormal"))


async def run(simulation: Simulation, params: ScenarioParams) -> dict[str, Any]:
    for _ in range(params.nodes):
        simulation.add_host(upload_bytes_per_second=5_000_000, download_bytes_per_second=20_000_000)
    mesh = Mesh(simulation, DEGREE)
    mesh.prepare()
    T = params.sim_seconds
    ever_crashed: set[int] = set()
    restarted_with_same_id = 0
    restarts = 0
    availability_samples: list[float] = []

    def never_crashed(host: SimHost) -> bool:
        return host.alive and host.index not in ever_crashed

    async def bring_back(host: SimHost, after: float) -> None:
        nonlocal restarts, restarted_with_same_id
        await trio.sleep(after)
        node = await simulation.restart(host)
        restarts += 1
        restarted_with_same_id += node.node_id == mesh.node_ids[host.index]

    async def sample_availability() -> None:
        while True:
            await trio.sleep(10)
            availability_samples.append(mesh.connected_fraction(never_crashed))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start_staggered, simulation, mesh.factory(), min(30.0, T / 4))
        await trio.sleep(min(60.0, T / 4))
        nursery.start_soon(sample_availability)
        while simulation.elapsed + CRASH_EVERY_SECONDS < 0.8 * T:
            running = [host for host in simulation.hosts if host.alive]
            count = max(1, round(CRASH_FRACTION * len(running)))
            for host in simulation.random.sample(running, min(count, len(running))):
                simulation.crash(host)
                ever_crashed.add(host.index)
                nursery.start_soon(bring_back, host, simulation.random.uniform(*DOWN_SECONDS))
            await trio.sleep(CRASH_EVERY_SECONDS)
        await trio.sleep_until(simulation.started_at + T)
        nursery.cancel_scope.cancel()
    survivors = [host for host in simulation.hosts if host.index not in ever_crashed]
    return {
        **mesh.stats.summary(),
        "degree": DEGREE,
        "crashes": sum(host.crashes for host in simulation.hosts),
        "restarts": restarts,
        "restarted_with_same_node_id": restarted_with_same_id,
        "never_crashed_nodes": len(survivors),
        "survivor_link_availability_min": round(min(availability_samples, default=1.0), 4),
        "survivor_link_availability_mean": round(
            sum(availability_samples) / len(availability_samples) if availability_samples else 1.0,
            4,
        ),
        "survivor_service_crashes": sum(
            host.node.service_crashes for host in survivors if host.node is not None
        ),
        "connected_fraction_end": round(mesh.connected_fraction(), 4),
        "nodes_running_end": sum(host.alive for host in simulation.hosts),
    }


DESCRIPTION = (__doc__ or "").split(": ", 1)[-1].split("\n\n")[0].replace("\n", " ")

register(
    ScenarioSpec(
        name="crash-restart",
        description=DESCRIPTION,
        run=run,
        default_nodes=100,
        default_sim_seconds=600.0,
        world=world,
    )
)
