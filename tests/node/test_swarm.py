"""The swarm engine between real nodes on loopback: downloads by id, verified block by block."""

from __future__ import annotations

from pathlib import Path

import trio

from node.realnet import TrioNetwork

from .swarm_helpers import add_folder, make_folder, swarm_node, tcp_address


async def test_a_container_is_fetched_by_id_alone(tmp_path: Path) -> None:
    source = tmp_path / "photos"
    sizes = {"a.jpg": 3_000_000, "b/c.txt": 5, "b/d.bin": 200_000, "empty": 0}
    contents = make_folder(source, sizes)
    async with (
        TrioNetwork(seed=1) as network,
        trio.open_nursery() as nursery,
        swarm_node("seed", tmp_path, network, nursery) as (seed, seeder, seed_store),
        swarm_node("leech", tmp_path, network, nursery) as (_, engine, store),
    ):
        container_id = await add_folder(seed_store, source)
        await seeder.share(container_id)
        with trio.fail_after(30):
            download = await engine.get(container_id, peers=[tcp_address(seed)])
            await download.done.wait()
        assert download.state == "complete", download.error
        record = store.get(container_id)
        assert record is not None and record.state == "complete"
        for name, data in contents.items():
            assert (record.location / name).read_bytes() == data
        assert download.held_bytes == download.total_bytes == sum(map(len, contents.values()))
