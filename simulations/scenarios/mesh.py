"""A mesh of nodes that keep chosen peers connected: the workload of the first scenarios.

Each node picks `degree` other nodes at random (from its own seeded generator) and keeps a
connection to each: dial, authenticate (checking the expected node id), and when the
connection drops, dial again after a jittered backoff. `MeshStats` records every attempt, its
outcome and its handshake latency in simulated time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

from node.network import StreamAddress
from node.node import Node, NodeConfig
from node.peer import PeerGone
from simulations.harness import SimHost, Simulation, percentile
from simulations.virtualnet import HostNetwork
from wire.identity import LocalIdentity

PORT: Final = 7420
DIAL_TIMEOUT_SECONDS: Final = 20.0
REDIAL_BACKOFF_SECONDS: Final = 5.0


@attrs.define
class DialRecord:
    started: float
    target_was_up: bool
    crossed_partition: bool
    outcome: str = "pending"
    latency: float | None = None
    reason: str | None = None


@attrs.define
class MeshStats:
    dials: list[DialRecord] = attrs.Factory(list)

    def summary(self) -> dict[str, Any]:
        done = [d for d in self.dials if d.outcome not in ("pending", "dialer-crashed")]
        fair = [d for d in done if d.target_was_up and not d.crossed_partition]
        latencies = [d.latency for d in done if d.latency is not None]
        outcomes: dict[str, int] = {}
        for dial in done:
            outcomes[dial.outcome] = outcomes.get(dial.outcome, 0) + 1
        successes = outcomes.get("ok", 0)
        reasons: dict[str, int] = {}
        for dial in done:
            if dial.reason is not None:
                reasons[dial.reason] = reasons.get(dial.reason, 0) + 1
        return {
            "dials": len(done),
            "dial_outcomes": dict(sorted(outcomes.items())),
            "success_rate_all_dials": round(successes / len(done), 4) if done else None,
            "connection_success_rate": (
                round(sum(d.outcome == "ok" for d in fair) / len(fair), 4) if fair else None
            ),
            "handshake_failure_reasons": dict(sorted(reasons.items())),
            "dials_across_partition": sum(d.crossed_partition for d in done),
            "dials_across_partition_succeeded": sum(
                d.crossed_partition and d.outcome == "ok" for d in done
            ),
            "handshake_latency_p50_s": _rounded(percentile(latencies, 0.5)),
            "handshake_latency_p95_s": _rounded(percentile(latencies, 0.95)),
            "handshake_latency_max_s": _rounded(max(latencies) if latencies else None),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@attrs.define
class Mesh:
    """The shared state of a mesh scenario: who should connect to whom."""

    simulation: Simulation
    degree: int
    stats: MeshStats = attrs.Factory(MeshStats)
    node_ids: list[bytes] = attrs.Factory(list)
    targets: dict[int, list[int]] = attrs.Factory(dict)

    def prepare(self) -> None:
        """Compute every host's node id (from its identity seed) for dial verification."""
        self.node_ids = [
            LocalIdentity(self.simulation.identity_seed(h)).node_id for h in self.simulation.hosts
        ]

    def factory(self) -> Callable[[SimHost, HostNetwork, LocalIdentity], Node]:
        def build(sim_host: SimHost, network: HostNetwork, identity: LocalIdentity) -> Node:
            node = Node(
                network=network,
                identity=identity,
                config=NodeConfig(listen=(StreamAddress("tcp", sim_host.address, PORT),)),
            )
            node.add_service("mesh", self._service(sim_host, node))
            return node

        return build

    def _service(self, sim_host: SimHost, node: Node) -> Callable[..., Any]:
        async def keep_peers(*, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            targets = self.targets.get(sim_host.index)
            if targets is None:
                others = [i for i in range(len(self.simulation.hosts)) if i != sim_host.index]
                targets = node.network.random.sample(others, min(self.degree, len(others)))
                self.targets[sim_host.index] = targets
            async with trio.open_nursery() as nursery:
                for target in targets:
                    nursery.start_soon(self._keep_connected, sim_host, node, target)

        return keep_peers

    async def _keep_connected(self, sim_host: SimHost, node: Node, target: int) -> None:
        simulation = self.simulation
        target_host = simulation.hosts[target]
        address = StreamAddress("tcp", target_host.address, PORT)
        expected = self.node_ids[target]
        random = node.network.random
        incarnation = sim_host.host.incarnation
        while True:
            existing = node.peers.get(expected)
            if existing is not None and existing.is_open:
                await existing.wait_closed()
            else:
                record = DialRecord(
                    started=trio.current_time(),
                    target_was_up=target_host.alive,
                    crossed_partition=not simulation.world.reachable(
                        sim_host.host, target_host.host
                    ),
                )
                self.stats.dials.append(record)
                try:
                    with trio.fail_after(DIAL_TIMEOUT_SECONDS):
                        peer = await node.connect(address, expected_node_id=expected)
                except PeerGone as gone:
                    record.outcome = "handshake-failed"
                    record.reason = gone.reason
                except ConnectionRefusedError:
                    record.outcome = "refused"
                except (TimeoutError, trio.TooSlowError):
                    record.outcome = "timeout"
                except OSError:
                    record.outcome = "error"
                else:
                    record.outcome = "ok"
                    record.latency = trio.current_time() - record.started
                    await peer.wait_closed()
                if sim_host.host.incarnation != incarnation:
                    # Our own host was killed during the dial: a dead process records nothing.
                    record.outcome, record.reason, record.latency = "dialer-crashed", None, None
                    return
            await trio.sleep(REDIAL_BACKOFF_SECONDS * (0.5 + random.random()))

    def connected_fraction(self, among: Callable[[SimHost], bool] = lambda h: h.alive) -> float:
        """Of the intended links between hosts satisfying `among`, the share now open."""
        intended = 0
        connected = 0
        for source, targets in self.targets.items():
            source_host = self.simulation.hosts[source]
            if not among(source_host) or source_host.node is None:
                continue
            for target in targets:
                target_host = self.simulation.hosts[target]
                if not among(target_host):
                    continue
                intended += 1
                peer = source_host.node.peers.get(self.node_ids[target])
                connected += peer is not None and peer.is_open
        return connected / intended if intended else 1.0


async def start_staggered(
    simulation: Simulation,
    factory: Callable[[SimHost, HostNetwork, LocalIdentity], Node],
    over_seconds: float,
) -> None:
    """Start a node on every host at a random moment within `over_seconds` (joins over time)."""
    start_times = sorted(
        (simulation.random.uniform(0, over_seconds), host.index) for host in simulation.hosts
    )
    for at, index in start_times:
        await trio.sleep_until(simulation.started_at + at)
        await simulation.start(simulation.hosts[index], factory)
