"""Have messages to peers we choke (`SwarmEngine._have_loop`), on the virtual network with
the real engine: deterministic, and seconds of simulated time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from node.swarm.engine import HAVE_BATCH_CHOKED_SECONDS
from node.swarm.session import Session
from simulations.harness import Simulation
from simulations.latency import LatencyModel
from simulations.memstore import Content
from simulations.scenarios.swarm import SwarmNodes, address_of
from simulations.virtualnet import WorldConfig

PEERS = 5
"""Leechers beside the one watched: more than its one slot and its optimistic unchoke."""


async def test_a_peer_we_choke_hears_of_our_pieces_once_a_second_at_most(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A 125 KB/s leecher (one slot) fetches 2 MiB from a fast seed beside five other
    leechers. To the peers it chokes while its slots are full, a Have goes at most once per
    HAVE_BATCH_CHOKED_SECONDS: it cannot ask us for anything; to the ones it unchokes, as
    pieces come. (Before, every peer got one every tenth of a second: the Haves were a
    tenth of a 125 KB/s uplink in a flash crowd.)"""
    content = Content(seed=11)
    file = content.generate("haves", 2 * 1024 * 1024)
    manifest, layers = content.container("haves", [("data.bin", file)], 16 * 1024)
    swarm = SwarmNodes(content, upload_limit_share=0.95)
    world = WorldConfig(seed=11, latency=LatencyModel(30, 30, "fixed"))
    simulation = Simulation(world, tmp_path)
    async with simulation.running():
        seed_host = simulation.add_host(upload_bytes_per_second=1e6, download_bytes_per_second=4e6)
        swarm.upload[seed_host.index] = 1e6
        swarm.store(seed_host.index).add_container(
            manifest, layers, Path("/virtual/seed") / manifest.name, complete=True, now=0.0
        )
        hosts = []
        for _ in range(PEERS + 1):
            host = simulation.add_host(
                upload_bytes_per_second=125_000, download_bytes_per_second=500_000
            )
            swarm.upload[host.index] = 125_000
            hosts.append(host)
        factory = swarm.factory()
        await simulation.start(seed_host, factory)
        for host in hosts:
            await simulation.start(host, factory)
        watched = swarm.engines[hosts[0].index]
        sends: list[tuple[float, bytes, bool]] = []
        send_haves = watched._send_haves

        async def recorded(session: Session, *args: Any) -> None:
            free = watched.choker.slots - sum(
                not s.am_choking or s.interest_expected for s in watched.sessions.values()
            )
            deferrable = session.am_choking and not session.interest_expected and free <= 0
            sends.append((trio.current_time(), session.node_id, deferrable))
            await send_haves(session, *args)

        watched._send_haves = recorded  # type: ignore[method-assign]
        everyone = [address_of(seed_host), *map(address_of, hosts)]
        downloads = [
            await swarm.engines[host.index].get(manifest.id, peers=everyone) for host in hosts
        ]
        with trio.fail_after(120):
            for download in downloads:
                await download.done.wait()
    assert all(download.state == "complete" for download in downloads)
    last_send: dict[bytes, float] = {}
    gaps_choked: list[float] = []
    gaps_other: list[float] = []
    for at, peer, deferrable in sends:
        if peer in last_send:
            (gaps_choked if deferrable else gaps_other).append(at - last_send[peer])
        last_send[peer] = at
    assert len(gaps_choked) >= 10, gaps_choked  # the case arose, and often
    assert min(gaps_choked) >= HAVE_BATCH_CHOKED_SECONDS - 1e-6, sorted(gaps_choked)[:5]
    assert min(gaps_other) < HAVE_BATCH_CHOKED_SECONDS / 2  # unchoked peers: no such wait
    # Nor much of any: pieces come every ~33 ms (a block at the 500 KB/s download), and their
    # Haves go as they come. With a 0.1 s window 1-2 % of the gaps were shorter than 0.09 s
    # (Haves sent ahead of an Unchoke, or after a quiet spell); now about half are.
    short = sum(gap < 0.09 for gap in gaps_other) / len(gaps_other)
    assert short > 0.25, sorted(gaps_other)
