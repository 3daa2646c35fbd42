"""The simulation harness: virtual hosts running real `Node`s, faults on a schedule, a result.

A scenario gets a `Simulation`, adds hosts, starts nodes on them (each node built by the
scenario from the host's `HostNetwork`, identity and data directory, exactly as `kinswarm run`
builds one from `TrioNetwork`), injects crashes, restarts and partitions, and returns metrics.
`run_scenario` runs a registered scenario under the mock clock with seeded scheduling and
wraps its metrics with the seed, the trace digest and the timings.

Each host's node runs inside its own cancel scope in the simulation's nursery: a crash breaks
the host's sockets first (peers see resets) and then cancels that scope, so the node's tasks
end as they would if the process were killed. A restart builds a new node from the same data
directory: whatever the node wrote to disk survives, nothing in memory does.
"""

from __future__ import annotations

import math
import resource
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from node.datadir import load_or_create_identity
from node.network import StreamAddress
from node.node import Node
from simulations.determinism import derive_random, run_simulated
from simulations.trace import Trace
from simulations.virtualnet import HostNetwork, VirtualHost, World, WorldConfig
from wire.identity import LocalIdentity

NodeFactory = Callable[["SimHost", HostNetwork, LocalIdentity], Node]
"""Builds the node for one host incarnation (register extensions and services here)."""


@attrs.define(eq=False)
class SimHost:
    """A virtual host, the node running on it (if any) and its disk."""

    host: VirtualHost
    data_dir: Path
    factory: NodeFactory | None = None
    node: Node | None = None
    network: HostNetwork | None = None
    scope: trio.CancelScope | None = None
    crashes: int = 0

    @property
    def index(self) -> int:
        return self.host.index

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def alive(self) -> bool:
        return self.host.alive and self.node is not None


class Simulation:
    """The world, its hosts and their nodes, inside one Trio run under a mock clock."""

    def __init__(self, config: WorldConfig, work_dir: Path) -> None:
        self.seed = config.seed
        self.trace = Trace()
        self.world = World(config, self.trace)
        self.work_dir = work_dir
        self.hosts: list[SimHost] = []
        self.random = derive_random(config.seed, "scenario")
        self._nursery: trio.Nursery | None = None
        self.started_at = 0.0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Simulation]:
        """Run the world's delivery task (and every node) for the duration of the block."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.world.run)
            self._nursery = nursery
            self.started_at = trio.current_time()
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()
                self._nursery = None

    @property
    def elapsed(self) -> float:
        """Simulated seconds since the simulation started."""
        return trio.current_time() - self.started_at

    def add_host(
        self,
        *,
        upload_bytes_per_second: float = math.inf,
        download_bytes_per_second: float = math.inf,
    ) -> SimHost:
        host = self.world.add_host(
            upload_bytes_per_second=upload_bytes_per_second,
            download_bytes_per_second=download_bytes_per_second,
        )
        data_dir = self.work_dir / f"host-{host.index:05d}"
        sim_host = SimHost(host=host, data_dir=data_dir)
        self.hosts.append(sim_host)
        return sim_host

    def identity_seed(self, sim_host: SimHost) -> bytes:
        return derive_random(self.seed, "identity", sim_host.index).randbytes(32)

    async def start(self, sim_host: SimHost, factory: NodeFactory) -> Node:
        """Build and start a node on `sim_host`; returns once it is listening."""
        if self._nursery is None:
            raise RuntimeError("the simulation is not running")
        sim_host.factory = factory
        # The identity lives on the host's disk, as for `kinswarm run`: a restart reloads it.
        identity = load_or_create_identity(sim_host.data_dir, new_seed=self.identity_seed(sim_host))
        network = HostNetwork(sim_host.host)
        node = factory(sim_host, network, identity)
        sim_host.network = network
        sim_host.node = node
        await self._nursery.start(self._run_node, sim_host, node)
        return node

    async def _run_node(
        self, sim_host: SimHost, node: Node, *, task_status: trio.TaskStatus[list[StreamAddress]]
    ) -> None:
        incarnation = sim_host.host.incarnation
        try:
            with trio.CancelScope() as scope:
                sim_host.scope = scope
                await node.run(task_status=task_status)
        except BaseException:
            if sim_host.host.incarnation == incarnation:
                raise  # the node failed by itself: that is a bug the run must show
            # Anything still unwinding in a host that was killed is irrelevant.
        if sim_host.node is node:
            sim_host.node = None

    def crash(self, sim_host: SimHost) -> None:
        """Kill the host: sockets break (peers see resets), the node's tasks are cancelled."""
        if not sim_host.host.alive:
            return
        # Cancel first, then break the sockets: tasks woken by a dead socket would otherwise
        # run on and see errors before their cancellation, and a killed process runs no more
        # code at all.
        if sim_host.scope is not None:
            sim_host.scope.cancel()
        self.world.crash(sim_host.host)
        sim_host.crashes += 1
        sim_host.node = None
        sim_host.network = None

    async def restart(self, sim_host: SimHost) -> Node:
        """Boot the host again with its disk, and start a fresh node with the same factory."""
        if sim_host.factory is None:
            raise RuntimeError("this host never ran a node")
        self.world.restart(sim_host.host)
        return await self.start(sim_host, sim_host.factory)

    def partition(self, groups: list[list[SimHost]]) -> None:
        self.world.partition([[h.index for h in group] for group in groups])

    def heal(self) -> None:
        self.world.heal()


@attrs.frozen
class ScenarioParams:
    nodes: int
    seed: int
    sim_seconds: float


ScenarioRun = Callable[[Simulation, ScenarioParams], Awaitable[dict[str, Any]]]


@attrs.frozen
class ScenarioSpec:
    name: str
    description: str
    run: ScenarioRun
    default_nodes: int
    default_sim_seconds: float
    world: Callable[[int], WorldConfig] = attrs.field(default=lambda seed: WorldConfig(seed=seed))


@attrs.frozen
class SimulationResult:
    scenario: str
    seed: int
    nodes: int
    sim_seconds: float
    wall_seconds: float
    digest: str
    metrics: dict[str, Any]
    events: int
    events_by_kind: dict[str, int]
    peak_rss_mib: float
    memory_per_node_kib: float
    """Growth of peak memory during the run per node (meaningful in a fresh process)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "digest": self.digest,
            "seed": self.seed,
            "nodes": self.nodes,
            "sim_seconds": round(self.sim_seconds, 6),
            "wall_seconds": round(self.wall_seconds, 3),
            "sim_seconds_per_wall_second": round(self.sim_seconds / self.wall_seconds, 2)
            if self.wall_seconds
            else None,
            "events": self.events,
            "events_by_kind": dict(sorted(self.events_by_kind.items())),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "memory_per_node_kib": round(self.memory_per_node_kib, 1),
            "metrics": self.metrics,
        }


SCENARIOS: dict[str, ScenarioSpec] = {}


def register(spec: ScenarioSpec) -> ScenarioSpec:
    SCENARIOS[spec.name] = spec
    return spec


ProgressCallback = Callable[[float, float], None]
"""(simulated seconds so far, simulated seconds planned)"""


def run_scenario(
    name: str,
    *,
    nodes: int | None = None,
    seed: int = 1,
    sim_seconds: float | None = None,
    progress: ProgressCallback | None = None,
    work_dir: Path | None = None,
) -> SimulationResult:
    """Run scenario `name` to completion and return its result (see module docstring)."""
    import simulations.scenarios  # noqa: F401 - registers the scenarios

    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    spec = SCENARIOS[name]
    params = ScenarioParams(
        nodes=spec.default_nodes if nodes is None else nodes,
        seed=seed,
        sim_seconds=spec.default_sim_seconds if sim_seconds is None else sim_seconds,
    )
    own_dir = work_dir is None
    directory = Path(tempfile.mkdtemp(prefix=f"kinswarm-sim-{name}-")) if own_dir else work_dir
    assert directory is not None
    simulation = Simulation(spec.world(seed), directory)

    if progress is not None:
        # A plain callback from the delivery loop: a progress *task* would join Trio's
        # scheduling batches and change their shuffle, and with it the run's digest.
        simulation.world.on_progress = lambda: progress(simulation.elapsed, params.sim_seconds)

    async def main() -> tuple[dict[str, Any], float]:
        async with simulation.running():
            metrics = await spec.run(simulation, params)
            return metrics, simulation.elapsed

    rss_before_mib = _peak_rss_mib()
    started = time.perf_counter()
    try:
        metrics, elapsed = run_simulated(main, seed=seed)
    finally:
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
    wall = time.perf_counter() - started
    return SimulationResult(
        scenario=name,
        seed=seed,
        nodes=params.nodes,
        sim_seconds=elapsed,
        wall_seconds=wall,
        digest=simulation.trace.digest(),
        metrics=metrics,
        events=simulation.trace.events,
        events_by_kind=dict(simulation.trace.events_by_kind),
        peak_rss_mib=_peak_rss_mib(),
        memory_per_node_kib=(_peak_rss_mib() - rss_before_mib) * 1024 / max(params.nodes, 1),
    )


def _peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], fraction: float) -> float | None:
    """The `fraction` quantile (nearest rank) of `values`, or None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]
