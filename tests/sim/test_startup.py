"""How a download starts, on the virtual network with the real engine (deterministic,
seconds of simulated time): a small manifest comes unasked with a downloader's answer to our
want, and a peer told of pieces it lacks is unchoked with that news while a slot is free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from node.swarm.engine import PUSH_MANIFEST_BYTES
from node.swarm.session import Session
from simulations.harness import SimHost, Simulation
from simulations.latency import LatencyModel
from simulations.memstore import Content
from simulations.scenarios.swarm import SwarmNodes, address_of
from simulations.virtualnet import WorldConfig
from wire.merkle import BLOCK_SIZE
from wire.swarm import Unchoke

UPLOAD = 250_000.0


async def fetch_through_a_downloader(
    tmp_path: Path, files: int, name_length: int
) -> tuple[list[str], int]:
    """A seed, a leecher A that dials it and a leecher B that knows only A, all asking at
    once; the container holds `files` files of four blocks. Returns what B sent by type (A
    has the manifest to give only as it downloads), and the manifest's size."""
    content = Content(seed=3)
    entries = [
        (f"{index:04d}".ljust(name_length, "x"), content.generate(index, 4 * BLOCK_SIZE))
        for index in range(files)
    ]
    manifest, layers = content.container("start", entries, BLOCK_SIZE)
    swarm = SwarmNodes(content)
    simulation = Simulation(WorldConfig(seed=3, latency=LatencyModel(40, 40, "fixed")), tmp_path)
    async with simulation.running():
        seed, a, b = (
            simulation.add_host(upload_bytes_per_second=UPLOAD, download_bytes_per_second=4e6)
            for _ in range(3)
        )
        swarm.store(seed.index).add_container(
            manifest, layers, Path("/virtual/seed") / manifest.name, complete=True, now=0.0
        )
        factory = swarm.factory()
        for host in (seed, a, b):
            await simulation.start(host, factory)
        sent_by_b: list[str] = []
        engine_b = swarm.engines[b.index]
        send = engine_b._send

        async def watched_send(session: Session, *messages: Any) -> None:
            sent_by_b.extend(type(m).__name__ for m in messages)
            await send(session, *messages)

        engine_b._send = watched_send  # type: ignore[method-assign]
        download_a = await swarm.engines[a.index].get(manifest.id, peers=[address_of(seed)])
        download_b = await engine_b.get(manifest.id, peers=[address_of(a)])
        with trio.fail_after(60):
            await download_a.done.wait()
            await download_b.done.wait()
    assert download_b.state == "complete"
    return sent_by_b, len(manifest.encode())


async def test_a_downloader_sends_a_small_manifest_with_its_answer_unasked(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    sent_by_b, size = await fetch_through_a_downloader(tmp_path, files=3, name_length=8)
    assert size <= PUSH_MANIFEST_BYTES
    assert "GetManifest" not in sent_by_b, sent_by_b  # a round trip saved
    assert "GetLayer" in sent_by_b  # the layer is still asked for, of the sender


async def test_a_large_manifest_is_only_sent_when_asked(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    sent_by_b, size = await fetch_through_a_downloader(tmp_path, files=40, name_length=60)
    assert size > PUSH_MANIFEST_BYTES
    assert sent_by_b.count("GetManifest") == 1


async def test_a_peer_told_of_pieces_it_lacks_is_unchoked_before_it_says_it_is_interested(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A seed, a leecher A that dials it, and a leecher B that knows only A. When A has
    pieces B lacks and a slot free, its Unchoke goes with its Have, before B's Interested
    can arrive: B asks a round trip sooner. (Without this, A unchoked B only on its
    Interested.)"""
    content = Content(seed=5)
    file = content.generate("pre", 64 * BLOCK_SIZE)
    manifest, layers = content.container("pre", [("data.bin", file)], BLOCK_SIZE)
    swarm = SwarmNodes(content)
    simulation = Simulation(WorldConfig(seed=5, latency=LatencyModel(40, 40, "fixed")), tmp_path)
    async with simulation.running():
        hosts: dict[str, SimHost] = {
            name: simulation.add_host(upload_bytes_per_second=UPLOAD, download_bytes_per_second=4e6)
            for name in ("seed", "a", "b")
        }
        swarm.store(hosts["seed"].index).add_container(
            manifest, layers, Path("/virtual/seed") / manifest.name, complete=True, now=0.0
        )
        factory = swarm.factory()
        nodes = {name: await simulation.start(host, factory) for name, host in hosts.items()}
        a = swarm.engines[hosts["a"].index]
        b_id = nodes["b"].node_id
        interested_at_unchoke: list[bool] = []
        send = a._send

        async def watched_send(session: Session, *messages: Any) -> None:
            if session.node_id == b_id and any(isinstance(m, Unchoke) for m in messages):
                interested_at_unchoke.append(session.peer_interested)
            await send(session, *messages)

        a._send = watched_send  # type: ignore[method-assign]
        download_a = await a.get(manifest.id, peers=[address_of(hosts["seed"])])
        b = swarm.engines[hosts["b"].index]
        download_b = await b.get(manifest.id, peers=[address_of(hosts["a"])])
        with trio.fail_after(60):
            await download_a.done.wait()
            await download_b.done.wait()
    assert download_b.state == "complete"
    assert interested_at_unchoke[:1] == [False], interested_at_unchoke
    assert swarm.tap.summary()["Interested"]["count"] >= 2  # B still says it, as it must
