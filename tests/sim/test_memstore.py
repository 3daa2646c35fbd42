"""The simulator's in-memory store behaves as the real store: the same scripts run against
`node.store.Store` (SQLite and files) and `simulations.memstore.MemoryStore` side by side.

Where the two cannot overlap it is said: the memory store has no disk, so "the files are
there" for a container added complete means "the registry knows every root", and a name
clash on completion is only with folders of its own containers.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from node.store import AlreadyStored, NotHeld, Store, StoreError, UnknownContainer, UnknownRoot
from node.store.pieces import piece_matches
from simulations.memstore import Content, MemoryStore, VirtualFile
from wire.container import Manifest
from wire.merkle import BLOCK_SIZE

PIECE = 2 * BLOCK_SIZE

STORES = ["disk", "memory"]


class Side:
    """One store under test, with what it needs to add containers complete."""

    def __init__(self, kind: str, tmp_path: Path, content: Content) -> None:
        self.kind = kind
        self.base = tmp_path / kind
        self.content = content
        self.store: Any = Store(self.base / "data") if kind == "disk" else MemoryStore(content)

    def file(self, label: object, length: int) -> VirtualFile:
        return self.content.generate(label, length)

    def container(
        self, name: str, files: dict[str, VirtualFile | None], piece_length: int = PIECE
    ) -> tuple[Manifest, dict[bytes, list[bytes]]]:
        return self.content.container(name, list(files.items()), piece_length)

    def add_complete(
        self,
        name: str,
        files: dict[str, VirtualFile | None],
        piece_length: int = PIECE,
        now: float = 0,
    ) -> Manifest:
        """The user's folder `name` holding `files`, added in place."""
        manifest, layers = self.container(name, files, piece_length)
        folder = self.base / "user" / name
        if self.kind == "disk":
            for path, file in files.items():
                target = folder.joinpath(*path.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(file.data if file is not None else b"")
        self.store.add_container(manifest, layers, folder, complete=True, now=now)
        return manifest

    def add_download(
        self,
        name: str,
        files: dict[str, VirtualFile | None],
        piece_length: int = PIECE,
        now: float = 0,
    ) -> Manifest:
        manifest, layers = self.container(name, files, piece_length)
        self.store.add_container(manifest, layers, self.downloads, complete=False, now=now)
        return manifest

    @property
    def downloads(self) -> Path:
        return self.base / "dl"


@pytest.fixture(params=STORES)
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Side]:
    made = Side(request.param, tmp_path, Content(seed=7))
    yield made
    made.store.close()


def pieces_of(data: bytes, piece_length: int = PIECE) -> list[bytes]:
    return [data[i : i + piece_length] for i in range(0, len(data), piece_length)]


def write_all(store: Any, file: VirtualFile, piece_length: int = PIECE) -> Any:
    return store.write_pieces(
        [(file.root, i, p) for i, p in enumerate(pieces_of(file.data, piece_length))],
        piece_length=piece_length,
    )


# -- the same behaviours on both stores --------------------------------------------------


def test_a_download_from_empty_to_complete(side: Side) -> None:
    store = side.store
    file = side.file("a", 3 * PIECE + 100)
    manifest = side.add_download("set", {"d/a.bin": file, "empty": None}, now=5)
    record = store.get(manifest.id)
    assert record is not None and record.state == "partial"
    assert record.name == "set" and record.piece_length == PIECE
    assert record.total_length == file.length and record.added_at == 5.0
    assert record.target_dir == side.downloads.absolute()
    assert (
        record.location
        == side.downloads.absolute() / ".kinswarm-partial" / manifest.id.hex() / "set"
    )
    assert store.manifest(manifest.id) == manifest
    assert store.list_containers() == [record]
    held = store.held(file.root)
    assert (held.piece_length, held.count, held.bits, len(held)) == (PIECE, 4, b"\x00", 0)
    assert not store.is_complete(manifest.id)
    assert store.piece_layer(file.root) == file.tree.piece_layer(PIECE)

    good = pieces_of(file.data)
    spoiled = bytearray(good[1])
    spoiled[5] ^= 1
    assert store.write_piece(file.root, 1, bytes(spoiled)).refused == ((file.root, 1),)
    assert store.write_piece(file.root, 1, good[1][:-1]).refused  # wrong length
    assert store.write_piece(file.root, 2, good[1]).refused  # right bytes, wrong place
    assert store.write_piece(file.root, 9, good[1]).refused  # outside the file
    assert len(store.held(file.root)) == 0
    with pytest.raises(UnknownRoot):
        store.write_piece(bytes(32), 0, good[0])
    with pytest.raises(NotHeld):
        store.read_piece(file.root, 0)

    result = store.write_pieces([(file.root, 3, good[3]), (file.root, 1, bytes(spoiled))])
    assert result.refused == ((file.root, 1),) and result.completed == ()
    assert list(store.held(file.root)) == [3]
    assert store.held(file.root).bits == b"\x10"
    assert store.read_piece(file.root, 3) == good[3]  # the short last piece
    with pytest.raises(IndexError):
        store.read_piece(file.root, 4)

    result = write_all(store, file)
    assert result.ok and result.completed == (manifest.id,)
    assert write_all(store, file).completed == ()  # nothing new landed
    final = store.get(manifest.id)
    assert final is not None and final.state == "complete"
    assert final.location == side.downloads.absolute() / "set"
    assert store.is_complete(manifest.id) and store.held(file.root).complete
    assert store.read_piece(file.root, 0) == good[0]


def test_unknown_containers_and_roots(side: Side) -> None:
    store = side.store
    assert store.get(bytes(32)) is None
    with pytest.raises(UnknownContainer):
        store.is_complete(bytes(32))
    with pytest.raises(UnknownContainer):
        store.manifest(bytes(32))
    for call in (store.held, store.piece_layer):
        with pytest.raises(UnknownRoot):
            call(bytes(32))
    with pytest.raises(UnknownRoot):
        store.read_piece(bytes(32), 0)


def test_adding_twice_and_bad_layers_are_refused(side: Side) -> None:
    store = side.store
    file = side.file("b", 5 * PIECE)
    manifest = side.add_download("twice", {"f": file})
    _, layers = side.container("twice", {"f": file})
    with pytest.raises(AlreadyStored):
        store.add_container(manifest, layers, side.downloads, complete=False, now=1)
    other = side.file("c", 5 * PIECE)
    wrong, wrong_layers = side.container("wrong", {"f": other})
    broken = {other.root: [bytes(32), *wrong_layers[other.root][1:]]}
    with pytest.raises(StoreError, match="does not match the file root"):
        store.add_container(wrong, broken, side.downloads, complete=False, now=0)
    with pytest.raises(StoreError, match="missing"):
        store.add_container(wrong, {}, side.downloads, complete=False, now=0)
    assert [r.id for r in store.list_containers()] == [manifest.id]


def test_containers_sharing_a_file_share_its_held_state(side: Side) -> None:
    store = side.store
    shared, only_a, only_b = (
        side.file("s", 3 * PIECE),
        side.file("oa", PIECE),
        side.file("ob", 1000),
    )
    a = side.add_download("A", {"shared": shared, "a": only_a}, now=0)
    b = side.add_download("B", {"x/shared": shared, "b": only_b}, now=1)
    assert [r.id for r in store.list_containers()] == [a.id, b.id]
    assert store.write_piece(shared.root, 1, pieces_of(shared.data)[1]).ok
    assert list(store.held(shared.root)) == [1]
    write_all(store, shared)
    result = store.write_piece(only_a.root, 0, only_a.data)
    assert result.completed == (a.id,)
    record_a, record_b = store.get(a.id), store.get(b.id)
    assert record_a.state == "complete" and record_a.location == side.downloads.absolute() / "A"
    assert record_b.state == "partial" and store.held(shared.root).complete
    assert store.write_piece(only_b.root, 0, only_b.data).completed == (b.id,)


def test_a_new_download_gets_the_pieces_already_held(side: Side) -> None:
    store = side.store
    shared, extra = side.file("sh", 4 * PIECE + 1), side.file("ex", 2 * PIECE)
    side.add_complete("kept", {"shared": shared})
    wanted = side.add_download("wanted", {"s": shared, "e": extra}, now=1)
    assert store.held(shared.root).complete
    assert store.held(extra.root).count == 2 and len(store.held(extra.root)) == 0
    assert write_all(store, extra).completed == (wanted.id,)
    # a download made only of files we hold completes at once
    manifest, layers = side.container("only", {"copy": shared})
    done = store.add_container(manifest, layers, side.downloads, complete=False, now=2)
    assert done.state == "complete" and done.location == side.downloads.absolute() / "only"


def test_adding_a_complete_copy_fills_a_download(side: Side) -> None:
    store = side.store
    file = side.file("fill", 3 * PIECE)
    download = side.add_download("dl", {"f": file})
    store.write_piece(file.root, 0, pieces_of(file.data)[0])
    side.add_complete("mine", {"g": file}, now=1)
    record = store.get(download.id)
    assert record is not None and record.state == "complete"
    assert record.location == side.downloads.absolute() / "dl"


def test_one_file_in_containers_of_different_piece_lengths(side: Side) -> None:
    store = side.store
    file = side.file("pl", 9 * BLOCK_SIZE + 77)
    root, data = file.root, file.data
    big = 4 * BLOCK_SIZE
    coarse = side.add_download("coarse", {"f": file}, piece_length=big, now=0)
    assert store.write_piece(root, 0, data[:big], piece_length=big).ok
    fine = side.add_download("fine", {"f": file}, piece_length=BLOCK_SIZE, now=1)
    assert store.held(root).piece_length == BLOCK_SIZE
    assert list(store.held(root)) == [0, 1, 2, 3]  # nothing verified was lost
    assert list(store.held(root, big)) == [0]
    assert store.piece_layer(root, big) == file.tree.piece_layer(big)
    assert store.piece_layer(root) == file.tree.piece_layer(BLOCK_SIZE)
    for index in (4, 5, 6):
        assert store.write_piece(root, index, pieces_of(data, BLOCK_SIZE)[index]).ok
    assert list(store.held(root, big)) == [0]
    assert store.write_piece(root, 7, pieces_of(data, BLOCK_SIZE)[7]).ok
    assert list(store.held(root, big)) == [0, 1]
    assert store.read_piece(root, 1, piece_length=big) == data[big : 2 * big]
    with pytest.raises(NotHeld):
        store.read_piece(root, 2, piece_length=big)
    with pytest.raises(ValueError, match="finer"):
        store.write_piece(root, 0, data[: BLOCK_SIZE // 2], piece_length=BLOCK_SIZE // 2)
    result = store.write_piece(root, 2, data[2 * big :], piece_length=big)
    assert sorted(result.completed) == sorted([coarse.id, fine.id])


def test_finished_downloads_of_the_same_name_move_beside_each_other(side: Side) -> None:
    store = side.store
    one, two = side.file("n1", PIECE), side.file("n2", PIECE)
    first = side.add_download("set", {"f": one}, now=0)
    second = side.add_download("set", {"g": two}, now=1)
    assert write_all(store, two).completed == (second.id,)
    assert write_all(store, one).completed == (first.id,)
    assert store.get(second.id).location == side.downloads.absolute() / "set"
    assert store.get(first.id).location == side.downloads.absolute() / "set (2)"


def test_a_container_of_empty_files_is_complete_at_once(side: Side) -> None:
    manifest, layers = side.container("nothing", {"a": None, "b/c": None})
    record = side.store.add_container(manifest, layers, side.downloads, complete=False, now=0)
    assert record.state == "complete" and side.store.is_complete(manifest.id)


def test_a_complete_container_needs_its_files(side: Side) -> None:
    """Disk: the files must be in the folder. Memory: the registry must know the bytes."""
    stranger = MemoryStore(Content(seed=99))  # a registry that never saw this file
    file = side.file("missing", 1000)
    manifest, layers = side.container("missing", {"a": file})
    store = side.store if side.kind == "disk" else stranger
    with pytest.raises(StoreError, match="No such file"):
        store.add_container(manifest, layers, side.base / "nowhere", complete=True, now=0)
    assert store.list_containers() == []


def test_random_writes_leave_both_stores_in_the_same_state(tmp_path: Path) -> None:
    """Random batches of good, corrupt, misplaced and duplicate pieces at two piece lengths:
    every result, held bitfield and completion is the same on disk and in memory."""
    content = Content(seed=3)
    sides = [Side(kind, tmp_path, content) for kind in STORES]
    rng = random.Random(11)
    files = [content.generate(n, rng.randrange(1, 12 * BLOCK_SIZE)) for n in range(4)]
    try:
        for number, file in enumerate(files):
            for side in sides:
                side.add_download(
                    f"c{number}", {"f": file, "g": files[(number + 1) % 4]}, now=number
                )
        completions = []
        for _ in range(30):
            batch = []
            piece_length = rng.choice([PIECE, 2 * PIECE])
            for _ in range(rng.randrange(1, 6)):
                file = rng.choice(files)
                pieces = pieces_of(file.data, piece_length)
                index = rng.randrange(len(pieces) + 1)
                data = pieces[index % len(pieces)]
                if rng.random() < 0.3:
                    spoiled = bytearray(data)
                    spoiled[rng.randrange(len(data))] ^= 0x40
                    data = bytes(spoiled)
                batch.append((file.root, index, data))
            results = [side.store.write_pieces(batch, piece_length=piece_length) for side in sides]
            assert results[0] == results[1]
            for file in files:
                held = [side.store.held(file.root) for side in sides]
                assert held[0] == held[1]
                assert held[0] == sides[0].store.held(file.root, PIECE)
            listed = [
                [_relative(r, side.base.absolute()) for r in side.store.list_containers()]
                for side in sides
            ]
            assert listed[0] == listed[1]
            completions.append(sum(r.state == "complete" for r in listed[0]))
        assert completions[0] < 4 and completions[-1] == 4, completions  # both states seen
    finally:
        for side in sides:
            side.store.close()


def _relative(record: Any, base: Path) -> Any:
    return attrs.evolve(
        record,
        location=record.location.relative_to(base),
        target_dir=record.target_dir.relative_to(base),
    )


# -- memory only ---------------------------------------------------------------------------


def test_content_is_a_pure_function_of_seed_and_label() -> None:
    one, two = Content(seed=1), Content(seed=1)
    assert one.generate("x", 50_000).data == two.generate("x", 50_000).data
    assert one.generate("x", 50_000).data != Content(seed=2).generate("x", 50_000).data
    assert one.generate("x", 50_000) is one.generate("x", 50_000)  # materialised once
    assert one.generate("y", 50_000).root != one.generate("x", 50_000).root


def test_every_node_shares_one_copy_of_bytes_and_layers() -> None:
    content = Content(seed=4)
    file = content.generate("big", 40 * PIECE)
    manifest, layers = content.container("big", [("f", file)], PIECE)
    stores = [MemoryStore(content) for _ in range(3)]
    stores[0].add_container(manifest, layers, Path("/seed"), complete=True, now=0)
    for store in stores[1:]:
        store.add_container(
            manifest, {file.root: list(layers[file.root])}, Path("/dl"), complete=False, now=0
        )
    assert all(s._roots[file.root].layer is content.layer(file.root, PIECE) for s in stores)
    piece = stores[0].read_piece(file.root, 7)
    assert stores[1].write_piece(file.root, 7, piece).ok
    assert stores[1].read_piece(file.root, 7) == piece


@pytest.mark.parametrize("verify", ["compare", "hash"])
def test_both_verification_modes_refuse_garbage(verify: str) -> None:
    content = Content(seed=5)
    file = content.generate("v", 8 * PIECE)
    manifest, layers = content.container("v", [("f", file)], PIECE)
    store = MemoryStore(content, verify=verify)  # type: ignore[arg-type]
    store.add_container(manifest, layers, Path("/dl"), complete=False, now=0)
    pieces = pieces_of(file.data)
    for index, piece in enumerate(pieces):
        spoiled = bytearray(piece)
        spoiled[-1] ^= 1
        assert store.write_piece(file.root, index, bytes(spoiled)).refused
        assert store.write_piece(file.root, (index + 1) % 8, piece).refused
    assert len(store.held(file.root)) == 0
    assert write_all(store, file).completed == (manifest.id,)
    if verify == "compare":
        assert store.pieces_compared > 0 and store.pieces_hashed == 0
    else:
        assert store.pieces_hashed > 0 and store.pieces_compared == 0


def test_a_root_the_registry_lacks_is_verified_by_hashing() -> None:
    """A download of bytes nobody in the simulation has (its manifest came from elsewhere):
    there is nothing to compare with, so the piece is hashed against the layer."""
    other = Content(seed=6)
    file = other.generate("elsewhere", 3 * PIECE)
    manifest, layers = other.container("elsewhere", [("f", file)], PIECE)
    store = MemoryStore(Content(seed=6000))
    store.add_container(manifest, layers, Path("/dl"), complete=False, now=0)
    assert store.write_piece(file.root, 0, pieces_of(file.data)[0]).ok
    assert store.pieces_hashed == 1
    assert piece_matches(pieces_of(file.data)[0], 0, file.length, PIECE, layers[file.root])


def test_comparing_costs_less_than_hashing() -> None:
    """The cost of verification per 16 KiB piece in each mode (printed with -s)."""
    content = Content(seed=8)
    file = content.generate("cost", 256 * BLOCK_SIZE)
    manifest, layers = content.container("cost", [("f", file)], BLOCK_SIZE)
    timings = {}
    for verify in ("compare", "hash"):
        best = float("inf")
        for _ in range(3):
            store = MemoryStore(content, verify=verify)  # type: ignore[arg-type]
            store.add_container(manifest, layers, Path("/dl"), complete=False, now=0)
            started = time.perf_counter()
            assert write_all(store, file, BLOCK_SIZE).ok
            best = min(best, time.perf_counter() - started)
        timings[verify] = best / 256
    print({k: f"{v * 1e6:.1f} µs/piece" for k, v in timings.items()})
    assert timings["compare"] < timings["hash"]
