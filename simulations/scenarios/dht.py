"""`dht` and `dht-churn`: N nodes join the DHT over time, announce, and look each other up.

Round trips are 20-300 ms (log-normal) with 2% datagram loss. The first nodes start together;
the rest join during the first 30% of the run, each bootstrapping from three random nodes
already running (as it would from a federation invite or its saved routing table). At 40% of
the run, up to 500 nodes each announce a key of their own (re-announced every 10 minutes, as
their DHT service does for the containers a node holds). From 50% to 90% random nodes look
up random announced keys (`lookup_success_rate`: the announcer was found; the lookup stops at
the first provider, as a download would) and random ids (`find_node_accuracy`: the truly
closest running node was returned first). `dht-churn` also replaces a third of the nodes from
40% to 90% of the run: they leave one by one and as many new nodes join; lookups only count
keys whose announcer is still running.
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import trio

from dht.ids import id_to_int
from node.node import DhtConfig, Node, NodeConfig
from simulations.harness import (
    ScenarioParams,
    ScenarioSpec,
    SimHost,
    Simulation,
    percentile,
    register,
)
from simulations.latency import LatencyModel
from simulations.virtualnet import HostNetwork, WorldConfig
from wire.identity import LocalIdentity

PORT = 7420
FIRST_NODES = 8
BOOTSTRAP_CONTACTS = 3
MAX_ANNOUNCERS = 500
ANNOUNCE_INTERVAL_SECONDS = 600.0


def world(seed: int) -> WorldConfig:
    return WorldConfig(seed=seed, latency=LatencyModel(20, 300, "lognormal"), datagram_loss=0.02)


@attrs.define
class Tally:
    provider_lookups: list[tuple[bool, int, int, float]] = attrs.Factory(list)
    """(found, hops, rpcs, seconds) per provider lookup."""
    node_lookups: list[bool] = attrs.Factory(list)
    joined: int = 0
    left: int = 0


def factory_for(simulation: Simulation, bootstrap_of: dict[int, list[str]]) -> Any:
    def build(sim_host: SimHost, network: HostNetwork, identity: LocalIdentity) -> Node:
        bootstrap = tuple((address, PORT) for address in bootstrap_of.get(sim_host.index, []))
        return Node(
            network=network,
            identity=identity,
            config=NodeConfig(
                listen=(),
                dht=DhtConfig(
                    bind=(sim_host.address, PORT),
                    bootstrap=bootstrap,
                    announce_port=PORT,
                    announce_interval=ANNOUNCE_INTERVAL_SECONDS,
                ),
            ),
        )

    return build


async def run_dht(simulation: Simulation, params: ScenarioParams, *, churn: bool) -> dict[str, Any]:
    T = params.sim_seconds
    started = simulation.started_at
    random = simulation.random
    bootstrap_of: dict[int, list[str]] = {}
    build = factory_for(simulation, bootstrap_of)
    running: list[SimHost] = []
    tally = Tally()

    async def join(host: SimHost) -> None:
        if running:
            chosen = random.sample(running, min(BOOTSTRAP_CONTACTS, len(running)))
            bootstrap_of[host.index] = [h.address for h in chosen]
        await simulation.start(host, build)
        running.append(host)
        tally.joined += 1

    hosts = [simulation.add_host() for _ in range(params.nodes)]
    first, rest = hosts[:FIRST_NODES], hosts[FIRST_NODES:]
    for index, host in enumerate(first):
        bootstrap_of[host.index] = [h.address for h in first[:index]]
        await simulation.start(host, build)
        running.append(host)
    join_times = sorted(random.uniform(0, 0.3 * T) for _ in rest)
    for at, host in zip(join_times, rest, strict=True):
        await trio.sleep_until(started + at)
        await join(host)

    await trio.sleep_until(started + 0.4 * T)
    announced: dict[bytes, SimHost] = {}
    announcers = random.sample(running, min(MAX_ANNOUNCERS, len(running)))
    async with trio.open_nursery() as nursery:
        for host in announcers:
            key = random.randbytes(32)
            announced[key] = host
            assert host.node is not None
            host.node.provided_keys[key] = None
            nursery.start_soon(_announce_soon, host.node, key, random.uniform(0, 30))

        if churn:
            nursery.start_soon(_churn, simulation, running, hosts, join, tally, T)
        lookups = min(2 * params.nodes, 2000)
        lookup_times = sorted(random.uniform(0.5 * T, 0.9 * T) for _ in range(lookups))
        for at in lookup_times:
            await trio.sleep_until(started + at)
            alive_keys = [k for k, h in announced.items() if h.alive]
            asker = random.choice([h for h in running if h.alive])
            if random.random() < 0.8 and alive_keys:
                key = random.choice(alive_keys)
                nursery.start_soon(_provider_lookup, asker, key, announced[key], tally)
            else:
                target = random.randbytes(32)
                truth = min(
                    (h for h in running if h.alive and h.node is not None),
                    key=lambda h: id_to_int(h.node.node_id) ^ id_to_int(target),  # type: ignore[union-attr]
                )
                nursery.start_soon(_node_lookup, asker, target, truth, tally)
        await trio.sleep_until(started + T)
        nursery.cancel_scope.cancel()
    return _metrics(tally, simulation, running)


ASKER_DIED = (trio.ClosedResourceError, trio.BrokenResourceError, RuntimeError)
"""What a call into a node's DHT raises when the node is killed while it runs."""


async def _announce_soon(node: Node, key: bytes, delay: float) -> None:
    await trio.sleep(delay)
    if node.dht is not None and node.dht.engine is not None:
        with contextlib.suppress(*ASKER_DIED):
            await node.dht.announce(key)


async def _provider_lookup(asker: SimHost, key: bytes, announcer: SimHost, tally: Tally) -> None:
    node = asker.node
    if node is None or node.dht is None or node.dht.engine is None:
        return
    try:
        result = await node.dht.find_providers(key, want=1)
    except ASKER_DIED:
        return  # the asking node was killed mid-lookup: nothing to count
    if not asker.alive:
        return
    expected = announcer.node.node_id if announcer.node is not None else None
    found = any(p.node_id == expected for p in result.providers)
    tally.provider_lookups.append(
        (found, result.stats.hops, result.stats.rpcs, result.stats.seconds)
    )


async def _node_lookup(asker: SimHost, target: bytes, truth: SimHost, tally: Tally) -> None:
    node = asker.node
    if node is None or node.dht is None or node.dht.engine is None or truth.node is None:
        return
    expected = truth.node.node_id
    try:
        results, _ = await node.dht.find_node(target)
    except ASKER_DIED:
        return
    if not asker.alive:
        return
    tally.node_lookups.append(
        bool(results and results[0].node_id == expected) or expected == node.node_id
    )


async def _churn(
    simulation: Simulation,
    running: list[SimHost],
    hosts: list[SimHost],
    join: Any,
    tally: Tally,
    T: float,
) -> None:
    """Replace a third of the nodes between 40% and 90% of the run, one at a time."""
    leavers = len(hosts) // 3
    period = 0.5 * T / max(leavers, 1)
    for _ in range(leavers):
        await trio.sleep(period)
        victim = simulation.random.choice([h for h in running if h.alive])
        simulation.crash(victim)
        running.remove(victim)
        tally.left += 1
        await join(simulation.add_host())


def _metrics(tally: Tally, simulation: Simulation, running: list[SimHost]) -> dict[str, Any]:
    lookups = tally.provider_lookups
    found = [entry for entry in lookups if entry[0]]
    tables = [
        len(h.node.dht.engine.table)
        for h in running
        if h.alive and h.node is not None and h.node.dht is not None and h.node.dht.engine
    ]
    sent = sum(
        h.node.dht.engine.traffic.datagrams_sent
        for h in running
        if h.alive and h.node is not None and h.node.dht is not None and h.node.dht.engine
    )
    return {
        "provider_lookups": len(lookups),
        "lookup_success_rate": round(len(found) / len(lookups), 4) if lookups else None,
        "hops_median": percentile([float(e[1]) for e in lookups], 0.5),
        "rpcs_median": percentile([float(e[2]) for e in lookups], 0.5),
        "latency_median_s": _round(percentile([e[3] for e in lookups], 0.5)),
        "latency_p95_s": _round(percentile([e[3] for e in lookups], 0.95)),
        "find_node_lookups": len(tally.node_lookups),
        "find_node_accuracy": round(sum(tally.node_lookups) / len(tally.node_lookups), 4)
        if tally.node_lookups
        else None,
        "nodes_joined": tally.joined,
        "nodes_left": tally.left,
        "routing_table_median": percentile([float(t) for t in tables], 0.5),
        "datagrams_per_node": round(sent / max(len(tables), 1), 1),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def run(simulation: Simulation, params: ScenarioParams) -> dict[str, Any]:
    return await run_dht(simulation, params, churn=False)


async def run_churn(simulation: Simulation, params: ScenarioParams) -> dict[str, Any]:
    return await run_dht(simulation, params, churn=True)


DESCRIPTION = "nodes join the DHT over time, announce keys and look them up (20-300 ms, 2% loss)"

register(
    ScenarioSpec(
        name="dht",
        description=DESCRIPTION,
        run=run,
        default_nodes=1000,
        default_sim_seconds=1200.0,
        world=world,
    )
)
register(
    ScenarioSpec(
        name="dht-churn",
        description=DESCRIPTION + "; a third of the nodes are replaced",
        run=run_churn,
        default_nodes=1000,
        default_sim_seconds=1200.0,
        world=world,
    )
)
