"""The swarm engine between real nodes on loopback: downloads by id, verified block by block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import attrs
import trio
import trio.lowlevel

from node.node import Node
from node.peer import PeerConnection
from node.realnet import TrioNetwork
from node.swarm.engine import SwarmEngine
from node.swarm.session import Session
from wire.merkle import BLOCK_SIZE
from wire.swarm import (
    EXTENSION_NAME,
    Cancel,
    GetLayer,
    GetManifest,
    HaveByAlias,
    Layer,
    Request,
    decode,
    encode,
)
from wire.swarm import Manifest as ManifestChunk

from .swarm_helpers import (
    add_folder,
    make_folder,
    seed_and_leech,
    seed_folder,
    swarm_node,
    tcp_address,
)


async def test_a_container_is_fetched_by_id_alone(tmp_path: Path) -> None:
    source = tmp_path / "photos"
    sizes = {"a.jpg": 3_000_000, "b/c.txt": 5, "b/d.bin": 200_000, "empty": 0}
    contents = make_folder(source, sizes)
    async with seed_and_leech(tmp_path, source, network_seed=1) as pair:
        with trio.fail_after(30):
            download = await pair.engine.get(pair.container_id, peers=[tcp_address(pair.seed)])
            await download.done.wait()
        assert download.state == "complete", download.error
        record = pair.store.get(pair.container_id)
        assert record is not None and record.state == "complete"
        for name, data in contents.items():
            assert (record.location / name).read_bytes() == data
        assert download.held_bytes == download.total_bytes == sum(map(len, contents.values()))
        # The seed told us what it holds, so its count is not taken for a silent one's.
        assert pair.engine.sessions[pair.seed.node_id].last_told is not None


class Corrupting(SwarmEngine):
    """A peer that serves blocks with one byte flipped (and the honest proof)."""

    async def _block_payload(self, request: Request, session: Session) -> bytes | None:
        payload = await super()._block_payload(request, session)
        if payload is None:
            return None
        damaged = bytearray(payload)
        damaged[-1] ^= 0xFF
        return bytes(damaged)


async def test_a_corrupting_peer_is_banned_and_honest_peers_finish_the_job(tmp_path: Path) -> None:
    source = tmp_path / "data"
    contents = make_folder(source, {"big.bin": 4_000_000})
    async with (
        TrioNetwork(seed=2) as network,
        trio.open_nursery() as nursery,
        swarm_node("liar", tmp_path, network, nursery, engine_class=Corrupting) as (
            liar,
            liar_engine,
            liar_store,
        ),
        # Honest, but not so fast that the liar's first window (two pieces) is all we ask
        # of it before the file is whole: the liar must earn its three strikes.
        swarm_node("honest", tmp_path, network, nursery, upload_limit=2e6) as (
            honest,
            honest_engine,
            honest_store,
        ),
        swarm_node("leech", tmp_path, network, nursery) as (_, engine, store),
    ):
        container_id = await seed_folder(
            source, (liar_store, liar_engine), (honest_store, honest_engine)
        )
        with trio.fail_after(60):
            download = await engine.get(
                container_id, peers=[tcp_address(liar), tcp_address(honest)]
            )
            await download.done.wait()
        assert download.state == "complete"
        assert engine.blocks_rejected >= 3
        assert liar.node_id in engine.banned and liar.node_id not in engine.sessions
        record = store.get(container_id)
        assert record is not None
        assert (record.location / "big.bin").read_bytes() == contents["big.bin"]


async def test_a_corrupting_peer_known_alone_is_asked_until_banned(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """With nobody else to ask, a peer whose blocks fail is asked again until it has earned
    its ban: not left connected, never asked, the download stalled; an honest peer found
    later then brings the file. The file is two pieces, shown whole (no later Have prompts
    a new request), and the pipeline is kept shallow: the first two requests cannot earn
    the three strikes of a ban."""
    monkeypatch.setattr("node.swarm.engine.request_depth", lambda *args, **kwargs: 1)
    source = tmp_path / "data"
    contents = make_folder(source, {"big.bin": 2 * BLOCK_SIZE})
    async with (
        TrioNetwork(seed=4) as network,
        trio.open_nursery() as nursery,
        swarm_node("liar", tmp_path, network, nursery, engine_class=Corrupting) as (
            liar,
            liar_engine,
            liar_store,
        ),
        swarm_node("honest", tmp_path, network, nursery) as (honest, honest_engine, honest_store),
        swarm_node("leech", tmp_path, network, nursery) as (_, engine, store),
    ):
        container_id = await seed_folder(
            source, (liar_store, liar_engine), (honest_store, honest_engine)
        )
        with trio.fail_after(30):
            download = await engine.get(container_id, peers=[tcp_address(liar)])
            while liar.node_id not in engine.banned:
                await trio.lowlevel.checkpoint()
        assert engine.blocks_rejected >= 3 and download.held_bytes == 0
        with trio.fail_after(30):
            download.peers_hint.append(tcp_address(honest))
            await engine.get(container_id, peers=[tcp_address(honest)])
            await download.done.wait()
        assert download.state == "complete"
        record = store.get(container_id)
        assert record is not None
        assert (record.location / "big.bin").read_bytes() == contents["big.bin"]


async def test_a_peer_vanishing_mid_transfer_loses_nothing(tmp_path: Path) -> None:
    source = tmp_path / "data"
    contents = make_folder(source, {"big.bin": 6_000_000, "small.txt": 100})
    async with (
        TrioNetwork(seed=3) as network,
        trio.open_nursery() as nursery,
        swarm_node("first", tmp_path, network, nursery) as (first, first_engine, first_store),
        swarm_node("second", tmp_path, network, nursery) as (second, second_engine, second_store),
        swarm_node("leech", tmp_path, network, nursery) as (_, engine, store),
    ):
        container_id = await add_folder(first_store, source)
        await first_engine.share(container_id)
        download = await engine.get(container_id, peers=[tcp_address(first)])
        with trio.fail_after(30):
            while download.received_bytes < 1_000_000:
                await trio.lowlevel.checkpoint()
        first.stop()  # gone mid-transfer, with requests in flight and pieces half received
        await add_folder(second_store, source)
        await second_engine.share(container_id)
        with trio.fail_after(60):
            download.peers_hint.append(tcp_address(second))
            await engine.get(container_id, peers=[tcp_address(second)])
            await download.done.wait()
        assert download.state == "complete"
        record = store.get(container_id)
        assert record is not None
        assert (record.location / "big.bin").read_bytes() == contents["big.bin"]
        assert engine.blocks_rejected == 0


class VanishingOnLayers(SwarmEngine):
    """A peer that hangs up when asked for a piece layer (gone in the middle of metadata)."""

    async def _layer_part(self, message: GetLayer) -> Layer:
        for session in list(self.sessions.values()):  # the one asking: the leecher
            await session.peer.aclose("gone")
        return await super()._layer_part(message)


async def test_metadata_comes_from_another_peer_when_the_first_leaves(tmp_path: Path) -> None:
    source = tmp_path / "data"
    contents = make_folder(source, {"big.bin": 2_000_000})
    async with (
        TrioNetwork(seed=5) as network,
        trio.open_nursery() as nursery,
        swarm_node("first", tmp_path, network, nursery, engine_class=VanishingOnLayers) as (
            first,
            first_engine,
            first_store,
        ),
        swarm_node("second", tmp_path, network, nursery) as (second, second_engine, second_store),
        swarm_node("leech", tmp_path, network, nursery) as (leech, engine, store),
    ):
        container_id = await add_folder(first_store, source)
        await first_engine.share(container_id)
        download = await engine.get(container_id, peers=[tcp_address(first)])
        with trio.fail_after(30):  # the manifest came, the layer did not, the peer is gone
            while download.state != "layers" or first.node_id in leech.peers:
                await trio.lowlevel.checkpoint()
        await add_folder(second_store, source)
        await second_engine.share(container_id)
        with trio.fail_after(30):
            await engine.get(container_id, peers=[tcp_address(second)])
            await download.done.wait()
        assert download.state == "complete", download.error
        record = store.get(container_id)
        assert record is not None
        assert (record.location / "big.bin").read_bytes() == contents["big.bin"]


class SilentOnMetadata(SwarmEngine):
    """A holder that never answers a metadata request (too busy, in a flash crowd)."""

    async def _manifest_chunk(self, message: GetManifest) -> None:
        return None


async def test_a_holder_slow_with_the_metadata_is_left_for_another(tmp_path: Path) -> None:
    source = tmp_path / "data"
    make_folder(source, {"file.bin": 300_000})
    async with (
        TrioNetwork(seed=6) as network,
        trio.open_nursery() as nursery,
        swarm_node("silent", tmp_path, network, nursery, engine_class=SilentOnMetadata) as (
            silent,
            silent_engine,
            silent_store,
        ),
        swarm_node("helpful", tmp_path, network, nursery) as (helpful, helpful_engine, store2),
        swarm_node("leech", tmp_path, network, nursery) as (_, engine, _store),
    ):
        for store, seeder in ((silent_store, silent_engine), (store2, helpful_engine)):
            container_id = await add_folder(store, source)
            await seeder.share(container_id)
        download = await engine.get(container_id, peers=[tcp_address(silent)])
        with trio.fail_after(10):
            while download.metadata_from != silent.node_id:  # it asked the silent one
                await trio.lowlevel.checkpoint()
        asked = trio.current_time()
        await engine.get(container_id, peers=[tcp_address(helpful)])
        with trio.fail_after(20):
            await download.done.wait()
        # Asked of the other holder after METADATA_PATIENCE_SECONDS, not REQUEST_TIMEOUT's 30.
        assert trio.current_time() - asked < 10
        assert download.state == "complete", download.error


class LosingAManifest(SwarmEngine):
    """A seed whose store loses a container just as its manifest is asked for."""

    lose: bytes = b""

    async def _manifest_chunk(self, message: GetManifest) -> ManifestChunk | None:
        if message.container_id == self.lose and self.store.get(self.lose) is not None:
            await self.network.run_blocking(self.store.remove, self.lose)
        return await super()._manifest_chunk(message)


async def test_a_manifest_the_store_cannot_read_is_refused_and_serving_goes_on(
    tmp_path: Path,
) -> None:
    """Metadata is served by one task for every peer: a store error answers "not held" to
    that request, and the next is served."""
    first, second = tmp_path / "first", tmp_path / "second"
    make_folder(first, {"a.bin": 200_000})
    contents = make_folder(second, {"b.bin": 200_001})
    async with (
        TrioNetwork(seed=10) as network,
        trio.open_nursery() as nursery,
        swarm_node("seed", tmp_path, network, nursery, engine_class=LosingAManifest) as (
            seed,
            seeder,
            seed_store,
        ),
        swarm_node("leech", tmp_path, network, nursery) as (_, engine, store),
    ):
        gone = await add_folder(seed_store, first)
        kept = await add_folder(seed_store, second)
        for container_id in (gone, kept):
            await seeder.share(container_id)
        assert isinstance(seeder, LosingAManifest)
        seeder.lose = gone
        with trio.fail_after(30):
            failing = await engine.get(gone, peers=[tcp_address(seed)])
            while True:  # refused: the seed is not asked again for a while
                if seed.node_id in failing.metadata_failed:
                    break
                await trio.sleep(0.01)
            download = await engine.get(kept, peers=[tcp_address(seed)])
            await download.done.wait()
        assert failing.state == "metadata"
        record = store.get(kept)
        assert record is not None
        assert (record.location / "b.bin").read_bytes() == contents["b.bin"]


class NeverRequesting(SwarmEngine):
    """A leecher that fetches metadata but never asks for a block."""

    async def _fill_requests(self, session: Session) -> None:
        return


Middle = TypeVar("Middle", bound=SwarmEngine)


@attrs.frozen
class SeedMiddleLate(Generic[Middle]):
    """What `seed_middle_late` sets up: the seed, the middle node and its engine (of the
    test's class), the late node's engine and the container they pass along."""

    seed: Node
    middle: Node
    middle_engine: Middle
    late_engine: SwarmEngine
    container_id: bytes


@asynccontextmanager
async def seed_middle_late(
    tmp_path: Path, sizes: dict[str, int], middle_class: type[Middle], *, network_seed: int
) -> AsyncIterator[SeedMiddleLate[Middle]]:
    """A seed sharing a folder of `sizes`, a middle node (its engine a `middle_class`) and a
    late one on loopback, none connected yet."""
    source = tmp_path / "data"
    make_folder(source, sizes)
    async with (
        TrioNetwork(seed=network_seed) as network,
        trio.open_nursery() as nursery,
        swarm_node("seed", tmp_path, network, nursery) as (seed, seeder, seed_store),
        swarm_node("middle", tmp_path, network, nursery, engine_class=middle_class) as (
            middle,
            middle_engine,
            _,
        ),
        swarm_node("late", tmp_path, network, nursery) as (_, late_engine, _),
    ):
        container_id = await seed_folder(source, (seed_store, seeder))
        assert isinstance(middle_engine, middle_class)
        yield SeedMiddleLate(seed, middle, middle_engine, late_engine, container_id)


async def test_a_leecher_serves_the_metadata_before_it_holds_a_piece(tmp_path: Path) -> None:
    sizes = {"big.bin": 1_000_000, "small.txt": 10}
    async with seed_middle_late(tmp_path, sizes, NeverRequesting, network_seed=6) as nodes:
        with trio.fail_after(30):
            first = await nodes.middle_engine.get(
                nodes.container_id, peers=[tcp_address(nodes.seed)]
            )
            while first.state != "transfer":
                await trio.lowlevel.checkpoint()
            # The middle node has the manifest and layers, no piece, and is all the late
            # node knows: the metadata must come from it.
            second = await nodes.late_engine.get(
                nodes.container_id, peers=[tcp_address(nodes.middle)]
            )
            while second.state != "transfer":
                await trio.lowlevel.checkpoint()
        assert first.held_bytes == 0
        assert second.manifest == first.manifest and second.total_bytes == 1_000_010
        assert set(nodes.late_engine.sessions) == {nodes.middle.node_id}


async def test_a_leecher_with_two_seeds_downloads_from_both(tmp_path: Path) -> None:
    """Two seeds of one file each show the leecher a window of pieces: different ones (each
    search begins at a piece drawn at random), or the leecher asks the seed that unchokes it
    first for the pieces both show and the other, showing only those, is left idle."""
    source = tmp_path / "data"
    contents = make_folder(source, {"big.bin": 4_000_000})
    async with (
        TrioNetwork(seed=6) as network,
        trio.open_nursery() as nursery,
        swarm_node("one", tmp_path, network, nursery, upload_limit=1e6) as (
            one,
            one_engine,
            one_store,
        ),
        swarm_node("two", tmp_path, network, nursery, upload_limit=1e6) as (
            two,
            two_engine,
            two_store,
        ),
        swarm_node("leech", tmp_path, network, nursery) as (_, engine, store),
    ):
        container_id = await seed_folder(source, (one_store, one_engine), (two_store, two_engine))
        with trio.fail_after(30):
            download = await engine.get(container_id, peers=[tcp_address(one), tcp_address(two)])
            await download.done.wait()
        assert download.state == "complete"
        sent = [e.sessions[engine.node.node_id].bytes_up for e in (one_engine, two_engine)]
        assert min(sent) >= 1_000_000, sent  # a quarter of the file at least from each
        record = store.get(container_id)
        assert record is not None
        assert (record.location / "big.bin").read_bytes() == contents["big.bin"]


async def test_an_upload_limit_holds_the_seed_to_its_rate(tmp_path: Path) -> None:
    source = tmp_path / "data"
    contents = make_folder(source, {"big.bin": 3_000_000})
    async with seed_and_leech(tmp_path, source, network_seed=7, upload_limit=2_000_000) as pair:
        with trio.fail_after(30):
            download = await pair.engine.get(pair.container_id, peers=[tcp_address(pair.seed)])
            while download.state != "transfer":
                await trio.lowlevel.checkpoint()
            started = trio.current_time()
            await download.done.wait()
        # 3 MB at 2 MB/s after a 100 KB burst: 1.45 s at least (a slow machine only adds).
        assert trio.current_time() - started >= 1.4
        with trio.fail_after(10):  # a seed spreads (more slots) until the leech is done
            while True:
                if not pair.seeder.choker.spreading:
                    break
                await trio.sleep(0.01)
        status = pair.seeder.status()  # the limit is taken as the capacity, not measured
        assert status["upload_capacity"] == 2_000_000 and not status["upload_capacity_measured"]
        assert status["unchoke_slots"] == 2_000_000 // (64 * 1024)
        unlimited = pair.engine.status()  # nothing sent yet: capacity unknown, four slots
        assert unlimited["upload_capacity"] is None and unlimited["unchoke_slots"] == 4
        # The seed told the leech its capacity (the limit) when they connected (`Capacity`).
        assert pair.engine.sessions[pair.seed.node_id].peer_upload_capacity == 2_000_000
        assert pair.seeder.sessions[pair.leech.node_id].peer_upload_capacity is None  # not known
        record = pair.store.get(pair.container_id)
        assert record is not None
        assert (record.location / "big.bin").read_bytes() == contents["big.bin"]


async def test_a_seed_learns_its_upload_capacity_from_what_it_sent(tmp_path: Path) -> None:
    source = tmp_path / "data"
    make_folder(source, {"big.bin": 3_000_000})
    async with seed_and_leech(tmp_path, source, network_seed=8) as pair:
        assert pair.seeder.status()["unchoke_slots"] == 4  # BitTorrent's figure, knowing nothing
        with trio.fail_after(30):
            download = await pair.engine.get(pair.container_id, peers=[tcp_address(pair.seed)])
            await download.done.wait()
            while True:  # the choke round after the leecher's NotInterested reads it
                if pair.seeder.choker.upload_capacity is not None:
                    break
                await trio.sleep(0.05)
        status = pair.seeder.status()
        # 3 MB over loopback within one 5 s window: at least 600 kB/s.
        assert status["upload_capacity_measured"]
        assert status["upload_capacity"] >= 590_000
        assert status["unchoke_slots"] >= 9
        # Once measured, the figure goes to the peers (`Capacity`), and again whenever it
        # moves by a quarter: the leech comes to hold one within a quarter of the seed's.
        session = pair.engine.sessions[pair.seed.node_id]
        with trio.fail_after(10):
            while True:
                told, measured = session.peer_upload_capacity, pair.seeder.choker.upload_capacity
                if told is not None and measured is not None and abs(told - measured) < told / 4:
                    break
                await trio.sleep(0.05)


async def test_a_request_cancelled_while_it_waits_for_the_upload_limit_is_never_sent(
    tmp_path: Path,
) -> None:
    """An endgame duplicate is cancelled when the other copy arrives. At a seed holding to
    an upload limit, the Block asked for waits for its turn; the Cancel must stop it there,
    or the data goes out anyway (most cancelled duplicates in the flash crowd did)."""
    source = tmp_path / "data"
    size = 400_000
    make_folder(source, {"file.bin": size})
    async with seed_and_leech(tmp_path, source, network_seed=9, upload_limit=100_000) as pair:
        with trio.fail_after(30):
            download = await pair.engine.get(pair.container_id, peers=[tcp_address(pair.seed)])
            # Past the pacer's 16 KiB burst, one 16 KiB Block goes every ~0.17 s: just
            # after one arrives, nothing is on the wire and the next waits for its turn.
            while True:
                session = pair.engine.sessions.get(pair.seed.node_id)
                if session is not None and session.bytes_down >= 5 * BLOCK_SIZE:
                    break
                await trio.sleep(0.002)
            queued = [
                (r.root, r.block_index) for r in pair.seeder.sessions[pair.leech.node_id].uploads
            ]
            waiting = [key for key in session.in_flight if key not in queued] or queued[:1]
            root, first = waiting[0]
            file = pair.engine.files[root]
            # Cancel it and ask again at once: the answer must come once, for the new ask.
            await pair.engine._send(session, Cancel(root, first))
            await pair.engine._send(session, Request(root, first, file.height, file.unit_blocks))
            await download.done.wait()
        assert session.bytes_down == size  # nothing came twice


async def test_three_nodes_share_overlapping_containers_one_connection_each(tmp_path: Path) -> None:
    sets = {name: tmp_path / name for name in ("c1", "c2", "c3")}
    for index, folder in enumerate(sets.values()):
        make_folder(folder, {f"file{index}.bin": 500_000 + index})
    async with (
        TrioNetwork(seed=4) as network,
        trio.open_nursery() as nursery,
        swarm_node("one", tmp_path, network, nursery) as (one, one_engine, one_store),
        swarm_node("two", tmp_path, network, nursery) as (two, two_engine, two_store),
        swarm_node("three", tmp_path, network, nursery) as (three, engine, store),
    ):
        ids = {}
        for name in ("c1", "c2"):
            ids[name] = await add_folder(one_store, sets[name])
            await one_engine.share(ids[name])
        for name in ("c2", "c3"):
            ids[name] = await add_folder(two_store, sets[name])
            await two_engine.share(ids[name])
        hints = [tcp_address(one), tcp_address(two)]
        with trio.fail_after(60):
            downloads = [await engine.get(ids[name], peers=hints) for name in ("c1", "c2", "c3")]
            for download in downloads:
                await download.done.wait()
        assert all(d.state == "complete" for d in downloads)
        # One connection per remote node, carrying every container both care about.
        assert set(three.peers) == {one.node_id, two.node_id}
        assert len(engine.sessions) == 2
        # Each seed served what it holds: c1 only from one, c3 only from two.
        assert engine.sessions[one.node_id].bytes_down > 0
        assert engine.sessions[two.node_id].bytes_down > 0
        for name in ("c1", "c2", "c3"):
            record = store.get(ids[name])
            assert record is not None and record.state == "complete", name


class Recording(SwarmEngine):
    """Notes the type of every swarm message it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[str] = []
        self.wants_came = trio.Event()
        """Set by the first Wants."""

    async def _on_message(self, peer: PeerConnection, payload: memoryview) -> None:
        name = type(decode(payload)).__name__
        self.received.append(name)
        if name == "Wants":
            self.wants_came.set()
        await super()._on_message(peer, payload)


async def test_a_peer_asked_before_it_had_the_metadata_answers_once_it_has(
    tmp_path: Path,
) -> None:
    """A want for a container whose metadata we still seek goes to every peer (wire.index),
    not only to those whose index says they hold it: the late node's want reaches the middle
    one before the middle even starts the download, and the middle answers it once its
    metadata is in (a flash crowd's metadata spreads hop by hop this way): the late node,
    which knows no one else, completes."""
    async with seed_middle_late(tmp_path, {"big.bin": 300_000}, Recording, network_seed=8) as nodes:
        with trio.fail_after(30):
            late = await nodes.late_engine.get(
                nodes.container_id, peers=[tcp_address(nodes.middle)]
            )
            with trio.move_on_after(5):
                await nodes.middle_engine.wants_came.wait()
            assert "Wants" in nodes.middle_engine.received, "the late node's want never came"
            assert nodes.middle_engine.local.held_count == 0
            first = await nodes.middle_engine.get(
                nodes.container_id, peers=[tcp_address(nodes.seed)]
            )
            await first.done.wait()
            await late.done.wait()
        assert late.total_bytes == 300_000
        assert set(nodes.late_engine.sessions) == {nodes.middle.node_id}


async def test_haves_name_a_file_by_its_alias_after_one_declaration(tmp_path: Path) -> None:
    source = tmp_path / "data"
    make_folder(source, {"big.bin": 2_000_000})
    async with seed_and_leech(tmp_path, source, network_seed=5, leech_class=Recording) as pair:
        with trio.fail_after(30):
            download = await pair.engine.get(pair.container_id, peers=[tcp_address(pair.seed)])
            await download.done.wait()
        assert download.state == "complete"
        assert isinstance(pair.engine, Recording)
        # The seed shows the file a few pieces at a time: every piece it adds is a Have,
        # and every one names the file by the number declared once.
        received = pair.engine.received
        assert received.count("HaveByAlias") >= 5
        assert received.count("FileAlias") == 1
        assert received.index("FileAlias") < received.index("HaveByAlias")
        assert "Have" not in received
        # Each Have counted towards what the seed is known to hold (the choker reads it).
        shown = received.count("HaveByAlias")
        assert pair.engine.sessions[pair.seed.node_id].pieces_held_total >= shown


class UndeclaredAlias(SwarmEngine):
    """Sends a Have naming a file alias it never declared, and notes how its connections end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_reasons: list[str] = []
        self.disconnected = trio.Event()

    async def _on_connected(self, peer: PeerConnection) -> None:
        await super()._on_connected(peer)
        await peer.send_extension(EXTENSION_NAME, encode(HaveByAlias(7, (0,))))

    async def _on_disconnected(self, peer: PeerConnection) -> None:
        self.close_reasons.append(peer.close_reason or "")
        self.disconnected.set()
        await super()._on_disconnected(peer)


async def test_a_have_naming_an_undeclared_alias_closes_that_connection(tmp_path: Path) -> None:
    source = tmp_path / "data"
    make_folder(source, {"big.bin": 300_000})
    async with seed_and_leech(tmp_path, source, network_seed=6, seed_class=UndeclaredAlias) as pair:
        bad = pair.seeder
        assert isinstance(bad, UndeclaredAlias)
        await pair.engine.get(pair.container_id, peers=[tcp_address(pair.seed)])
        with trio.fail_after(10):
            await bad.disconnected.wait()
        # The receiver said why in its Goodbye (it may dial again later: the peer is a hint).
        assert "file alias 7, never declared" in bad.close_reasons[0]
