"""Nodes with a store and a swarm engine, on real loopback TCP, for the swarm tests."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from node.hashing import build_container
from node.network import StreamAddress
from node.node import Node, NodeConfig
from node.realnet import TrioNetwork
from node.store import Store
from node.swarm.engine import SwarmEngine
from wire.identity import LocalIdentity


@asynccontextmanager
async def swarm_node(
    name: str,
    base: Path,
    network: TrioNetwork,
    nursery: trio.Nursery,
    *,
    engine_class: type[SwarmEngine] = SwarmEngine,
    upload_limit: float | None = None,
) -> AsyncIterator[tuple[Node, SwarmEngine, Store]]:
    store = Store(base / name / "data")
    node = Node(
        network=network,
        identity=LocalIdentity(hashlib.sha256(name.encode()).digest()),
        config=NodeConfig(listen=(StreamAddress("tcp", "127.0.0.1", 0),)),
    )
    engine = engine_class(
        node, store, download_dir=base / name / "downloads", upload_limit=upload_limit
    )
    stopped = trio.Event()

    async def run_node(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await node.run(task_status=task_status)
        finally:
            stopped.set()

    await nursery.start(run_node)
    try:
        yield node, engine, store
    finally:
        node.stop()
        # The store closes after the node has stopped, as `kinswarm run` does: a service
        # may be inside a store call (in a worker thread) when it is cancelled.
        with trio.CancelScope(shield=True) as scope:
            scope.relative_deadline = 30
            await stopped.wait()
        store.close()


def make_folder(path: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, bytes]:
    contents = {}
    for index, (name, size) in enumerate(sizes.items()):
        data = hashlib.sha256(f"{seed}:{index}".encode()).digest() * (size // 32 + 1)
        data = data[:size] if size < 4096 else os.urandom(size)
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
        contents[name] = data
    return contents


async def add_folder(store: Store, folder: Path) -> bytes:
    manifest, layers, _ = await build_container(folder, run_blocking=trio.to_thread.run_sync)
    store.add_container(manifest, layers, folder, complete=True, now=time.time())
    return manifest.id


async def seed_folder(folder: Path, *holders: tuple[Store, SwarmEngine]) -> bytes:
    """Add `folder` to each (store, engine) and share it there: the container's id."""
    ids = [await add_folder(store, folder) for store, _ in holders]
    container_id = ids[0]
    assert set(ids) == {container_id}  # one folder, one container everywhere
    for _, engine in holders:
        await engine.share(container_id)
    return container_id


def tcp_address(node: Node) -> StreamAddress:
    return next(a for a in node.listen_addresses if a.transport == "tcp")


@attrs.frozen
class SeedAndLeech:
    """A seed sharing a folder and a leech that has not asked for it yet, on loopback."""

    seed: Node
    seeder: SwarmEngine
    leech: Node
    engine: SwarmEngine
    """The leech's engine."""
    store: Store
    """The leech's store."""
    container_id: bytes


@asynccontextmanager
async def seed_and_leech(
    tmp_path: Path,
    source: Path,
    *,
    network_seed: int,
    seed_class: type[SwarmEngine] = SwarmEngine,
    leech_class: type[SwarmEngine] = SwarmEngine,
    upload_limit: float | None = None,
) -> AsyncIterator[SeedAndLeech]:
    """The set-up of most two-node swarm tests: `source` (a folder) shared by a seed whose
    engine is a `seed_class` (its uploads held to `upload_limit`), and a leech (its engine a
    `leech_class`), on a TrioNetwork seeded with `network_seed`."""
    async with (
        TrioNetwork(seed=network_seed) as network,
        trio.open_nursery() as nursery,
        swarm_node(
            "seed", tmp_path, network, nursery, engine_class=seed_class, upload_limit=upload_limit
        ) as (seed, seeder, seed_store),
        swarm_node("leech", tmp_path, network, nursery, engine_class=leech_class) as (
            leech,
            engine,
            store,
        ),
    ):
        container_id = await seed_folder(source, (seed_store, seeder))
        yield SeedAndLeech(seed, seeder, leech, engine, store, container_id)
