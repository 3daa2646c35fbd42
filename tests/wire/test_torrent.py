""".torrent import and export, proved against libtorrent 2.x.

Import: libtorrent makes v1, v2 and hybrid torrents of real files; we parse them and must
agree with libtorrent on the infohashes, the files, the pad layout and the v1 pieces, and with
our own Merkle code on every root and piece layer. Export: we build a manifest from the same
files, export a hybrid, and libtorrent must load it with the same infohashes and files, produce
the very same bytes when it creates that torrent itself, and find our torrent's data complete
when it checks it against the files on disk - which it does against both the v1 SHA-1 pieces
and the v2 Merkle trees (the negative controls show it notices when either is wrong).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import libtorrent as lt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import torrent as torrent_module
from wire.bencode import BValue, bdecode, bencode
from wire.container import FileEntry, Manifest, MountedContainer
from wire.errors import DecodeError
from wire.merkle import MerkleTree
from wire.torrent import (
    LayoutEntry,
    RootsUnknownError,
    Torrent,
    V1PieceHasher,
    export_hybrid_torrent,
    hash_v1_layout,
    hybrid_v1_layout,
    manifest_from_torrent,
    manifest_from_v1_and_roots,
    parse_torrent,
)

PIECE = 16 * 1024
SEED = "http://127.0.0.1:1/seed/"  # nothing listens there: libtorrent never downloads from it
TRACKERS = ("udp://tracker.example:6969/announce", "http://tracker2.example/announce")
Contents = dict[tuple[str, ...], bytes]


def _data(length: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(length)


# name -> (relative path -> content); a name without "/" files is a single file.
MULTI: Contents = {
    ("empty",): b"",
    ("one",): _data(1, 1),
    ("block",): _data(16384, 2),
    ("block_plus",): _data(16385, 3),
    ("several",): _data(5 * 16384 + 3, 4),
    ("sub", "deep", "tail"): _data(70000, 5),
    ("sub", "small"): _data(100, 6),
    ("sub", "zero"): b"",
}
FOLDER_OF_ONE: Contents = {("only.bin",): _data(40000, 7)}
SINGLE: Contents = {("single.bin",): _data(40000, 8)}
# Names whose order differs between "sort full path strings" and "sort component by
# component": "a/..." against "a b", "a-", "a.txt" (' ', '-', '.' sort before '/').
TRICKY: Contents = {
    ("B",): _data(10, 9),
    ("a", "big"): _data(70000, 10),
    ("a", "x"): _data(1, 11),
    ("a b",): _data(2, 12),
    ("a-",): _data(3, 13),
    ("a.txt",): _data(4, 14),
    ("ab", "c"): _data(5, 15),
    ("ä",): _data(6, 16),
}
# One non-empty file beside an empty one: libtorrent pads when there is more than one file,
# empty ones included, so the data file gets a tail pad.
WITH_EMPTY: Contents = {("data",): _data(40000, 17), ("nothing",): b""}
DATASETS: dict[str, tuple[str, Contents]] = {
    "multi": ("multi", MULTI),
    "with_empty": ("with_empty", WITH_EMPTY),
    "folder_of_one": ("one", FOLDER_OF_ONE),
    "single": ("single.bin", SINGLE),
    "tricky": ("tricky", TRICKY),
}


def _write(parent: Path, name: str, contents: Contents) -> None:
    """Put `contents` on disk as libtorrent expects: the folder `name`, or the file `name`."""
    if list(contents) == [(name,)]:
        (parent / name).write_bytes(contents[(name,)])
        return
    for path, data in contents.items():
        target = parent.joinpath(name, *path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    for name, contents in DATASETS.values():
        _write(tmp_path, name, contents)
    return tmp_path


def lt_torrent(
    parent: Path,
    name: str,
    *,
    flags: int = 0,
    piece_length: int = PIECE,
    url_seeds: tuple[str, ...] = (),
    trackers: tuple[str, ...] = (),
) -> bytes:
    creator = lt.create_torrent(lt.list_files(str(parent / name)), piece_length, flags)
    for url in url_seeds:
        creator.add_url_seed(url)
    for tier, url in enumerate(trackers):
        creator.add_tracker(url, tier)
    creator.set_creation_date(0)
    creator.set_creator("kinswarm")
    lt.set_piece_hashes(creator, str(parent))
    return lt.bencode(creator.generate())


def our_manifest(name: str, contents: Contents, piece_length: int = PIECE) -> Manifest:
    """The manifest, with roots from our own Merkle code."""
    return Manifest.build(
        name=name,
        piece_length=piece_length,
        files=[
            FileEntry(path=path, length=len(data), root=MerkleTree.from_data(data).root)
            if data
            else FileEntry(path=path, length=0)
            for path, data in contents.items()
        ],
    )


def our_piece_layers(contents: Contents, piece_length: int) -> dict[bytes, list[bytes]]:
    layers = {}
    for data in contents.values():
        if data:
            tree = MerkleTree.from_data(data)
            layers[tree.root] = tree.piece_layer(piece_length)
    return layers


def hash_layout_in_chunks(layout: tuple[LayoutEntry, ...], contents: Contents, piece: int) -> bytes:
    """Feed V1PieceHasher the way a reader of big files would: odd-sized chunks."""
    hasher = V1PieceHasher(piece)
    completed: list[bytes] = []
    for entry in layout:
        if entry.pad:
            completed += hasher.update_zeros(entry.length)
            continue
        data = contents[entry.path]
        for start in range(0, len(data), 7001):
            completed += hasher.update(memoryview(data)[start : start + 7001])
    completed += hasher.finish()
    assert completed == hasher.piece_hashes
    return hasher.pieces()


def lt_files(info: lt.torrent_info) -> list[tuple[str, int, int, bool]]:
    layout = info.layout()
    pad = lt.file_storage.flag_pad_file
    return [
        (
            layout.file_path(i),
            layout.file_offset(i),
            layout.file_size(i),
            bool(layout.file_flags(i) & pad),
        )
        for i in range(layout.num_files())
    ]


def lt_info(data: bytes) -> lt.torrent_info:
    info = lt.load_torrent_buffer(data).ti
    assert info is not None
    return info


def info_dict(data: bytes) -> dict[bytes, BValue]:
    top = bdecode(data)
    assert isinstance(top, dict)
    info = top[b"info"]
    assert isinstance(info, dict)
    return info


def lt_hashes(data: bytes) -> tuple[bytes | None, bytes | None]:
    hashes = lt_info(data).info_hashes()
    return (
        hashes.v1.to_bytes() if hashes.has_v1() else None,
        hashes.v2.to_bytes() if hashes.has_v2() else None,
    )


# -- import ----------------------------------------------------------------------------------

KINDS = {
    "v1": lt.create_torrent.v1_only,
    "v2": lt.create_torrent.v2_only,
    "hybrid": 0,
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(
    ("dataset", "piece_length"),
    [("multi", PIECE), ("multi", 2 * PIECE), ("folder_of_one", PIECE), ("single", PIECE)],
)
def test_parse_libtorrent_torrents(disk: Path, kind: str, dataset: str, piece_length: int) -> None:
    name, contents = DATASETS[dataset]
    data = lt_torrent(
        disk,
        name,
        flags=KINDS[kind],
        piece_length=piece_length,
        url_seeds=(SEED,),
        trackers=TRACKERS,
    )
    parsed = parse_torrent(data)
    info = lt_info(data)

    # Infohashes: SHA-1 / SHA-256 of the info dict, exactly as libtorrent computes them.
    assert (parsed.v1_infohash, parsed.v2_infohash) == lt_hashes(data)
    assert parsed.has_v1 == (kind != "v2")
    assert parsed.has_v2 == (kind != "v1")
    assert parsed.info_bytes == bencode(info_dict(data))
    if parsed.has_v1:
        assert parsed.v1_infohash == hashlib.sha1(parsed.info_bytes).digest()
    if parsed.has_v2:
        assert parsed.v2_infohash == hashlib.sha256(parsed.info_bytes).digest()

    # Files: ours (pads excluded) are libtorrent's, under the torrent's folder.
    assert parsed.name == name
    assert parsed.single_file == (dataset == "single")
    assert {f.path: f.length for f in parsed.files} == {p: len(d) for p, d in contents.items()}
    theirs = [(path, size) for path, _, size, pad in lt_files(info) if not pad]
    if parsed.single_file:
        ours = [(f.path[0], f.length) for f in parsed.files]
    elif kind == "v2" and dataset == "folder_of_one":
        # libtorrent reads a v2 tree holding one file as a single-file torrent named after
        # that file, although it wrote it for a folder; we keep the folder (as its hybrid
        # and v1 forms say), so the same content is the same container in every form.
        ours = [(f.path[-1], f.length) for f in parsed.files]
    else:
        ours = [("/".join((name, *f.path)), f.length) for f in parsed.files]
    assert ours == theirs

    # v2: every root and piece layer is what our Merkle code computes from the data.
    for file in parsed.files:
        content = contents[file.path]
        if kind == "v1" or not content:
            assert file.root is None
        else:
            assert file.root == MerkleTree.from_data(content).root
    if kind == "v1":
        assert parsed.piece_layers == {}
    else:
        expected_layers = {
            root: tuple(layer)
            for root, layer in our_piece_layers(contents, piece_length).items()
            if len(layer) > 1
        }
        assert parsed.piece_layers == expected_layers

    # v1: the layout (pad files included) is libtorrent's, and hashing our data over it
    # reproduces the torrent's pieces.
    if kind == "v2":
        assert parsed.v1_piece_hashes is None
        with pytest.raises(ValueError, match="no v1 layout"):
            parsed.v1_layout()
    else:
        layout = parsed.v1_layout()
        assert [(e.offset, e.length, e.pad) for e in layout] == [
            (offset, size, pad) for _, offset, size, pad in lt_files(info)
        ]
        if kind == "hybrid" and len(contents) > 1:
            assert any(entry.pad for entry in layout)
            assert all(e.offset % piece_length == 0 for e in layout if e.length and not e.pad)
        pieces = hash_layout_in_chunks(layout, contents, piece_length)
        assert pieces == parsed.v1_piece_hashes
        assert pieces == b"".join(info.hash_for_piece(i) for i in range(info.num_pieces()))

    assert parsed.web_seeds == (SEED,)
    assert parsed.trackers == TRACKERS
    names = parsed.names()
    assert names[-1] == SEED
    magnet_names = [n for n in names if n.startswith(("btih:", "btmh:"))]
    assert len(magnet_names) == (2 if kind == "hybrid" else 1)

    # The manifest: straight from v2 data; from a v1 torrent only once the data is hashed.
    expected = our_manifest(name, contents, piece_length)
    if kind == "v1":
        with pytest.raises(RootsUnknownError, match="v1-only"):
            manifest_from_torrent(parsed)
        roots = {path: MerkleTree.from_data(d).root for path, d in contents.items() if d}
        assert manifest_from_v1_and_roots(parsed, roots) == expected
    else:
        assert manifest_from_torrent(parsed) == expected


def test_pad_files_of_a_v1_torrent() -> None:
    """BEP 47 pad files written by others ('attr p', or a .pad folder, or BitComet's names)
    stay in the layout and are hashed as zeros, and never appear as files."""
    a, b = _data(20000, 20), _data(5000, 21)
    files: list[BValue] = [
        {b"length": len(a), b"path": [b"a"]},
        {b"attr": b"p", b"length": PIECE * 2 - len(a), b"path": [b".pad", b"12768"]},
        {b"length": len(b), b"path": [b"b"]},
        {b"length": 100, b"path": [b".pad", b"100"]},
        {b"length": 7, b"path": [b"_____padding_file_0_if you see this"]},
    ]
    layout_bytes = a + bytes(PIECE * 2 - len(a)) + b + bytes(107)
    pieces = b"".join(
        hashlib.sha1(layout_bytes[i : i + PIECE]).digest()
        for i in range(0, len(layout_bytes), PIECE)
    )
    info: dict[bytes, BValue] = {
        b"files": files,
        b"name": b"t",
        b"piece length": PIECE,
        b"pieces": pieces,
    }
    parsed = parse_torrent(bencode({b"info": info}))
    assert [(f.path, f.length) for f in parsed.files] == [(("a",), 20000), (("b",), 5000)]
    assert [e.pad for e in parsed.v1_layout()] == [False, True, False, True, True]
    assert parsed.v1_layout()[2].offset == 2 * PIECE
    assert hash_v1_layout(parsed.v1_layout(), {("a",): a, ("b",): b}, PIECE) == pieces
    assert lt_hashes(bencode({b"info": info}))[0] == parsed.v1_infohash


# -- export --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session() -> Iterator[lt.session]:
    settings_pack = {
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "listen_interfaces": "127.0.0.1:0",
        "alert_mask": lt.alert_category.status | lt.alert_category.error,
    }
    ses = lt.session(settings_pack)  # type: ignore[call-overload]  # the bindings take a dict
    yield ses
    del ses


def libtorrent_check(ses: lt.session, data: bytes, save_path: Path) -> lt.torrent_status:
    """Add the torrent over existing files and return its status once libtorrent has
    checked them (hashing every piece against the torrent)."""
    params = lt.load_torrent_buffer(data)
    params.save_path = str(save_path)
    handle = ses.add_torrent(params)
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            ses.wait_for_alert(100)
            for alert in ses.pop_alerts():
                if isinstance(alert, lt.torrent_checked_alert) and alert.handle == handle:
                    return handle.status()
        raise AssertionError(f"libtorrent did not finish checking: {handle.status().state}")
    finally:
        ses.remove_torrent(handle)


def export_from_disk(
    name: str,
    contents: Contents,
    piece_length: int = PIECE,
    *,
    v1_contents: Contents | None = None,
    web_seeds: tuple[str, ...] = (),
    trackers: tuple[str, ...] = (),
    created_by: str = "kinswarm",
) -> bytes:
    """Export as a container would be: manifest and layers from our Merkle code, v1 pieces
    from V1PieceHasher over the padded layout (over `v1_contents` for negative controls)."""
    manifest = our_manifest(name, contents, piece_length)
    layout = hybrid_v1_layout(manifest)
    pieces = hash_layout_in_chunks(layout, v1_contents or contents, piece_length)
    return export_hybrid_torrent(
        manifest,
        our_piece_layers(contents, piece_length),
        pieces,
        web_seeds=web_seeds,
        trackers=trackers,
        created_by=created_by,
    )


@pytest.mark.parametrize(
    ("dataset", "piece_length"),
    [
        ("multi", PIECE),
        ("multi", 4 * PIECE),
        ("folder_of_one", PIECE),
        ("with_empty", PIECE),
        ("single", PIECE),
        ("tricky", PIECE),
    ],
)
def test_export_hybrid_is_libtorrents_and_checks_out(
    disk: Path, session: lt.session, dataset: str, piece_length: int
) -> None:
    name, contents = DATASETS[dataset]
    data = export_from_disk(name, contents, piece_length, web_seeds=(SEED,))
    parsed = parse_torrent(data)
    assert parsed.is_hybrid
    assert manifest_from_torrent(parsed) == our_manifest(name, contents, piece_length)
    assert parsed.single_file == (dataset == "single")

    # libtorrent: same infohashes, same files, same web seed.
    assert lt_hashes(data) == (parsed.v1_infohash, parsed.v2_infohash)
    params = lt.load_torrent_buffer(data)
    files = lt_files(lt_info(data))
    expected_paths = (
        [name] if parsed.single_file else ["/".join((name, *f.path)) for f in parsed.files]
    )
    assert [path for path, _, _, pad in files if not pad] == expected_paths
    assert [size for _, _, size, pad in files if not pad] == [f.length for f in parsed.files]
    assert [
        (e.offset, e.length, e.pad) for e in hybrid_v1_layout(manifest_from_torrent(parsed))
    ] == [(offset, size, pad) for _, offset, size, pad in files]
    assert list(params.url_seeds) == [SEED]

    if dataset != "tricky":
        # The very bytes libtorrent writes for these files. (For "tricky", libtorrent 2.1.1
        # orders its v1 file list by full path strings but the v2 tree by components, and
        # then refuses to load its own hybrid; ours keeps both in the tree's order.)
        ours = export_from_disk(name, contents, piece_length, web_seeds=(SEED,))
        theirs = lt_torrent(disk, name, piece_length=piece_length, url_seeds=(SEED,))
        assert ours == theirs

    status = libtorrent_check(session, data, disk)
    assert status.errc.value() == 0, status.errc.message()
    assert status.is_seeding
    assert status.num_pieces == lt_info(data).num_pieces()


def test_libtorrent_notices_a_wrong_v1_or_v2_hash(disk: Path, session: lt.session) -> None:
    """Negative controls: the check above is only proof if libtorrent really verifies both
    trees. Hash one tree over data that differs in one byte, and it must not seed."""
    name, contents = DATASETS["multi"]
    altered = dict(contents)
    altered[("several",)] = b"\xff" + contents[("several",)][1:]
    wrong_v1 = export_from_disk(name, contents, v1_contents=altered)
    wrong_v2 = export_from_disk(name, altered, v1_contents=contents)
    for data in (wrong_v1, wrong_v2):
        status = libtorrent_check(session, data, disk)
        assert not status.is_seeding
        assert 0 < status.num_pieces < lt_info(data).num_pieces()


def test_export_with_trackers_matches_libtorrent(disk: Path) -> None:
    for trackers in (TRACKERS[:1], TRACKERS):
        ours = export_from_disk("multi", MULTI, trackers=trackers, web_seeds=(SEED, SEED + "2/"))
        theirs = lt_torrent(disk, "multi", url_seeds=(SEED, SEED + "2/"), trackers=trackers)
        assert ours == theirs
        assert list(lt.load_torrent_buffer(ours).trackers) == list(trackers)
        assert parse_torrent(ours).trackers == trackers
        assert parse_torrent(ours).web_seeds == (SEED, SEED + "2/")


def test_export_is_reproducible_and_names_the_creator() -> None:
    first = export_from_disk("multi", MULTI)
    assert first == export_from_disk("multi", MULTI)
    top = bdecode(first)
    assert isinstance(top, dict)
    assert top[b"created by"] == b"kinswarm"
    assert b"creation date" not in top
    anonymous = bdecode(export_from_disk("multi", MULTI, created_by=""))
    assert isinstance(anonymous, dict)
    assert b"created by" not in anonymous


def test_export_refuses_what_cannot_be_a_torrent() -> None:
    manifest = our_manifest("multi", MULTI)
    layers = our_piece_layers(MULTI, PIECE)
    pieces = hash_v1_layout(hybrid_v1_layout(manifest), MULTI, PIECE)
    with pytest.raises(ValueError, match="piece hashes"):
        export_hybrid_torrent(manifest, layers, pieces[:-20])
    with pytest.raises(ValueError, match="no piece layer"):
        export_hybrid_torrent(manifest, {}, pieces)
    broken = {root: list(reversed(layer)) for root, layer in layers.items()}
    with pytest.raises(ValueError, match="piece layer"):
        export_hybrid_torrent(manifest, broken, pieces)
    empty = Manifest.build(name="e", piece_length=PIECE, files=[FileEntry(path=("x",), length=0)])
    with pytest.raises(ValueError, match="without data"):
        hybrid_v1_layout(empty)
    mounting = Manifest.build(
        name="m",
        piece_length=PIECE,
        files=manifest.files,
        containers=[MountedContainer(path=("other",), id=bytes(32))],
    )
    with pytest.raises(ValueError, match="mounts"):
        export_hybrid_torrent(mounting, layers, pieces)


# -- V1PieceHasher -----------------------------------------------------------------------------


@given(
    st.binary(max_size=3000),
    st.sampled_from([1, 7, 64, 1000]),
    st.lists(st.integers(1, 500), min_size=1, max_size=20),
)
def test_piece_hasher_is_independent_of_chunking(
    data: bytes, piece_length: int, chunk_sizes: list[int]
) -> None:
    expected = [
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    ]
    hasher = V1PieceHasher(piece_length)
    got: list[bytes] = []
    position = 0
    index = 0
    while position < len(data):
        size = chunk_sizes[index % len(chunk_sizes)]
        got += hasher.update(data[position : position + size])
        position += size
        index += 1
    got += hasher.finish()
    assert got == expected
    assert hasher.pieces() == b"".join(expected)


def test_piece_hasher_zeros_and_misuse() -> None:
    length = (1 << 20) * 2 + 12345  # more than the hasher's zero buffer
    zeros = V1PieceHasher(PIECE * 4)
    plain = V1PieceHasher(PIECE * 4)
    assert zeros.update_zeros(length) == plain.update(bytes(length))
    assert zeros.finish() == plain.finish()
    with pytest.raises(ValueError, match="finished"):
        zeros.update(b"x")
    with pytest.raises(ValueError, match="finished"):
        zeros.finish()
    with pytest.raises(ValueError, match="finish"):
        V1PieceHasher(PIECE).pieces()
    with pytest.raises(ValueError):
        V1PieceHasher(0)
    with pytest.raises(ValueError, match="has 1 bytes"):
        hash_v1_layout([LayoutEntry(("a",), 0, 2, False)], {("a",): b"x"}, PIECE)


# -- hand-made torrents: unsafe, inconsistent, malformed -------------------------------------


def _root(seed: int) -> bytes:
    return hashlib.sha256(bytes([seed])).digest()


def v1_torrent(
    files: list[tuple[list[bytes], int]] | None = None,
    *,
    name: bytes = b"t",
    extra: dict[bytes, BValue] | None = None,
    file_extra: dict[bytes, BValue] | None = None,
) -> bytes:
    files = files if files is not None else [([b"a"], 10)]
    total = sum(length for _, length in files)
    entries: list[BValue] = [
        {b"length": length, b"path": list(path), **(file_extra or {})} for path, length in files
    ]
    info: dict[bytes, BValue] = {
        b"files": entries,
        b"name": name,
        b"piece length": PIECE,
        b"pieces": bytes(20) * -(-total // PIECE),
        **(extra or {}),
    }
    return bencode({b"info": info})


def v2_torrent(
    tree: dict[bytes, BValue],
    *,
    name: bytes = b"t",
    layers: dict[bytes, BValue] | None = None,
    info_extra: dict[bytes, BValue] | None = None,
) -> bytes:
    info: dict[bytes, BValue] = {
        b"file tree": tree,
        b"meta version": 2,
        b"name": name,
        b"piece length": PIECE,
        **(info_extra or {}),
    }
    top: dict[bytes, BValue] = {b"info": info}
    if layers is not None:
        top[b"piece layers"] = layers
    return bencode(top)


def leaf(
    length: int, root: bytes | None = None, extra: dict[bytes, BValue] | None = None
) -> dict[bytes, BValue]:
    entry: dict[bytes, BValue] = {b"length": length}
    if root is not None:
        entry[b"pieces root"] = root
    entry.update(extra or {})
    return {b"": entry}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (v1_torrent([([b".."], 10)]), "escape"),
        (v1_torrent([([b"x", b"..", b"etc"], 10)]), "escape"),
        (v1_torrent([([b"a/b"], 10)]), "not allowed"),
        (v1_torrent([([b"a\\b"], 10)]), "not allowed"),
        (v1_torrent([([b"C:"], 10)]), "not allowed"),
        (v1_torrent([([b"CON"], 10)]), "reserved"),
        (v1_torrent([([b"x."], 10)]), "ends with a dot"),
        (v1_torrent([([b""], 10)]), "empty path component"),
        (v1_torrent([([], 10)]), "1 to 32 components"),
        (v1_torrent([([b"x"] * 33, 10)]), "1 to 32 components"),
        (v1_torrent([([b"\xff"], 10)]), "UTF-8"),
        (v1_torrent([([b"e\xcc\x81"], 10)]), "NFC"),
        (v1_torrent([([b"A"], 10), ([b"a"], 10)]), "two entries"),
        (v1_torrent([([b"a"], 10), ([b"a", b"b"], 10)]), "both a file and a folder"),
        (v1_torrent(name=b".."), "escape"),
        (v1_torrent(name=b"a/b"), "not allowed"),
        (v1_torrent(name=b""), "empty path component"),
        (v1_torrent(file_extra={b"attr": b"l"}), "symlink"),
        (v1_torrent(file_extra={b"path.utf-8": [b"other"]}), "disagree"),
        (v1_torrent(extra={b"name.utf-8": b"other"}), "disagree"),
        (v2_torrent({b"..": leaf(10, _root(1))}), "escape"),
        (v2_torrent({b"a/b": leaf(10, _root(1))}), "not allowed"),
        (v2_torrent({b"d": {b"..": leaf(10, _root(1))}}), "escape"),
        (v2_torrent({b"x": leaf(10, _root(1))}, name=b"../x"), "not allowed"),
        (v2_torrent({b"A": leaf(10, _root(1)), b"a": leaf(10, _root(2))}), "two entries"),
        (v2_torrent({b"x": leaf(10, _root(1), {b"attr": b"l"})}), "symlink"),
        (v2_torrent({b"x": leaf(10, _root(1), {b"symlink path": [b"y"]})}), "symlink"),
    ],
)
def test_unsafe_torrents_are_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        parse_torrent(data)


def _deep_tree(depth: int) -> dict[bytes, BValue]:
    tree: dict[bytes, BValue] = leaf(10, _root(1))
    for _ in range(depth - 1):
        tree = {b"d": tree}
    return {b"d": tree}


def test_path_depth_is_bounded() -> None:
    assert parse_torrent(v2_torrent(_deep_tree(32))).files[0].path == ("d",) * 32
    with pytest.raises(DecodeError):
        parse_torrent(v2_torrent(_deep_tree(33)))
    with pytest.raises(DecodeError, match="nested deeper"):
        parse_torrent(v2_torrent(_deep_tree(200)))


def _hybrid(files: list[BValue], tree: dict[bytes, BValue], pieces: int) -> bytes:
    info: dict[bytes, BValue] = {
        b"file tree": tree,
        b"files": files,
        b"meta version": 2,
        b"name": b"t",
        b"piece length": PIECE,
        b"pieces": bytes(20 * pieces),
    }
    return bencode({b"info": info})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (v1_torrent([([b"a"], 10)], extra={b"pieces": bytes(40)}), "has 2 hashes"),
        (v1_torrent([([b"a"], 10)], extra={b"pieces": bytes(19)}), "whole number"),
        (v1_torrent([([b"a"], 0)], extra={b"pieces": b""}), "no data"),
        (v1_torrent([], extra={b"pieces": b""}), "empty"),
        (v1_torrent(extra={b"length": 10}), "exactly one of"),
        (v1_torrent(extra={b"piece length": 0}), "piece length"),
        (v1_torrent(extra={b"piece length": b"x"}), "must be an integer"),
        (v1_torrent(file_extra={b"length": -1}), "outside"),
        (v2_torrent({b"x": leaf(10, _root(1))}, info_extra={b"meta version": 3}), "meta version"),
        (v2_torrent({b"x": leaf(10, _root(1))}, info_extra={b"piece length": 20000}), "power"),
        (v2_torrent({}), "file tree is empty"),
        (v2_torrent({b"": {b"length": 1}}), "without a name"),
        (v2_torrent({b"x": leaf(0, _root(1))}), "empty but has a pieces root"),
        (v2_torrent({b"x": leaf(10)}), "pieces root must be a string"),
        (v2_torrent({b"x": leaf(10, b"short")}), "32 bytes"),
        (v2_torrent({b"x": {**leaf(10, _root(1)), b"y": leaf(1, _root(2))}}), "file and a folder"),
        (v2_torrent({b"x": leaf(10, _root(1), {b"attr": b"p"})}), "pad file"),
        (v2_torrent({b"x": leaf(0)}), "no data"),
        (v2_torrent({b"x": {}}), "holds no files"),
        (v2_torrent({b"x": leaf(10, _root(1))}, layers={_root(1): bytes(32)}), "longer than"),
        (v2_torrent({b"x": leaf(10, _root(1))}, layers={_root(9): bytes(32)}), "not the root"),
        (
            bencode({b"info": {b"file tree": {b"x": leaf(1, _root(1))}, b"name": b"t"}}),
            "without meta version",
        ),
        (bencode({b"info": {b"name": b"t", b"piece length": PIECE}}), "neither"),
        (
            v2_torrent({b"t": leaf(1, _root(1))}, info_extra={b"length": 1}),
            "v1 files without v1 pieces",
        ),
        (bencode({b"nfo": {}}), "info must be a dict"),
        (bencode([]), "must be a dict"),
        (
            bencode({b"info": info_dict(v1_torrent()), b"piece layers": {}}),
            "without v2",
        ),
        (
            bencode({b"info": info_dict(v1_torrent()), b"url-list": b"nope"}),
            "not a URL",
        ),
        (
            bencode({b"info": info_dict(v1_torrent()), b"announce-list": [b"x"]}),
            "must be a list",
        ),
        (
            _hybrid(
                [{b"length": 1, b"path": [b"a"]}, {b"length": 1, b"path": [b"b"]}],
                {b"a": leaf(1, _root(1)), b"b": leaf(1, _root(2))},
                1,
            ),
            "piece boundary",
        ),
        (
            _hybrid(
                [{b"length": 1, b"path": [b"a"]}],
                {b"b": leaf(1, _root(1))},
                1,
            ),
            "different files",
        ),
        (
            _hybrid(
                [{b"length": 1, b"path": [b"a"]}],
                {b"a": leaf(2, _root(1))},
                1,
            ),
            "different files",
        ),
    ],
)
def test_malformed_torrents_are_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        parse_torrent(data)


def test_single_file_hybrid_must_be_single_file_in_both_halves() -> None:
    info: dict[bytes, BValue] = {
        b"file tree": {b"d": {b"t": leaf(1, _root(1))}},
        b"length": 1,
        b"meta version": 2,
        b"name": b"t",
        b"piece length": PIECE,
        b"pieces": bytes(20),
    }
    with pytest.raises(DecodeError, match="single-file in its v1 half"):
        parse_torrent(bencode({b"info": info}))


@pytest.fixture
def hybrid_bytes(disk: Path) -> bytes:
    return lt_torrent(disk, "multi", url_seeds=(SEED,))


def _with_layers(data: bytes, change: dict[bytes, BValue]) -> bytes:
    top = bdecode(data)
    assert isinstance(top, dict)
    layers = top[b"piece layers"]
    assert isinstance(layers, dict)
    layers.update(change)
    return bencode(top)


def test_mismatched_piece_layers_are_rejected(hybrid_bytes: bytes) -> None:
    top = bdecode(hybrid_bytes)
    assert isinstance(top, dict) and isinstance(top[b"piece layers"], dict)
    root, layer = next(iter(top[b"piece layers"].items()))
    assert isinstance(layer, bytes)
    flipped = bytes([layer[0] ^ 1]) + layer[1:]
    with pytest.raises(DecodeError, match="does not match the file root"):
        parse_torrent(_with_layers(hybrid_bytes, {root: flipped}))
    with pytest.raises(DecodeError, match="piece layer has"):
        parse_torrent(_with_layers(hybrid_bytes, {root: layer + bytes(32)}))
    with pytest.raises(DecodeError, match="multiple of 32"):
        parse_torrent(_with_layers(hybrid_bytes, {root: layer[:-1]}))
    with pytest.raises(DecodeError, match="not the root"):
        parse_torrent(_with_layers(hybrid_bytes, {_root(7): layer}))


def test_missing_piece_layers_are_allowed(hybrid_bytes: bytes) -> None:
    top = bdecode(hybrid_bytes)
    assert isinstance(top, dict)
    del top[b"piece layers"]
    parsed = parse_torrent(bencode(top))
    assert parsed.piece_layers == {}
    assert parsed.v2_infohash == parse_torrent(hybrid_bytes).v2_infohash


def test_non_canonical_torrents_are_rejected(hybrid_bytes: bytes) -> None:
    top = bdecode(hybrid_bytes)
    assert isinstance(top, dict)
    info = bencode(top[b"info"])
    # "url-list" written before "info": a lenient parser would hash the same info dict, but
    # two parsers could disagree on duplicate keys, so unsorted keys are refused outright.
    unsorted = b"d8:url-list3:abc4:info" + info + b"e"
    with pytest.raises(DecodeError, match="unsorted"):
        parse_torrent(unsorted)


def test_every_truncation_is_rejected(hybrid_bytes: bytes) -> None:
    for cut in range(0, len(hybrid_bytes), 7):
        with pytest.raises(DecodeError):
            parse_torrent(hybrid_bytes[:cut])


def test_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        parse_torrent(b"d" + bytes(64 * 1024 * 1024))
    monkeypatch.setattr(torrent_module, "MAX_FILES", 3)
    four = [([name], 10) for name in (b"a", b"b", b"c", b"d")]
    with pytest.raises(DecodeError, match="more than 3 files"):
        parse_torrent(v1_torrent(four))
    tree: dict[bytes, BValue] = {
        name: leaf(10, _root(i)) for i, name in enumerate((b"a", b"b", b"c", b"d"))
    }
    with pytest.raises(DecodeError, match="more than 3 files"):
        parse_torrent(v2_torrent(tree))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_only_raises_decode_error(data: bytes) -> None:
    for candidate in (data, b"d4:info" + data + b"e"):
        try:
            parse_torrent(candidate)
        except DecodeError:
            pass


def _small_hybrid() -> bytes:
    contents: Contents = {("a",): _data(20000, 30), ("b",): _data(3, 31)}
    return export_from_disk("t", contents, web_seeds=(SEED,), trackers=TRACKERS)


SMALL_HYBRID = _small_hybrid()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0), st.integers(1, 255)), min_size=1, max_size=3))
def test_mutated_torrents_only_raise_decode_error(flips: list[tuple[int, int]]) -> None:
    data = bytearray(SMALL_HYBRID)
    for position, xor in flips:
        data[position % len(data)] ^= xor
    try:
        parsed = parse_torrent(bytes(data))
    except DecodeError:
        return
    assert isinstance(parsed, Torrent)


def test_private_flag_and_announce_list() -> None:
    info = bdecode(v1_torrent(extra={b"private": 1}))
    assert isinstance(info, dict)
    top: dict[bytes, BValue] = {
        **info,
        b"announce": b"http://c/announce",
        b"announce-list": [[b"udp://a/announce", b"udp://b/announce"], [b"http://c/announce"]],
        b"url-list": [b"", b"http://w/1", b"http://w/1"],
    }
    parsed = parse_torrent(bencode(top))
    assert parsed.private
    assert parsed.trackers == ("udp://a/announce", "udp://b/announce", "http://c/announce")
    assert parsed.web_seeds == ("http://w/1",)
    assert not parse_torrent(v1_torrent()).private


def test_manifest_from_v1_and_roots_checks_its_input() -> None:
    data = _data(30000, 40)
    parsed = parse_torrent(
        v1_torrent([([b"a"], len(data)), ([b"e"], 0)], extra={b"piece length": 20000})
    )
    root = MerkleTree.from_data(data).root
    with pytest.raises(ValueError, match="piece_length"):
        manifest_from_v1_and_roots(parsed, {("a",): root})
    manifest = manifest_from_v1_and_roots(parsed, {("a",): root}, piece_length=PIECE)
    assert [(f.path, f.root) for f in manifest.files] == [(("a",), root), (("e",), None)]
    with pytest.raises(ValueError, match="no 32-byte root"):
        manifest_from_v1_and_roots(parsed, {}, piece_length=PIECE)
    with pytest.raises(ValueError, match="does not have"):
        manifest_from_v1_and_roots(parsed, {("a",): root, ("z",): root}, piece_length=PIECE)
    hybrid = parse_torrent(SMALL_HYBRID)
    roots = {f.path: _root(5) for f in hybrid.files}
    with pytest.raises(ValueError, match="not the torrent's"):
        manifest_from_v1_and_roots(hybrid, roots)
