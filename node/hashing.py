"""Turn files and folders on disk into a container: scan, hash on every core, build the tree.

Hashing is the slow part of adding data (a terabyte archive is a terabyte of SHA-256), so it
is spread over all cores. hashlib releases the GIL while it hashes a buffer larger than 2 KiB,
and file reads release it too, so plain threads scale: the files are cut into *units* of up
to `UNIT_BYTES` (aligned to the 16 KiB block, so each unit yields a run of leaf hashes), the
units are hashed by `workers` threads at once, and each file's leaves are put back together
in order before its Merkle tree (about 1% of the work) is built. Each worker thread reuses
one read buffer, so hashing a large file does not allocate a large file's worth of memory.

The blocking work runs through a `run_blocking` callable: the Network seam's (a thread on real
networks) or `trio.to_thread.run_sync` for the command line.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from wire.container import FileEntry, Manifest, check_path_component
from wire.errors import DecodeError
from wire.merkle import (
    BLOCK_SIZE,
    MAX_PIECE_LENGTH,
    MIN_PIECE_LENGTH,
    block_count,
    parent_layer,
    piece_height,
    root_from_layer,
    tree_height,
)

UNIT_BYTES: Final = 16 * 1024 * 1024
"""Work handed to one thread at a time: big enough that scheduling costs nothing, small
enough that two threads stay busy on a single large file. A power of two times the block, so
every unit is a complete subtree (of height UNIT_HEIGHT) that its worker builds."""
UNIT_HEIGHT: Final = (UNIT_BYTES // BLOCK_SIZE).bit_length() - 1
READ_BYTES: Final = 1024 * 1024
"""Each read is hashed while it is still in the CPU cache: reading a whole unit first and
hashing it afterwards goes to memory twice and costs about a fifth of the throughput."""
TARGET_PIECES: Final = 2048
"""Pieces per container we aim for when choosing the piece length (BitTorrent clients use
1,000-2,000); blocks are still verified one by one through Merkle proofs."""
PARTIAL_DIR: Final = ".kinswarm-partial"

RunBlocking = Callable[..., Awaitable[Any]]
Progress = Callable[[int], None]
"""Called with the number of bytes just hashed."""


class ScanError(Exception):
    """A path cannot become a container (say why, and which file)."""


@attrs.frozen
class ScannedFile:
    path: tuple[str, ...]
    """Relative to the container's folder."""
    source: Path
    length: int


@attrs.frozen
class HashedFile:
    path: tuple[str, ...]
    length: int
    root: bytes | None
    piece_layer: list[bytes]


def choose_piece_length(total_length: int) -> int:
    """The smallest power of two ≥ 16 KiB giving at most TARGET_PIECES pieces (≤ 16 MiB)."""
    piece_length = MIN_PIECE_LENGTH
    while piece_length < MAX_PIECE_LENGTH // 4 and total_length > piece_length * TARGET_PIECES:
        piece_length *= 2
    return piece_length


def scan(path: Path) -> list[ScannedFile]:
    """The regular files under `path` (or `path` itself), sorted, with safe relative paths.

    Symbolic links are not followed (a link could point anywhere, and would be followed
    differently on another machine); special files are refused; names that are not safe on
    every OS are refused with the offending path, since a container must unpack anywhere.
    """
    try:
        info = path.lstat()
    except OSError as exc:
        raise ScanError(f"cannot read {path}: {exc.strerror}") from exc
    if stat.S_ISREG(info.st_mode):
        return [ScannedFile((_safe_name(path.name, path),), path, info.st_size)]
    if not stat.S_ISDIR(info.st_mode):
        raise ScanError(f"{path} is neither a regular file nor a folder")
    found: list[ScannedFile] = []
    for directory, folders, files in os.walk(path, onerror=_raise_scan_error):
        folders[:] = sorted(name for name in folders if name != PARTIAL_DIR)
        base = Path(directory)
        relative = base.relative_to(path).parts
        for name in sorted(files):
            source = base / name
            entry = source.lstat()
            if stat.S_ISLNK(entry.st_mode):
                continue
            if not stat.S_ISREG(entry.st_mode):
                raise ScanError(f"{source} is not a regular file")
            parts = tuple(_safe_name(part, source) for part in (*relative, name))
            found.append(ScannedFile(parts, source, entry.st_size))
        for folder in folders:
            _safe_name(folder, base / folder)
    found.sort(key=lambda f: tuple(part.encode("utf-8") for part in f.path))
    return found


def _raise_scan_error(error: OSError) -> None:
    raise ScanError(f"cannot read {error.filename}: {error.strerror}")


def _safe_name(name: str, where: Path) -> str:
    try:
        return check_path_component(name)
    except DecodeError as exc:
        raise ScanError(f"{where}: {exc}") from exc


_buffers = threading.local()


def _buffer(size: int) -> bytearray:
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = bytearray(size)
        _buffers.buffer = buffer
    return buffer


def hash_unit(
    source: Path, offset: int, length: int, piece_height: int, top_height: int
) -> tuple[list[bytes], list[bytes]]:
    """Hash `length` bytes of `source` from `offset` and build their part of the tree.

    Units start on multiples of UNIT_BYTES, so a unit's leaves are a complete, aligned
    subtree (the last one padded as the whole tree is). Returns the unit's nodes at
    `piece_height` (its share of the piece layer) and at `top_height` (what is left for the
    caller to combine). Blocking; runs on a worker thread."""
    buffer = _buffer(READ_BYTES)
    view = memoryview(buffer)
    sha256 = hashlib.sha256
    layer: list[bytes] = []
    with open(source, "rb", buffering=0) as handle:
        handle.seek(offset)
        remaining = length
        while remaining:
            # Read a cache-sized step and hash it while it is still in the CPU cache.
            wanted = min(READ_BYTES, remaining)
            filled = 0
            while filled < wanted:
                count = handle.readinto(view[filled:wanted])
                if not count:
                    raise ScanError(f"{source} shrank while it was being hashed")
                filled += count
            step = view[:wanted]
            layer.extend(
                sha256(step[start : start + BLOCK_SIZE]).digest()
                for start in range(0, wanted, BLOCK_SIZE)
            )
            remaining -= wanted
    pieces = layer if piece_height == 0 else []
    for height in range(top_height):
        layer = parent_layer(layer, height)
        if height + 1 == piece_height:
            pieces = layer
    return pieces, layer


async def hash_files(
    files: Sequence[ScannedFile],
    *,
    piece_length: int,
    run_blocking: RunBlocking,
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[HashedFile]:
    """Hash `files` on `workers` threads (default: every core); return roots and layers."""
    workers = workers or os.cpu_count() or 1
    units: list[tuple[int, int, int]] = []  # (file index, offset, length)
    for index, scanned in enumerate(files):
        for offset in range(0, scanned.length, UNIT_BYTES):
            units.append((index, offset, min(UNIT_BYTES, scanned.length - offset)))
    parts: dict[tuple[int, int], tuple[list[bytes], list[bytes]]] = {}
    pending = iter(units)
    wanted_piece_height = piece_height(piece_length)

    async def worker() -> None:
        for index, offset, length in pending:
            height = tree_height(block_count(files[index].length))
            parts[(index, offset)] = await run_blocking(
                hash_unit,
                files[index].source,
                offset,
                length,
                min(wanted_piece_height, height),
                min(UNIT_HEIGHT, height),
            )
            if progress is not None:
                progress(length)

    async with trio.open_nursery() as nursery:
        for _ in range(min(workers, max(1, len(units)))):
            nursery.start_soon(worker)
    hashed: list[HashedFile] = []
    for index, scanned in enumerate(files):
        if scanned.length == 0:
            hashed.append(HashedFile(scanned.path, 0, None, []))
            continue
        offsets = range(0, scanned.length, UNIT_BYTES)
        unit_parts = [parts.pop((index, offset)) for offset in offsets]
        height = tree_height(block_count(scanned.length))
        top = [node for _, nodes in unit_parts for node in nodes]
        root = root_from_layer(top, min(UNIT_HEIGHT, height), height)
        if wanted_piece_height >= height:
            layer = [root]
        else:
            layer = [node for pieces, _ in unit_parts for node in pieces]
        hashed.append(HashedFile(scanned.path, scanned.length, root, layer))
    return hashed


async def build_container(
    path: Path,
    *,
    run_blocking: RunBlocking,
    name: str | None = None,
    replaces: bytes | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    on_scanned: Callable[[list[ScannedFile]], None] | None = None,
) -> tuple[Manifest, dict[bytes, list[bytes]], list[ScannedFile]]:
    """Scan and hash `path` into a manifest, the piece layers by root, and the files found."""
    files: list[ScannedFile] = await run_blocking(scan, path)
    if on_scanned is not None:
        on_scanned(files)
    total = sum(f.length for f in files)
    piece_length = choose_piece_length(total)
    hashed = await hash_files(
        files,
        piece_length=piece_length,
        run_blocking=run_blocking,
        workers=workers,
        progress=progress,
    )
    container_name = _safe_name(name or path.name, path)
    manifest = Manifest.build(
        name=container_name,
        piece_length=piece_length,
        files=[FileEntry(h.path, h.length, h.root) for h in hashed],
        replaces=replaces,
    )
    layers = {h.root: h.piece_layer for h in hashed if h.root is not None}
    return manifest, layers, files
