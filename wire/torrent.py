""".torrent files (BEP 3, 52, 47, 19, 12): read v1, v2 and hybrid torrents; write hybrids.

Importing: `parse_torrent` turns a .torrent into a `Torrent`: its files, its infohashes (the
names BitTorrent knows it by), its v1 piece hashes and v2 piece layers (to verify data), its
web seeds and trackers. A torrent with v2 data maps straight onto a container manifest
(`manifest_from_torrent`): BEP 52 files are named by the same SHA-256 Merkle roots that name
our files, so the container and the torrent agree on every file. A v1-only torrent names its
pieces by SHA-1 over the files laid end to end, which says nothing about any one file's root:
its data must be fetched and checked against the v1 pieces, then hashed, before a manifest can
exist (`manifest_from_v1_and_roots`).

Exporting: `export_hybrid_torrent` writes a container as a hybrid v1+v2 torrent laid out the
way libtorrent lays out the hybrids it creates, so any client (v1-only ones included) can
download a container from the swarm and from its web seeds. The v1 half needs SHA-1 piece
hashes over the padded layout (`hybrid_v1_layout`), which the caller computes with
`V1PieceHasher` while reading the files.

The layout rules, as libtorrent 2.x applies them (checked against it in the tests):

* Files are sorted by path; v1 `files` and the v2 `file tree` list them in the same order.
* With more than one file, a BEP 47 pad file (`attr: p`, path `.pad/<size>`) follows every
  non-empty file that does not end on a piece boundary, *including the last one*, so every
  file starts on a piece boundary and v1 and v2 pieces cover the same bytes of one file.
  Empty files get no padding.
* A single file is written in the single-file form (`length`, no pads): padding it would make
  single-file hybrids impossible. A container is exported that way exactly when its only file
  is named like the container, which is what importing a single-file torrent produces, so a
  single-file torrent survives the round trip. Any other one-file container is exported as a
  folder holding that file (the multi-file form, with one entry and no padding).
* No `creation date`, so the same container always exports to the same bytes (and infohashes).

Parsing is strict and bounded, because torrents come from strangers and name paths on our
disk: the whole file must be canonical bencode (which also makes `sha1(bencode(info))` the
infohash), at most 64 MiB, at most 200,000 files, and every path component must pass
`wire.container.check_path_component` (no `..`, no separators, no reserved names...). Pad
files are never written to disk, so their paths are not checked. Symlinks are refused. A
hybrid whose v1 and v2 halves disagree about the files, or whose piece layers do not hash up
to the file roots, is refused. Everything raises `DecodeError` with a readable reason.

Pure functions on bytes: nothing here reads files or talks to the network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

import attrs

from wire.bencode import BValue, bdecode, bencode
from wire.container import (
    MAX_FILE_LENGTH,
    MAX_FILES,
    MAX_PATH_DEPTH,
    FileEntry,
    Manifest,
    check_no_collisions,
    check_path,
    check_path_component,
    infohash_name,
)
from wire.errors import DecodeError
from wire.merkle import (
    HASH_SIZE,
    MAX_PIECE_LENGTH,
    check_piece_layer,
    check_piece_length,
    piece_count,
    split_layer,
)

MAX_TORRENT_BYTES: Final = 64 * 1024 * 1024
MAX_URLS: Final = 10_000
"""Web seeds, and trackers, each: far more than any real torrent lists."""
MAX_TOTAL_LENGTH: Final = MAX_FILE_LENGTH
V1_HASH_SIZE: Final = 20
_BENCODE_DEPTH: Final = MAX_PATH_DEPTH + 4
"""Deep enough for a file tree of MAX_PATH_DEPTH levels: top dict, info, file tree, one
dict per path component, then the file's `""` dict."""
_PAD_PREFIX: Final = b"_____padding_file_"  # BitComet's pad files, before BEP 47


class RootsUnknownError(ValueError):
    """A v1-only torrent cannot become a manifest until its data has been hashed."""


@attrs.frozen
class TorrentFile:
    """One real (non-pad) file of a torrent."""

    path: tuple[str, ...]
    """Relative to the torrent's folder (`Torrent.name`); for a single-file torrent, the
    file's own name."""
    length: int
    root: bytes | None
    """The BEP 52 pieces root; None for empty files and for v1-only torrents."""


@attrs.frozen
class LayoutEntry:
    """One entry of the v1 byte layout: a file or a pad file at `offset` in the torrent."""

    path: tuple[str, ...]
    offset: int
    length: int
    pad: bool
    """A BEP 47 pad file: zeros that are hashed but never stored."""


@attrs.frozen
class Torrent:
    """What a .torrent says, checked. Build with `parse_torrent`."""

    name: str
    piece_length: int
    single_file: bool
    """Single-file form: the file is `name` itself rather than a folder `name` holding it."""
    files: tuple[TorrentFile, ...]
    v1_infohash: bytes | None
    """SHA-1 of the info dict; None for a v2-only torrent."""
    v2_infohash: bytes | None
    """SHA-256 of the info dict; None for a v1-only torrent."""
    v1_piece_hashes: bytes | None
    """The v1 `pieces`: concatenated 20-byte SHA-1 hashes over the v1 layout."""
    piece_layers: dict[bytes, tuple[bytes, ...]]
    """File root -> its piece layer (32-byte hashes), each checked against the root. Only
    files longer than one piece have one; a torrent may omit them (peers can supply them)."""
    web_seeds: tuple[str, ...]
    trackers: tuple[str, ...]
    private: bool
    info_bytes: bytes
    """The bencoded info dict, as peers exchange it (BEP 9) and as the infohashes cover it."""
    v1_files: tuple[LayoutEntry, ...] | None
    """The v1 layout including pad files (see `v1_layout`); None for v2-only torrents."""

    @property
    def has_v1(self) -> bool:
        return self.v1_infohash is not None

    @property
    def has_v2(self) -> bool:
        return self.v2_infohash is not None

    @property
    def is_hybrid(self) -> bool:
        return self.has_v1 and self.has_v2

    @property
    def total_length(self) -> int:
        """Bytes of real file data (pad files excluded)."""
        return sum(file.length for file in self.files)

    def v1_layout(self) -> tuple[LayoutEntry, ...]:
        """The v1 byte layout, pad files included: what `V1PieceHasher` must be fed, in this
        order (zeros for pad files), to verify local data against `v1_piece_hashes`."""
        if self.v1_files is None:
            raise ValueError("a v2-only torrent has no v1 layout")
        return self.v1_files

    def names(self) -> list[str]:
        """Every name of this content: `btih:<hex>`, `btmh:1220<hex>`, then web seed URLs."""
        names: list[str] = []
        if self.v1_infohash is not None:
            names.append(infohash_name("btih", self.v1_infohash))
        if self.v2_infohash is not None:
            names.append(infohash_name("btmh", self.v2_infohash))
        names.extend(self.web_seeds)
        return names


# -- strict field access -------------------------------------------------------------------


def _dict(value: BValue | None, where: str) -> dict[bytes, BValue]:
    if not isinstance(value, dict):
        raise DecodeError(f"torrent: {where} must be a dict, got {_kind(value)}")
    return value


def _list(value: BValue | None, where: str) -> list[BValue]:
    if not isinstance(value, list):
        raise DecodeError(f"torrent: {where} must be a list, got {_kind(value)}")
    return value


def _bytes(value: BValue | None, where: str) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(f"torrent: {where} must be a string, got {_kind(value)}")
    return value


def _int(value: BValue | None, where: str, minimum: int, maximum: int) -> int:
    if not isinstance(value, int):
        raise DecodeError(f"torrent: {where} must be an integer, got {_kind(value)}")
    if not minimum <= value <= maximum:
        raise DecodeError(f"torrent: {where} = {value} is outside [{minimum}, {maximum}]")
    return value


def _kind(value: BValue | None) -> str:
    return "nothing" if value is None else type(value).__name__


def _utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"torrent: {where} is not valid UTF-8") from exc


def _component(raw: BValue | None, where: str) -> str:
    text = _utf8(_bytes(raw, where), where)
    try:
        return check_path_component(text)
    except DecodeError as exc:
        raise DecodeError(f"torrent: {where}: {exc} (unsafe torrent)") from exc


def _checked_path(path: tuple[str, ...], where: str) -> tuple[str, ...]:
    try:
        return check_path(path)
    except DecodeError as exc:
        raise DecodeError(f"torrent: {where}: {exc} (unsafe torrent)") from exc


def _attr(value: BValue | None, where: str) -> str:
    """BEP 47 attributes as text ('' when absent); symlinks are refused."""
    if value is None:
        return ""
    attr = _bytes(value, f"{where}.attr").decode("ascii", "replace")
    if "l" in attr:
        raise DecodeError(f"torrent: {where} is a symlink; symlinks are not supported")
    return attr


def _same_if_present(container: dict[bytes, BValue], key: bytes, plain: BValue, where: str) -> None:
    """`name.utf-8`/`path.utf-8` must agree with `name`/`path`: clients prefer one or the
    other, and two clients must not unpack the same torrent to different paths."""
    if key in container and container[key] != plain:
        raise DecodeError(f"torrent: {where} and its {key.decode()} variant disagree")


# -- parsing -------------------------------------------------------------------------------


def parse_torrent(data: bytes) -> Torrent:
    """Parse and check a v1, v2 or hybrid .torrent. Raises DecodeError with the reason."""
    if len(data) > MAX_TORRENT_BYTES:
        raise DecodeError(f"torrent: {len(data)} bytes exceeds the limit of {MAX_TORRENT_BYTES}")
    top = _dict(bdecode(data, max_depth=_BENCODE_DEPTH), "the torrent")
    info = _dict(top.get(b"info"), "info")
    info_bytes = bencode(info)  # == the input's bytes: bdecode accepts only canonical input

    name = _component(info.get(b"name"), "info.name")
    _same_if_present(info, b"name.utf-8", info[b"name"], "info.name")

    has_v1 = b"pieces" in info
    has_v2 = b"meta version" in info
    if has_v2:
        version = _int(info[b"meta version"], "info.meta version", 0, 1 << 62)
        if version != 2:
            raise DecodeError(f"torrent: meta version {version} is not supported (only 2)")
        if b"file tree" not in info:
            raise DecodeError("torrent: meta version 2 without a file tree")
    elif b"file tree" in info:
        raise DecodeError("torrent: a file tree without meta version 2")
    if not has_v1 and not has_v2:
        raise DecodeError("torrent: info has neither v1 pieces nor a v2 file tree")

    if has_v2:
        try:
            piece_length = check_piece_length(
                _int(info.get(b"piece length"), "info.piece length", 1, MAX_PIECE_LENGTH)
            )
        except DecodeError as exc:
            raise DecodeError(f"torrent: {exc}") from exc
    else:
        piece_length = _int(info.get(b"piece length"), "info.piece length", 1, MAX_PIECE_LENGTH)

    v1_single = False
    v1_files: tuple[LayoutEntry, ...] | None = None
    v1_pieces: bytes | None = None
    if has_v1:
        v1_single, v1_files = _parse_v1_layout(info, name)
        v1_pieces = _check_v1_pieces(info[b"pieces"], v1_files, piece_length)
    elif b"files" in info or b"length" in info:
        raise DecodeError("torrent: v1 files without v1 pieces")

    files: tuple[TorrentFile, ...]
    if has_v2:
        single_file, files = _parse_file_tree(info[b"file tree"], name)
        if v1_files is not None:
            _check_hybrid(v1_single, v1_files, single_file, files, piece_length)
            single_file = v1_single
    else:
        assert v1_files is not None
        single_file = v1_single
        files = tuple(
            TorrentFile(entry.path, entry.length, None) for entry in v1_files if not entry.pad
        )
    if not any(file.length for file in files):
        raise DecodeError("torrent: holds no data (every file is empty)")
    if not single_file:
        try:
            check_no_collisions([file.path for file in files])
        except DecodeError as exc:
            raise DecodeError(f"torrent: {exc} (unsafe torrent)") from exc

    piece_layers: dict[bytes, tuple[bytes, ...]] = {}
    if b"piece layers" in top:
        if not has_v2:
            raise DecodeError("torrent: piece layers in a torrent without v2 data")
        piece_layers = _parse_piece_layers(top[b"piece layers"], files, piece_length)

    private = b"private" in info and _int(info[b"private"], "info.private", 0, 1 << 62) == 1
    return Torrent(
        name=name,
        piece_length=piece_length,
        single_file=single_file,
        files=files,
        v1_infohash=hashlib.sha1(info_bytes).digest() if has_v1 else None,
        v2_infohash=hashlib.sha256(info_bytes).digest() if has_v2 else None,
        v1_piece_hashes=v1_pieces,
        piece_layers=piece_layers,
        web_seeds=_urls([top.get(b"url-list")], "url-list"),
        trackers=_trackers(top),
        private=private,
        info_bytes=info_bytes,
        v1_files=v1_files,
    )


def _parse_v1_layout(info: dict[bytes, BValue], name: str) -> tuple[bool, tuple[LayoutEntry, ...]]:
    if (b"length" in info) == (b"files" in info):
        raise DecodeError("torrent: v1 info needs exactly one of 'length' and 'files'")
    if b"length" in info:
        _attr(info.get(b"attr"), "info")
        length = _int(info[b"length"], "info.length", 0, MAX_FILE_LENGTH)
        return True, (LayoutEntry((name,), 0, length, False),)

    entries = _list(info[b"files"], "info.files")
    if not entries:
        raise DecodeError("torrent: info.files is empty")
    if len(entries) > 2 * MAX_FILES + 1:
        raise DecodeError(f"torrent: more than {MAX_FILES} files")
    layout: list[LayoutEntry] = []
    offset = 0
    real_files = 0
    for index, value in enumerate(entries):
        where = f"info.files[{index}]"
        entry = _dict(value, where)
        length = _int(entry.get(b"length"), f"{where}.length", 0, MAX_FILE_LENGTH)
        raw_path = _list(entry.get(b"path"), f"{where}.path")
        _same_if_present(entry, b"path.utf-8", raw_path, f"{where}.path")
        if not raw_path or len(raw_path) > MAX_PATH_DEPTH:
            raise DecodeError(f"torrent: {where}.path must have 1 to {MAX_PATH_DEPTH} components")
        components = [_bytes(part, f"{where}.path") for part in raw_path]
        attr = _attr(entry.get(b"attr"), where)
        if "p" in attr or components[0] == b".pad" or components[-1].startswith(_PAD_PREFIX):
            path = tuple(part.decode("utf-8", "replace") for part in components)
            layout.append(LayoutEntry(path, offset, length, True))
        else:
            real_files += 1
            if real_files > MAX_FILES:
                raise DecodeError(f"torrent: more than {MAX_FILES} files")
            path = tuple(_utf8(part, f"{where}.path") for part in components)
            layout.append(LayoutEntry(_checked_path(path, f"{where}.path"), offset, length, False))
        offset += length
        if offset > MAX_TOTAL_LENGTH:
            raise DecodeError(f"torrent: more than {MAX_TOTAL_LENGTH} bytes in total")
    if not real_files:
        raise DecodeError("torrent: info.files holds only pad files")
    return False, tuple(layout)


def _check_v1_pieces(value: BValue, layout: Sequence[LayoutEntry], piece_length: int) -> bytes:
    pieces = _bytes(value, "info.pieces")
    if len(pieces) % V1_HASH_SIZE:
        raise DecodeError("torrent: info.pieces is not a whole number of 20-byte hashes")
    total = layout[-1].offset + layout[-1].length
    expected = piece_count(total, piece_length)
    if len(pieces) != expected * V1_HASH_SIZE:
        raise DecodeError(
            f"torrent: info.pieces has {len(pieces) // V1_HASH_SIZE} hashes; "
            f"{total} bytes in pieces of {piece_length} make {expected}"
        )
    return pieces


def _parse_file_tree(value: BValue, name: str) -> tuple[bool, tuple[TorrentFile, ...]]:
    """Walk a BEP 52 file tree depth first in key order (the order its files are laid out
    in). A dict whose only key is "" is a file; any other non-empty dict is a folder.

    A tree holding just one file is ambiguous: a single-file torrent, or a folder `name`
    holding one file (libtorrent writes both that way). It is single-file when the file is
    called `name`; libtorrent instead always treats it as single-file and renames the torrent
    after the file, which would put a folder's only file somewhere else than the same
    torrent's hybrid form (whose v1 half says "folder") does."""
    tree = _dict(value, "info.file tree")
    if not tree:
        raise DecodeError("torrent: the file tree is empty")
    if b"" in tree:
        raise DecodeError("torrent: the file tree's root is a file without a name")
    files: list[TorrentFile] = []
    stack: list[tuple[tuple[str, ...], Iterator[tuple[bytes, BValue]]]] = [((), iter(tree.items()))]
    while stack:
        prefix, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        key, node_value = item
        path = (*prefix, _component(key, f"file tree path {'/'.join(prefix)}"))
        where = f"file tree entry {'/'.join(path)}"
        node = _dict(node_value, where)
        if b"" in node:
            if len(node) != 1:
                raise DecodeError(f"torrent: {where} is both a file and a folder")
            files.append(_v2_file(_checked_path(path, where), node[b""], where))
            if len(files) > MAX_FILES:
                raise DecodeError(f"torrent: more than {MAX_FILES} files")
        elif node:
            if len(path) >= MAX_PATH_DEPTH:
                raise DecodeError(f"torrent: {where}: folders nest deeper than {MAX_PATH_DEPTH}")
            stack.append((path, iter(node.items())))
        # An empty folder holds no files; BEP 52 gives it no meaning, libtorrent skips it.
    if not files:
        raise DecodeError("torrent: the file tree holds no files")
    single_file = len(tree) == 1 and len(files) == 1 and files[0].path == (name,)
    return single_file, tuple(files)


def _v2_file(path: tuple[str, ...], value: BValue, where: str) -> TorrentFile:
    entry = _dict(value, where)
    attr = _attr(entry.get(b"attr"), where)
    if b"symlink path" in entry:
        raise DecodeError(f"torrent: {where} is a symlink; symlinks are not supported")
    if "p" in attr:
        raise DecodeError(f"torrent: {where} is a pad file, which a v2 file tree never holds")
    length = _int(entry.get(b"length"), f"{where}.length", 0, MAX_FILE_LENGTH)
    root = entry.get(b"pieces root")
    if length == 0:
        if root is not None:
            raise DecodeError(f"torrent: {where} is empty but has a pieces root")
        return TorrentFile(path, 0, None)
    root = _bytes(root, f"{where}.pieces root")
    if len(root) != HASH_SIZE:
        raise DecodeError(f"torrent: {where}.pieces root must be {HASH_SIZE} bytes")
    return TorrentFile(path, length, root)


def _check_hybrid(
    v1_single: bool,
    layout: Sequence[LayoutEntry],
    v2_single: bool,
    files: Sequence[TorrentFile],
    piece_length: int,
) -> None:
    """A hybrid's halves must describe the same files in the same order, each non-empty file
    starting on a piece boundary, so a v1 piece and a v2 piece cover the same bytes. The v1
    half decides single- or multi-file (a v2 tree with one file called `name` may be either)."""
    if v1_single and not v2_single:
        raise DecodeError("torrent: hybrid is single-file in its v1 half but not in its v2 half")
    v1_real = [(entry.path, entry.length) for entry in layout if not entry.pad]
    v2_real = [(file.path, file.length) for file in files]
    if v1_real != v2_real:
        raise DecodeError("torrent: the v1 and v2 halves of the hybrid list different files")
    for entry in layout:
        if not entry.pad and entry.length and entry.offset % piece_length:
            raise DecodeError(
                f"torrent: hybrid file {'/'.join(entry.path)} does not start on a piece "
                "boundary (missing pad file)"
            )


def _parse_piece_layers(
    value: BValue, files: Sequence[TorrentFile], piece_length: int
) -> dict[bytes, tuple[bytes, ...]]:
    layers = _dict(value, "piece layers")
    by_root = {
        file.root: file for file in files if file.root is not None and file.length > piece_length
    }
    out: dict[bytes, tuple[bytes, ...]] = {}
    for root, raw in layers.items():
        file = by_root.get(root)
        if file is None:
            raise DecodeError(
                f"torrent: piece layer for {root.hex()[:64]}, which is not the root of a file "
                "longer than one piece"
            )
        hashes = split_layer(_bytes(raw, f"piece layer of {'/'.join(file.path)}"))
        try:
            check_piece_layer(hashes, root, file.length, piece_length)
        except DecodeError as exc:
            raise DecodeError(f"torrent: file {'/'.join(file.path)}: {exc}") from exc
        out[root] = tuple(hashes)
    return out


def _urls(values: Sequence[BValue | None], where: str) -> tuple[str, ...]:
    """Strings or lists of strings, flattened, empty ones skipped, duplicates dropped."""
    urls: dict[str, None] = {}
    for value in values:
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            raw = _bytes(item, where)
            if not raw:
                continue
            url = _utf8(raw, where)
            if "://" not in url or any(ord(c) < 0x20 or c == "\x7f" for c in url):
                raise DecodeError(f"torrent: {where} entry {url[:80]!r} is not a URL")
            urls[url] = None
            if len(urls) > MAX_URLS:
                raise DecodeError(f"torrent: more than {MAX_URLS} entries in {where}")
    return tuple(urls)


def _trackers(top: dict[bytes, BValue]) -> tuple[str, ...]:
    """announce-list tiers (BEP 12) in order, then `announce` if it is not among them."""
    tiers: list[BValue | None] = []
    if b"announce-list" in top:
        tiers.extend(_list(top[b"announce-list"], "announce-list"))
        for tier in tiers:
            _list(tier, "announce-list tier")
    tiers.append(top.get(b"announce"))
    return _urls(tiers, "announce-list")


# -- manifests -----------------------------------------------------------------------------


def manifest_from_torrent(torrent: Torrent) -> Manifest:
    """The container manifest of a torrent with v2 data (v2 or hybrid): same name, piece
    length, files and roots. A single-file torrent becomes a container named like its file,
    holding that file. Raises RootsUnknownError for a v1-only torrent."""
    if not torrent.has_v2:
        raise RootsUnknownError(
            f"torrent {torrent.name!r} is v1-only: v1 hashes pieces of the files laid end to "
            "end, which says nothing about each file's Merkle root. Fetch the data, check it "
            "against the v1 pieces (V1PieceHasher over v1_layout()), hash each file, then call "
            "manifest_from_v1_and_roots"
        )
    return Manifest.build(
        name=torrent.name,
        piece_length=torrent.piece_length,
        files=[FileEntry(path=f.path, length=f.length, root=f.root) for f in torrent.files],
    )


def manifest_from_v1_and_roots(
    torrent: Torrent,
    roots_by_path: Mapping[tuple[str, ...], bytes],
    *,
    piece_length: int | None = None,
) -> Manifest:
    """The manifest of a v1 torrent whose data the caller has checked against the v1 pieces
    and hashed: `roots_by_path` gives each non-empty file's Merkle root. `piece_length`
    defaults to the torrent's (v1 allows piece lengths v2 does not; pass one then)."""
    length = torrent.piece_length if piece_length is None else piece_length
    try:
        check_piece_length(length)
    except DecodeError as exc:
        raise ValueError(f"{exc}; pass a valid piece_length for the manifest") from exc
    known = {file.path for file in torrent.files}
    unknown = [path for path in roots_by_path if path not in known]
    if unknown:
        raise ValueError(f"roots given for paths the torrent does not have: {unknown[:3]}")
    entries = []
    for file in torrent.files:
        root: bytes | None = None
        if file.length:
            root = roots_by_path.get(file.path)
            if root is None or len(root) != HASH_SIZE:
                raise ValueError(f"no 32-byte root given for {'/'.join(file.path)}")
            if file.root is not None and file.root != root:
                raise ValueError(f"the root given for {'/'.join(file.path)} is not the torrent's")
        entries.append(FileEntry(path=file.path, length=file.length, root=root))
    return Manifest.build(name=torrent.name, piece_length=length, files=entries)


# -- v1 piece hashing ------------------------------------------------------------------------

_ZEROS: Final = memoryview(bytes(1 << 20))


class V1PieceHasher:
    """Incremental SHA-1 over a v1 layout, one hash per piece.

    Feed the files' bytes in layout order with `update` (any chunk sizes) and each pad file
    as `update_zeros(length)`; every call returns the hashes of the pieces it completed, so a
    caller verifying data can compare as it reads, and `finish` returns the short last
    piece's hash. `pieces()` is the concatenation: the v1 `pieces` field for an export.
    """

    __slots__ = ("_current", "_filled", "_finished", "_hashes", "piece_length")

    def __init__(self, piece_length: int) -> None:
        if not 1 <= piece_length <= MAX_PIECE_LENGTH:
            raise ValueError(f"piece length {piece_length} is out of range")
        self.piece_length = piece_length
        self._current = hashlib.sha1()
        self._filled = 0
        self._hashes: list[bytes] = []
        self._finished = False

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self._finished:
            raise ValueError("the hasher is finished")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        done: list[bytes] = []
        position = 0
        size = len(view)
        while position < size:
            take = min(self.piece_length - self._filled, size - position)
            self._current.update(view[position : position + take])
            self._filled += take
            position += take
            if self._filled == self.piece_length:
                done.append(self._complete())
        return done

    def update_zeros(self, count: int) -> list[bytes]:
        """Feed `count` zero bytes (a pad file)."""
        if count < 0:
            raise ValueError("negative length")
        done: list[bytes] = []
        while count:
            chunk = min(count, len(_ZEROS))
            done.extend(self.update(_ZEROS[:chunk]))
            count -= chunk
        return done

    def finish(self) -> list[bytes]:
        """End the data; returns the last (short) piece's hash, if there is one."""
        if self._finished:
            raise ValueError("the hasher is finished")
        self._finished = True
        return [self._complete()] if self._filled else []

    def _complete(self) -> bytes:
        digest = self._current.digest()
        self._hashes.append(digest)
        self._current = hashlib.sha1()
        self._filled = 0
        return digest

    @property
    def piece_hashes(self) -> list[bytes]:
        """Every piece hash so far."""
        return list(self._hashes)

    def pieces(self) -> bytes:
        """The concatenated hashes (the v1 `pieces` field); only after `finish`."""
        if not self._finished:
            raise ValueError("call finish() first: the last piece may be short")
        return b"".join(self._hashes)


def hash_v1_layout(
    layout: Sequence[LayoutEntry],
    contents: Mapping[tuple[str, ...], bytes | bytearray | memoryview],
    piece_length: int,
) -> bytes:
    """The v1 `pieces` of a layout whose file contents are all in memory (small data, tests).
    Large data goes through `V1PieceHasher` chunk by chunk instead."""
    hasher = V1PieceHasher(piece_length)
    for entry in layout:
        if entry.pad:
            hasher.update_zeros(entry.length)
            continue
        data = contents[entry.path]
        if len(data) != entry.length:
            raise ValueError(f"{'/'.join(entry.path)} has {len(data)} bytes, not {entry.length}")
        hasher.update(data)
    hasher.finish()
    return hasher.pieces()


# -- export --------------------------------------------------------------------------------


def _check_exportable(manifest: Manifest) -> None:
    if manifest.containers:
        raise ValueError("a container that mounts other containers cannot be one torrent")
    if not manifest.total_length:
        raise ValueError("a container without data cannot be a torrent")


def _single_file_form(manifest: Manifest) -> bool:
    return len(manifest.files) == 1 and manifest.files[0].path == (manifest.name,)


def hybrid_v1_layout(manifest: Manifest) -> tuple[LayoutEntry, ...]:
    """The v1 layout `export_hybrid_torrent` writes for `manifest` (pad files included), in
    the order the caller must feed the files (and zeros for pads) to `V1PieceHasher`."""
    _check_exportable(manifest)
    if _single_file_form(manifest):
        return (LayoutEntry(manifest.files[0].path, 0, manifest.files[0].length, False),)
    piece_length = manifest.piece_length
    pad_every_file = len(manifest.files) > 1
    layout: list[LayoutEntry] = []
    offset = 0
    for file in manifest.files:
        layout.append(LayoutEntry(file.path, offset, file.length, False))
        offset += file.length
        if pad_every_file and file.length and offset % piece_length:
            pad = piece_length - offset % piece_length
            layout.append(LayoutEntry((".pad", str(pad)), offset, pad, True))
            offset += pad
    return tuple(layout)


def export_hybrid_torrent(
    manifest: Manifest,
    piece_layers: Mapping[bytes, Sequence[bytes]],
    v1_piece_hashes: bytes | Sequence[bytes],
    *,
    web_seeds: Sequence[str] = (),
    trackers: Sequence[str] = (),
    created_by: str = "kinswarm",
) -> bytes:
    """A hybrid v1+v2 .torrent for `manifest`.

    `piece_layers` maps file roots to piece layers (`MerkleTree.piece_layer`); only files
    longer than one piece need one, others are ignored. `v1_piece_hashes` are the SHA-1
    hashes over `hybrid_v1_layout(manifest)`. Trackers go one per tier, the first also as
    `announce`. Raises ValueError if the inputs do not fit the manifest.
    """
    layout = hybrid_v1_layout(manifest)
    piece_length = manifest.piece_length
    pieces = v1_piece_hashes if isinstance(v1_piece_hashes, bytes) else b"".join(v1_piece_hashes)
    total = layout[-1].offset + layout[-1].length
    expected = piece_count(total, piece_length)
    if len(pieces) != expected * V1_HASH_SIZE:
        raise ValueError(
            f"{len(pieces)} bytes of v1 piece hashes; the layout has {expected} pieces of 20"
        )

    tree: dict[bytes, BValue] = {}
    layers: dict[bytes, BValue] = {}
    for file in manifest.files:
        node = tree
        for part in file.path[:-1]:
            child = node.setdefault(part.encode("utf-8"), {})
            assert isinstance(child, dict)
            node = child
        leaf: dict[bytes, BValue] = {b"length": file.length}
        if file.root is not None:
            leaf[b"pieces root"] = file.root
        node[file.path[-1].encode("utf-8")] = {b"": leaf}
        if file.root is not None and file.length > piece_length:
            layer = piece_layers.get(file.root)
            if layer is None:
                raise ValueError(f"no piece layer for {'/'.join(file.path)}")
            try:
                check_piece_layer(layer, file.root, file.length, piece_length)
            except DecodeError as exc:
                raise ValueError(f"piece layer of {'/'.join(file.path)}: {exc}") from exc
            layers[file.root] = b"".join(layer)

    info: dict[bytes, BValue] = {
        b"file tree": tree,
        b"meta version": 2,
        b"name": manifest.name.encode("utf-8"),
        b"piece length": piece_length,
        b"pieces": pieces,
    }
    if _single_file_form(manifest):
        info[b"length"] = manifest.files[0].length
    else:
        v1_files: list[BValue] = []
        for entry in layout:
            item: dict[bytes, BValue] = {
                b"length": entry.length,
                b"path": [part.encode("utf-8") for part in entry.path],
            }
            if entry.pad:
                item[b"attr"] = b"p"
            v1_files.append(item)
        info[b"files"] = v1_files

    torrent: dict[bytes, BValue] = {b"info": info, b"piece layers": layers}
    if created_by:
        torrent[b"created by"] = created_by.encode("utf-8")
    tracker_list = list(dict.fromkeys(trackers))
    if tracker_list:
        torrent[b"announce"] = tracker_list[0].encode("utf-8")
        if len(tracker_list) > 1:
            torrent[b"announce-list"] = [[url.encode("utf-8")] for url in tracker_list]
    seed_list = list(dict.fromkeys(web_seeds))
    if len(seed_list) == 1:
        torrent[b"url-list"] = seed_list[0].encode("utf-8")
    elif seed_list:
        torrent[b"url-list"] = [url.encode("utf-8") for url in seed_list]
    return bencode(torrent)
