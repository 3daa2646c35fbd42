"""The store: names, shared files, piece verification, serving, verify, moves, recovery,
schema. The crash-safety proof with real processes is `test_store_crash.py`."""

from __future__ import annotations

import base64
import os
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store import (
    SCHEMA_VERSION,
    AlreadyStored,
    NewContainer,
    NotHeld,
    SchemaError,
    Store,
    StoreError,
    UnknownRoot,
    WouldBlock,
    url_name,
)
from node.store import schema as store_schema
from node.store.index import BY_ID, BY_NAME, BY_ROOT
from node.store.pieces import (
    coarser_bits,
    finer_bits,
    full_bits,
    piece_matches,
    stored_spans,
)
from tests.node.store_crash_helper import build_container
from wire.container import Manifest, Metadata, UrlSource
from wire.merkle import BLOCK_SIZE, MerkleTree

PIECE = 2 * BLOCK_SIZE


def data(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


def on_disk(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    """Write a container's files into `folder/name` (a user's folder) and return it."""
    top = folder / name
    for path, content in files.items():
        target = top.joinpath(*path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return top


def pieces_of(content: bytes, piece_length: int = PIECE) -> list[bytes]:
    return [content[i : i + piece_length] for i in range(0, len(content), piece_length)]


def root_of(content: bytes) -> bytes:
    return MerkleTree.from_data(content).root


def write_all(store: Store, content: bytes, piece_length: int = PIECE) -> None:
    root = root_of(content)
    result = store.write_pieces(
        [(root, i, p) for i, p in enumerate(pieces_of(content, piece_length))],
        piece_length=piece_length,
    )
    assert result.ok


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "data") as opened:
        yield opened


# -- schema -------------------------------------------------------------------------------


def test_schema_version_and_pragmas(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        db = store._index.db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with Store(tmp_path) as again:  # reopening keeps the version, runs no migration
        assert again.schema_version == SCHEMA_VERSION


def test_migration_hook_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    connection = store_schema.connect(tmp_path / "index.sqlite3")
    calls: list[int] = []

    def add_column(db: sqlite3.Connection) -> None:
        calls.append(1)
        db.execute("ALTER TABLE containers ADD COLUMN note TEXT")

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE containers ADD COLUMN half_done TEXT")
        raise RuntimeError("migration bug")

    with pytest.raises(SchemaError, match="no migration"):
        store_schema.migrate(connection, target=SCHEMA_VERSION + 1, migrations={})
    with pytest.raises(RuntimeError):
        store_schema.migrate(
            connection, target=SCHEMA_VERSION + 1, migrations={SCHEMA_VERSION: broken}
        )
    assert store_schema.schema_version(connection) == SCHEMA_VERSION  # rolled back whole
    columns = [row[1] for row in connection.execute("PRAGMA table_info(containers)")]
    assert "half_done" not in columns
    found = store_schema.migrate(
        connection, target=SCHEMA_VERSION + 1, migrations={SCHEMA_VERSION: add_column}
    )
    assert found == SCHEMA_VERSION and calls == [1]
    assert store_schema.schema_version(connection) == SCHEMA_VERSION + 1
    connection.close()
    with pytest.raises(SchemaError, match="newer kinswarm"):
        Store(tmp_path)


def test_a_version_1_index_gains_the_name_index(tmp_path: Path) -> None:
    Store(tmp_path).close()
    connection = store_schema.connect(tmp_path / "index.sqlite3")
    connection.execute("DROP INDEX containers_name")
    connection.execute("UPDATE schema_version SET version = 1")
    connection.close()
    with Store(tmp_path) as store:
        assert store.schema_version == SCHEMA_VERSION
    connection = store_schema.connect(tmp_path / "index.sqlite3")
    plan = connection.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM containers WHERE name = 'x'"
    ).fetchall()
    connection.close()
    assert any("containers_name" in str(row) for row in plan)


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "index.sqlite3")
    connection.execute("CREATE TABLE someone_elses (x)")
    connection.commit()
    connection.close()
    with pytest.raises(SchemaError, match="not kinswarm"):
        Store(tmp_path)


def test_a_second_store_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path), pytest.raises(StoreError, match="in use"):
        Store(tmp_path)


# -- names --------------------------------------------------------------------------------


def test_resolve_every_name_kind(tmp_path: Path, store: Store) -> None:
    shared = data(1, 50_000)
    first_files = {"shared.bin": shared, "one.txt": b"one"}
    first, first_layers = build_container("first", first_files, PIECE)
    second, second_layers = build_container("second", {"shared.bin": shared}, PIECE)
    btih = bytes(range(20))
    btmh = bytes(range(32))
    url = "https://example.org/data/set.tar?x=1"
    store.add_container(
        first,
        first_layers,
        on_disk(tmp_path, "first", first_files),
        complete=True,
        now=1.0,
        names={f"btih:{btih.hex()}": None, f"btmh:1220{btmh.hex()}": None, url: None},
    )
    store.add_container(
        second,
        second_layers,
        on_disk(tmp_path, "second", {"shared.bin": shared}),
        complete=True,
        now=2.0,
    )
    a, b = first.id, second.id
    assert store.resolve(a.hex()) == [a]
    assert store.resolve(a.hex().upper()) == [a]
    assert store.resolve(f" ks:{a.hex()} ") == [a]
    assert sorted(store.resolve(root_of(shared).hex())) == sorted([a, b])
    assert store.resolve(root_of(b"one").hex()) == [a]
    assert store.resolve(f"btih:{btih.hex().upper()}") == [a]
    assert store.resolve("btih:" + base64.b32encode(btih).decode()) == [a]
    assert store.resolve(f"btmh:1220{btmh.hex()}") == [a]
    assert store.resolve(url) == [a]
    assert store.resolve(url + "&y=2") == []  # URLs are exact
    assert store.resolve(bytes(32).hex()) == []
    assert store.resolve(f"btih:{bytes(20).hex()}") == []
    # a ks: name stored for another container (say, a publisher's pointer) resolves too
    alias = bytes([7]) * 32
    store.add_name(b, f"ks:{alias.hex()}")
    assert store.resolve(f"ks:{alias.hex()}") == [b]
    for bad in ("", "hello", "btih:12", "btmh:1111" + "00" * 32, "ks:zz", a.hex()[:-1]):
        with pytest.raises(ValueError):
            store.resolve(bad)


def test_names_carry_extra_facts(tmp_path: Path, store: Store) -> None:
    files = {"f": b"x" * 100}
    manifest, layers = build_container("c", files, PIECE)
    store.add_container(manifest, layers, on_disk(tmp_path, "c", files), complete=True, now=0)
    source = UrlSource(url="https://h/c.tar", last_modified="Tue, 01 Jul 2025", etag='"e1"')
    name, extra = url_name(source)
    store.add_name(manifest.id, name, extra)
    assert store.names_of(manifest.id) == {
        "https://h/c.tar": {"last_modified": "Tue, 01 Jul 2025", "etag": '"e1"'}
    }
    store.add_name(manifest.id, name, {"etag": '"e2"', "length": 100})  # updated in place
    assert store.names_of(manifest.id)[name] == {"etag": '"e2"', "length": 100}
    with pytest.raises(ValueError, match="not a name to add"):
        store.add_name(manifest.id, manifest.id.hex())
    with pytest.raises(StoreError):
        store.add_name(bytes(32), name)


def test_container_record_and_metadata(tmp_path: Path, store: Store) -> None:
    files = {"dir/a": data(2, 40_000), "empty": b""}
    manifest, layers = build_container("rec", files, PIECE)
    folder = on_disk(tmp_path, "rec", files)
    meta = Metadata(title="A record", tags=("x", "y"))
    record = store.add_container(manifest, layers, folder, complete=True, now=12.5, metadata=meta)
    assert record.metadata == meta and record.added_at == 12.5
    assert record.location == folder.absolute() and record.state == "complete"
    assert record.total_length == 40_000 and record.piece_length == PIECE
    assert store.manifest(manifest.id) == manifest
    assert [f.path for f in store.files_of(manifest.id)] == [("dir", "a"), ("empty",)]
    assert store.files_of(manifest.id)[0].disk_path == folder / "dir" / "a"
    assert store.list_containers() == [record]
    with pytest.raises(AlreadyStored):
        store.add_container(manifest, layers, folder, complete=True, now=13)


def test_sharing_again_adds_the_new_urls_as_names(tmp_path: Path, store: Store) -> None:
    """`kinswarm add` of a folder already added (with or without a node): the same record,
    said to be no new one, and the URLs given this time find it too."""
    files = {"a": data(3, 20_000)}
    manifest, layers = build_container("again", files, PIECE)
    folder = on_disk(tmp_path, "again", files)
    first, new = store.share_in_place(
        manifest, layers, folder, now=1, urls=["https://example.org/one.tar"]
    )
    assert new and first.id == manifest.id
    again, new = store.share_in_place(
        manifest, layers, folder, now=2, urls=["https://example.org/two.tar"]
    )
    assert not new and again == first
    for url in ("https://example.org/one.tar", "https://example.org/two.tar"):
        assert store.resolve(url) == [manifest.id]


def test_adding_in_place_checks_the_files_are_there(tmp_path: Path, store: Store) -> None:
    files = {"a": data(3, 1000)}
    manifest, layers = build_container("missing", files, PIECE)
    with pytest.raises(StoreError, match="No such file"):
        store.add_container(manifest, layers, tmp_path / "nowhere", complete=True, now=0)
    folder = on_disk(tmp_path, "short", {"a": b"short"})
    with pytest.raises(StoreError, match="expected a file of 1000 bytes"):
        store.add_container(manifest, layers, folder, complete=True, now=0)
    assert store.list_containers() == []


def test_a_wrong_piece_layer_is_refused(tmp_path: Path, store: Store) -> None:
    content = data(4, 5 * PIECE)
    manifest, layers = build_container("bad layer", {"a": content}, PIECE)
    root = root_of(content)
    broken = {root: [bytes(32), *layers[root][1:]]}
    with pytest.raises(StoreError, match="does not match the file root"):
        store.add_container(manifest, broken, tmp_path / "dl", complete=False, now=0)
    with pytest.raises(StoreError, match="missing"):
        store.add_container(manifest, {}, tmp_path / "dl", complete=False, now=0)


# -- pieces -------------------------------------------------------------------------------


def test_bad_pieces_are_refused_and_never_marked(tmp_path: Path, store: Store) -> None:
    content = data(5, 3 * PIECE + 100)
    manifest, layers = build_container("dl", {"a.bin": content}, PIECE)
    record = store.add_container(manifest, layers, tmp_path / "dl", complete=False, now=0)
    root = root_of(content)
    good = pieces_of(content)
    spoiled = bytearray(good[1])
    spoiled[5] ^= 1
    result = store.write_piece(root, 1, bytes(spoiled))
    assert result.refused == ((root, 1),) and not result.ok
    assert store.write_piece(root, 1, good[1][:-1]).refused  # wrong length
    assert store.write_piece(root, 2, good[1]).refused  # right bytes, wrong place
    assert store.write_piece(root, 9, good[1]).refused  # outside the file
    assert len(store.held(root)) == 0
    assert (record.location / "a.bin").read_bytes() == bytes(len(content))  # nothing written
    # a batch: the good piece goes in, the bad one does not
    result = store.write_pieces([(root, 0, good[0]), (root, 1, bytes(spoiled))])
    assert result.refused == ((root, 1),)
    assert list(store.held(root)) == [0]
    with pytest.raises(UnknownRoot):
        store.write_piece(bytes(32), 0, good[0])


def test_read_block_refuses_pieces_not_held(tmp_path: Path, store: Store) -> None:
    content = data(6, 2 * PIECE + BLOCK_SIZE + 10)  # last piece: one full block and 10 bytes
    manifest, layers = build_container("dl", {"a.bin": content}, PIECE)
    store.add_container(manifest, layers, tmp_path / "dl", complete=False, now=0)
    root = root_of(content)
    with pytest.raises(NotHeld):
        store.read_block(root, 0)
    assert store.write_piece(root, 2, content[2 * PIECE :]).ok
    assert store.read_block(root, 4) == content[4 * BLOCK_SIZE : 5 * BLOCK_SIZE]
    assert store.read_block(root, 5) == content[5 * BLOCK_SIZE :]  # short last block
    assert store.read_piece(root, 2) == content[2 * PIECE :]
    for block in (0, 1, 2, 3):
        with pytest.raises(NotHeld):
            store.read_block(root, block)
    with pytest.raises(NotHeld):
        store.read_piece(root, 0)
    with pytest.raises(IndexError):
        store.read_block(root, 6)


def test_a_piece_in_memory_is_read_without_waiting_and_one_on_disk_is_refused(
    tmp_path: Path, store: Store
) -> None:
    """`read_piece_nowait` is for the event loop: the same bytes as `read_piece` when the OS
    holds them; WouldBlock (never a wait) when the store is busy or the bytes are on disk."""
    content = data(8, 3 * PIECE)
    manifest, layers = build_container("warm", {"w.bin": content}, PIECE)
    record = store.add_container(manifest, layers, tmp_path / "dl", complete=False, now=0)
    root = root_of(content)
    assert store.write_piece(root, 1, pieces_of(content)[1]).ok
    with pytest.raises(NotHeld):
        store.read_piece_nowait(root, 0)
    assert store.read_piece_nowait(root, 1) == pieces_of(content)[1]

    held, release = threading.Event(), threading.Event()

    def hold_the_store() -> None:
        with store._lock:  # another thread in the middle of a call
            held.set()
            release.wait(10)

    worker = threading.Thread(target=hold_the_store)
    worker.start()
    try:
        assert held.wait(10)
        with pytest.raises(WouldBlock, match="busy"):
            store.read_piece_nowait(root, 1)
    finally:
        release.set()
        worker.join()

    path = record.location / "w.bin"
    descriptor = os.open(path, os.O_RDONLY)
    try:  # ask the OS to drop the file's (clean, synced) pages from memory
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)
    try:
        store.read_piece_nowait(root, 1)
    except WouldBlock:
        pass
    else:
        pytest.skip("this filesystem keeps file pages in memory (tmpfs?)")
    assert store.read_piece(root, 1) == pieces_of(content)[1]  # the waiting read still works


def test_a_deleted_download_file_is_never_served_as_zeros(tmp_path: Path, store: Store) -> None:
    content = data(21, 4 * PIECE)
    manifest, layers = build_container("gone", {"f": content}, PIECE)
    record = store.add_container(manifest, layers, tmp_path / "dl", complete=False, now=0)
    root = root_of(content)
    assert store.write_piece(root, 0, pieces_of(content)[0]).ok
    (record.location / "f").unlink()  # the user cleans up the partial folder
    with pytest.raises(StoreError, match="run verify"):
        store.read_block(root, 0)  # no copy: refused, not zeros
    assert store.write_piece(root, 1, pieces_of(content)[1]).ok  # recreates the file
    assert list(store.held(root)) == [1]  # piece 0 went with the file
    with pytest.raises(NotHeld):
        store.read_block(root, 0)
    assert store.read_piece(root, 1) == pieces_of(content)[1]


def test_containers_sharing_a_file_share_its_held_state(tmp_path: Path, store: Store) -> None:
    shared, only_a, only_b = data(7, 3 * PIECE), data(8, PIECE), data(9, 1000)
    a, a_layers = build_container("A", {"shared": shared, "a": only_a}, PIECE)
    b, b_layers = build_container("B", {"x/shared": shared, "b": only_b}, PIECE)
    downloads = tmp_path / "dl"
    store.add_container(a, a_layers, downloads, complete=False, now=0)
    store.add_container(b, b_layers, downloads, complete=False, now=1)
    root = root_of(shared)
    assert len(store.copies(root)) == 2
    assert store.write_piece(root, 1, pieces_of(shared)[1]).ok
    for copy in store.copies(root):  # written once, into both folders
        assert copy.read_bytes()[PIECE : 2 * PIECE] == pieces_of(shared)[1]
    write_all(store, shared)
    result = store.write_piece(root_of(only_a), 0, only_a)
    assert result.completed == (a.id,)
    record_a, record_b = store.get(a.id), store.get(b.id)
    assert record_a is not None and record_b is not None
    assert record_a.state == "complete" and record_a.location == downloads / "A"
    assert record_b.state == "partial" and store.held(root).complete
    result = store.write_piece(root_of(only_b), 0, only_b)
    assert result.completed == (b.id,)
    assert (downloads / "B" / "x" / "shared").read_bytes() == shared
    assert (downloads / "A" / "shared").read_bytes() == shared


def test_a_new_download_gets_the_pieces_already_held(tmp_path: Path, store: Store) -> None:
    shared, extra = data(10, 4 * PIECE + 1), data(11, 2 * PIECE)
    user = {"shared": shared}
    kept, kept_layers = build_container("kept", user, PIECE)
    store.add_container(kept, kept_layers, on_disk(tmp_path, "kept", user), complete=True, now=0)
    wanted, wanted_layers = build_container("wanted", {"s": shared, "e": extra}, PIECE)
    downloads = tmp_path / "dl"
    record = store.add_container(wanted, wanted_layers, downloads, complete=False, now=1)
    assert (record.location / "s").read_bytes() == shared  # copied (and verified) at add
    assert store.held(root_of(extra)).count == 2 and len(store.held(root_of(extra))) == 0
    write_all(store, extra)
    final = store.get(wanted.id)
    assert final is not None and final.state == "complete"
    assert (downloads / "wanted" / "s").read_bytes() == shared
    # a download made only of files we hold completes at once
    only, only_layers = build_container("only", {"copy": shared}, PIECE)
    done = store.add_container(only, only_layers, downloads, complete=False, now=2)
    assert done.state == "complete" and (done.location / "copy").read_bytes() == shared


def test_adding_a_complete_copy_fills_a_download(tmp_path: Path, store: Store) -> None:
    content = data(12, 3 * PIECE)
    dl, dl_layers = build_container("dl", {"f": content}, PIECE)
    store.add_container(dl, dl_layers, tmp_path / "downloads", complete=False, now=0)
    store.write_piece(root_of(content), 0, pieces_of(content)[0])
    mine, mine_layers = build_container("mine", {"g": content}, PIECE)
    folder = on_disk(tmp_path, "mine", {"g": content})
    store.add_container(mine, mine_layers, folder, complete=True, now=1)
    record = store.get(dl.id)
    assert record is not None and record.state == "complete"
    assert (tmp_path / "downloads" / "dl" / "f").read_bytes() == content


def test_one_file_in_containers_of_different_piece_lengths(tmp_path: Path, store: Store) -> None:
    content = data(13, 9 * BLOCK_SIZE + 77)
    root = root_of(content)
    big = 4 * BLOCK_SIZE
    coarse, coarse_layers = build_container("coarse", {"f": content}, big)
    fine, fine_layers = build_container("fine", {"f": content}, BLOCK_SIZE)
    downloads = tmp_path / "dl"
    store.add_container(coarse, coarse_layers, downloads, complete=False, now=0)
    assert store.write_piece(root, 0, content[:big], piece_length=big).ok
    store.add_container(fine, fine_layers, downloads, complete=False, now=1)
    assert store.held(root).piece_length == BLOCK_SIZE
    assert list(store.held(root)) == [0, 1, 2, 3]  # nothing verified was lost
    assert list(store.held(root, big)) == [0]
    assert store.piece_layer(root, big) == coarse_layers[root]
    assert store.piece_layer(root) == fine_layers[root]
    for index in (4, 5, 6):
        assert store.write_piece(root, index, pieces_of(content, BLOCK_SIZE)[index]).ok
    assert list(store.held(root, big)) == [0]
    assert store.write_piece(root, 7, pieces_of(content, BLOCK_SIZE)[7]).ok
    assert list(store.held(root, big)) == [0, 1]
    assert store.read_piece(root, 1, piece_length=big) == content[big : 2 * big]
    result = store.write_piece(root, 2, content[2 * big :], piece_length=big)
    assert sorted(result.completed) == sorted([coarse.id, fine.id])


def test_piece_arithmetic_edges() -> None:
    assert full_bits(9) == b"\xff\x80"
    bits, count = coarser_bits(b"\xf0", 5, 4)  # pieces 0-3 held, 4 not
    assert (bits, count) == (b"\x80", 2)
    assert finer_bits(b"\x40", 2, 4, 6) == b"\x0c"  # coarse piece 1 → fine 4 and 5
    content = data(14, BLOCK_SIZE * 3)  # one piece, no piece layer: checked against the root
    assert piece_matches(content, 0, len(content), 4 * BLOCK_SIZE, [root_of(content)])


def test_a_coarse_piece_spans_whole_stored_pieces_and_a_short_last_one() -> None:
    """The one rule both stores (and the simulator's) cut a coarser piece by: a run of stored
    pieces from the aligned start, the file's last one short; a wrong size or index is None."""
    stored, coarse = BLOCK_SIZE, 4 * BLOCK_SIZE
    length = 9 * BLOCK_SIZE + 100  # stored pieces 0-9, the last of 100 bytes
    assert stored_spans(length, stored, 1, coarse, coarse) == [
        (4, 0, stored),
        (5, stored, stored),
        (6, 2 * stored, stored),
        (7, 3 * stored, stored),
    ]
    last = length - 2 * coarse  # coarse piece 2: stored 8 and the short 9
    assert stored_spans(length, stored, 2, last, coarse) == [(8, 0, stored), (9, stored, 100)]
    assert stored_spans(length, stored, 9, 100, None) == [(9, 0, 100)]
    assert stored_spans(length, stored, 2, last + 1, coarse) is None  # wrong size
    assert stored_spans(length, stored, 3, 1, coarse) is None  # beyond the file
    with pytest.raises(ValueError, match="finer than the stored"):
        stored_spans(length, coarse, 0, stored, stored)


# -- verify -------------------------------------------------------------------------------


def test_verify_finds_files_changed_behind_our_back(tmp_path: Path, store: Store) -> None:
    first, second = data(15, 5 * PIECE + 3), data(16, 2 * PIECE)
    files = {"first": first, "second": second}
    manifest, layers = build_container("mine", files, PIECE)
    folder = on_disk(tmp_path, "mine", files)
    store.add_container(manifest, layers, folder, complete=True, now=0)
    report = store.verify(manifest.id)
    assert report.ok and report.unheld == 0
    with (folder / "first").open("r+b") as handle:  # flip a byte in piece 3
        handle.seek(3 * PIECE + 100)
        byte = handle.read(1)
        handle.seek(3 * PIECE + 100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    (folder / "second").write_bytes(second[:PIECE])  # truncated: piece 1 is gone
    progress: list[tuple[int, int]] = []
    report = store.verify(manifest.id, lambda done, total: progress.append((done, total)))
    assert not report.ok and report.unheld == 2
    assert [(f.path, f.bad, f.missing) for f in report.files] == [
        (("first",), (3,), ()),
        (("second",), (1,), ()),
    ]
    assert progress[-1] == (len(first) + len(second), len(first) + len(second))
    root = root_of(first)
    assert 3 not in store.held(root) and len(store.held(root)) == 5
    with pytest.raises(NotHeld):
        store.read_block(root, 3 * PIECE // BLOCK_SIZE)
    assert not store.is_complete(manifest.id)
    # fetched again: written into the user's file, and then it verifies clean
    assert store.write_piece(root, 3, pieces_of(first)[3]).ok
    assert store.write_piece(root_of(second), 1, pieces_of(second)[1]).ok
    assert store.verify(manifest.id).ok and store.is_complete(manifest.id)
    assert (folder / "first").read_bytes() == first


def test_verify_of_a_download_counts_what_is_missing(tmp_path: Path, store: Store) -> None:
    content = data(17, 4 * PIECE)
    manifest, layers = build_container("dl", {"a": content}, PIECE)
    record = store.add_container(manifest, layers, tmp_path / "dl", complete=False, now=0)
    root = root_of(content)
    store.write_piece(root, 2, pieces_of(content)[2])
    with (record.location / "a").open("r+b") as handle:  # bytes that got there unrecorded
        handle.seek(0)
        handle.write(pieces_of(content)[0])
    report = store.verify(manifest.id)
    assert report.files[0].missing == (1, 3) and report.files[0].bad == ()
    assert report.newly_held == 1 and sorted(store.held(root)) == [0, 2]


# -- moves and recovery -------------------------------------------------------------------


def _download(store: Store, tmp_path: Path, name: str = "set") -> tuple[Manifest, bytes]:
    content = data(18, 3 * PIECE)
    manifest, layers = build_container(name, {"d/f": content}, PIECE)
    store.add_container(manifest, layers, tmp_path / "dl", complete=False, now=0)
    return manifest, content


def test_finished_download_moves_beside_folders_of_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "dl" / "set").mkdir(parents=True)
    (tmp_path / "dl" / "set (2)").mkdir()
    (tmp_path / "dl" / "set (2)" / "keep").write_text("user data")
    with Store(tmp_path / "data") as store:
        manifest, content = _download(store, tmp_path)
        write_all(store, content)
        record = store.get(manifest.id)
        assert record is not None and record.location == tmp_path / "dl" / "set (3)"
        assert (record.location / "d" / "f").read_bytes() == content
    assert (tmp_path / "dl" / "set (2)" / "keep").read_text() == "user data"
    assert list((tmp_path / "dl" / "set").iterdir()) == []
    assert not (tmp_path / "dl" / ".kinswarm-partial").exists()


class Crash(Exception):
    pass


@pytest.mark.parametrize("phase", ["move-intent", "moved"])
def test_crash_during_the_final_move_is_recovered_on_open(tmp_path: Path, phase: str) -> None:
    (tmp_path / "dl" / "set").mkdir(parents=True)  # a clash, so the intent matters

    def crash(at: str) -> None:
        if at == phase:
            raise Crash(at)

    with Store(tmp_path / "data") as store:
        manifest, content = _download(store, tmp_path)
        store.on_phase = crash
        with pytest.raises(Crash):
            write_all(store, content)
        record = store.get(manifest.id)
        assert record is not None and record.state == "partial"  # the index lags the disk
        renamed = not record.location.exists()
        assert renamed == (phase == "moved")
    with Store(tmp_path / "data") as store:
        record = store.get(manifest.id)
        assert record is not None and record.state == "complete"
        assert record.location == tmp_path / "dl" / "set (2)"
        assert (record.location / "d" / "f").read_bytes() == content
        assert store.read_block(root_of(content), 0) == content[:BLOCK_SIZE]
    assert not (tmp_path / "dl" / ".kinswarm-partial").exists()


def test_crash_after_the_last_piece_before_the_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(tmp_path / "data") as store:
        manifest, content = _download(store, tmp_path)
        monkeypatch.setattr(Store, "_finish_ready", lambda self, ids: [])
        write_all(store, content)
        monkeypatch.undo()
    with Store(tmp_path / "data") as store:
        record = store.get(manifest.id)
        assert record is not None and record.state == "complete"
        assert record.location == tmp_path / "dl" / "set"


def test_a_name_taken_while_we_were_down_is_not_overwritten(tmp_path: Path) -> None:
    def crash(at: str) -> None:
        if at == "move-intent":
            raise Crash(at)

    with Store(tmp_path / "data") as store:
        manifest, content = _download(store, tmp_path)
        store.on_phase = crash
        with pytest.raises(Crash):
            write_all(store, content)
    (tmp_path / "dl" / "set").mkdir()
    (tmp_path / "dl" / "set" / "theirs").write_text("not ours")
    with Store(tmp_path / "data") as store:
        record = store.get(manifest.id)
        assert record is not None and record.location == tmp_path / "dl" / "set (2)"
    assert (tmp_path / "dl" / "set" / "theirs").read_text() == "not ours"


# -- remove, bulk, threads ----------------------------------------------------------------


def test_remove_forgets_but_never_deletes(tmp_path: Path, store: Store) -> None:
    shared = data(19, 2 * PIECE)
    a, a_layers = build_container("a", {"s": shared}, PIECE)
    b, b_layers = build_container("b", {"s": shared, "t": b"t"}, PIECE)
    folder_a = on_disk(tmp_path, "a", {"s": shared})
    store.add_container(a, a_layers, folder_a, complete=True, now=0)
    store.add_container(
        b, b_layers, on_disk(tmp_path, "b", {"s": shared, "t": b"t"}), complete=True, now=0
    )
    store.add_name(a.id, "https://a/")
    store.remove(a.id)
    assert store.get(a.id) is None and store.resolve("https://a/") == []
    assert (folder_a / "s").read_bytes() == shared
    assert store.held(root_of(shared)).complete  # b still holds it
    assert store.resolve(root_of(shared).hex()) == [b.id]
    store.remove(b.id)
    with pytest.raises(UnknownRoot):
        store.held(root_of(shared))
    assert store._index.db.execute("SELECT count(*) FROM files").fetchone()[0] == 0
    assert store._index.db.execute("SELECT count(*) FROM names").fetchone()[0] == 0


def test_bulk_add_and_indexed_lookups(tmp_path: Path, store: Store) -> None:
    entries = []
    for number in range(300):
        content = number.to_bytes(4, "big") * 10
        manifest, layers = build_container(f"c{number}", {"f": content}, PIECE)
        names = {f"https://mirror/{number}": None, f"btih:{number:040x}": None}
        entries.append(NewContainer(manifest, layers, tmp_path / f"c{number}", names=names))
    assert store.add_containers(entries, now=5.0, check_files=False) == 300
    assert len(store.list_containers()) == 300
    assert store.resolve("https://mirror/123") == [entries[123].manifest.id]
    assert store.resolve(f"btih:{77:040x}") == [entries[77].manifest.id]
    assert store.resolve(root_of((5).to_bytes(4, "big") * 10).hex()) == [entries[5].manifest.id]
    for sql, parameters in (
        (BY_ID, (b"x",)),
        (BY_ROOT, (b"x",)),
        (BY_NAME, ("url", b"x")),
    ):
        plan = " ".join(
            str(row[-1]) for row in store._index.db.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)
        )
        assert "USING" in plan and "SCAN" not in plan, plan
    with pytest.raises(AlreadyStored):
        store.add_containers(entries[:1], now=6.0, check_files=False)


def test_calls_from_several_threads_are_serialised(tmp_path: Path, store: Store) -> None:
    content = data(20, 40 * PIECE)
    manifest, layers = build_container("threads", {"f": content}, PIECE)
    store.add_container(manifest, layers, tmp_path / "dl", complete=False, now=0)
    root = root_of(content)
    chunks = pieces_of(content)
    errors: list[BaseException] = []

    def work(start: int) -> None:
        try:
            for index in range(start, len(chunks), 4):
                assert store.write_piece(root, index, chunks[index]).ok
                assert store.read_block(root, index * PIECE // BLOCK_SIZE)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(start,)) for start in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    record = store.get(manifest.id)
    assert record is not None and record.state == "complete"
    assert (record.location / "f").read_bytes() == content
