"""`many-containers`: two nodes that share 10,000 containers over one connection.

Node A holds C containers (`containers`, 10,000 by default), each one small file of one to
four 16 KiB blocks. Node B already holds the first half and, once A is running, asks for the
second half at once (one `get` per container, A's address as the hint), as a friend catching
up with a collection would. BitTorrent would open one connection and announce once per
torrent; kinswarm carries every container over one authenticated connection, and the index
exchange (docs/protocol.md 5.4) says what each side holds with one Bloom-filter summary and
increments, not C entries each way.

Reported: connections between the two (1), index exchange bytes each way (Summary, Wants,
Holding, HaveContainer) and per container; the simulated time from B's gets to A receiving
B's first Request, to the first and to the last completed container; messages per fetched
container by type. Upload 1 MB/s each way, round trips 20-150 ms. `--nodes` is always 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import attrs
import trio

from node.store.records import NewContainer
from node.swarm.engine import Download
from simulations.determinism import derive_seed
from simulations.harness import ScenarioParams, ScenarioSpec, Simulation, register
from simulations.latency import LatencyModel
from simulations.memstore import Content
from simulations.scenarios.swarm import INDEX_MESSAGES, SwarmNodes, address_of, describe, rounded
from simulations.virtualnet import WorldConfig

CONTAINERS: Final = 10_000
BLOCK_BYTES: Final = 16 * 1024
UPLOAD: Final = 1_000_000


@attrs.frozen
class ManyContainers:
    containers: int = CONTAINERS
    upload: float = UPLOAD
    latency: LatencyModel = attrs.field(factory=lambda: LatencyModel(20, 150, "uniform"))

    def world(self, seed: int) -> WorldConfig:
        return WorldConfig(seed=seed, latency=self.latency)

    def spec(self, name: str = "many-containers") -> ScenarioSpec:
        return ScenarioSpec(
            name=name,
            description=DESCRIPTION,
            run=lambda simulation, params: run(simulation, params, self),
            default_nodes=2,
            default_sim_seconds=1800.0,
            world=self.world,
        )


async def run(
    simulation: Simulation, params: ScenarioParams, config: ManyContainers
) -> dict[str, Any]:
    content = Content(seed=derive_seed(params.seed, "content"))
    rng = simulation.random
    entries = []
    total_bytes = 0
    for number in range(config.containers):
        length = rng.randint(1, 4 * BLOCK_BYTES)
        total_bytes += length
        file = content.generate(number, length)
        manifest, layers = content.container(f"item-{number:05d}", [("data", file)], BLOCK_BYTES)
        entries.append(NewContainer(manifest, layers, Path("/virtual/a") / manifest.name))
    half = config.containers // 2
    wanted = entries[half:]
    wanted_bytes = sum(e.manifest.total_length for e in wanted)

    swarm = SwarmNodes(content)
    swarm.tap.keep_first = True
    host_a = simulation.add_host(
        upload_bytes_per_second=config.upload, download_bytes_per_second=config.upload
    )
    host_b = simulation.add_host(
        upload_bytes_per_second=config.upload, download_bytes_per_second=config.upload
    )
    for index in (host_a.index, host_b.index):
        swarm.upload[index] = config.upload
    swarm.store(host_a.index).add_containers(entries, now=0.0)
    swarm.store(host_b.index).add_containers(
        [
            NewContainer(e.manifest, e.piece_layers, Path("/virtual/b") / e.manifest.name)
            for e in entries[:half]
        ],
        now=0.0,
    )
    factory = swarm.factory()
    node_a = await simulation.start(host_a, factory)
    node_b = await simulation.start(host_b, factory)
    engine_b = swarm.engines[host_b.index]

    started = trio.current_time()
    downloads: list[Download] = []
    for entry in wanted:
        downloads.append(await engine_b.get(entry.manifest.id, peers=[address_of(host_a)]))
    with trio.move_on_at(simulation.started_at + params.sim_seconds):
        for download in downloads:
            await download.done.wait()
    finished = [d.finished_at - started for d in downloads if d.finished_at is not None]

    tap = swarm.tap
    first_request = tap.first_at.get((host_a.index, node_b.node_id, "Request"))
    index_bytes = tap.index_bytes()
    fetched = max(len(finished), 1)
    return {
        "containers": config.containers,
        "held_by_both": half,
        "fetched": len(finished),
        "failed": sum(d.state == "failed" for d in downloads),
        "connections_a": len(node_a.peers),
        "connections_b": len(node_b.peers),
        "connections_accepted": simulation.trace.events_by_kind["accept"],
        "index_bytes_total": index_bytes,
        "index_bytes_per_container": round(index_bytes / config.containers, 2),
        "index_messages": {name: tap.count[name] for name in INDEX_MESSAGES},
        "index_bytes_by_type": {name: tap.sizes[name] for name in INDEX_MESSAGES},
        "first_request_s": rounded(None if first_request is None else first_request - started),
        "first_complete_s": rounded(min(finished) if finished else None),
        "last_complete_s": rounded(max(finished) if len(finished) == len(wanted) else None),
        "wanted_bytes": wanted_bytes,
        "throughput_share_of_link": rounded(
            wanted_bytes / (config.upload * max(finished)) if finished else None
        ),
        "messages_per_fetched_container": {
            name: round(count / fetched, 2) for name, count in sorted(tap.count.items())
        },
    }


DESCRIPTION = describe(__doc__)

register(ManyContainers().spec())
