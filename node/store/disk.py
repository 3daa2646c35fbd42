"""Small, careful file-system operations for the store: positioned reads and writes, fsync of
files and folders, sparse creation, and moving a finished download into place.

Everything here is synchronous and short; the store calls it from a worker thread. Nothing
here ever deletes a file: the only removals are of folders that are empty by construction
(`rmdir`, which refuses anything else).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

PARTIAL_DIR: Final = ".kinswarm-partial"
"""Downloads in progress live under `<download dir>/.kinswarm-partial/<id hex>/<name>`: beside
their destination (so the final move is a rename on the same file system, atomic and instant)
and hidden from the user's view of the folder."""

_BINARY: Final = getattr(os, "O_BINARY", 0)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (files created, renamed or removed in it) durable.

    POSIX only: on Windows a folder cannot be opened for fsync, and NTFS journals metadata."""
    if os.name != "posix":
        return
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def pread_exact(descriptor: int, size: int, offset: int) -> bytes | None:
    """`size` bytes at `offset`, or None if the file ends first."""
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = os.pread(descriptor, remaining, offset)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
        offset += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def pwrite_all(descriptor: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(descriptor, view, offset)
        view = view[written:]
        offset += written


def read_at(path: Path, size: int, offset: int) -> bytes | None:
    """Read `size` bytes at `offset` of `path`; None if the file is missing or too short."""
    try:
        descriptor = os.open(path, os.O_RDONLY | _BINARY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return pread_exact(descriptor, size, offset)
    finally:
        os.close(descriptor)


_NOWAIT = getattr(os, "RWF_NOWAIT", None)


def read_at_nowait(path: Path, size: int, offset: int) -> bytearray | None:
    """`read_at`, but only from what the OS holds in memory: raises BlockingIOError where
    the bytes would have to come from the disk (Linux's RWF_NOWAIT; elsewhere, always)."""
    if _NOWAIT is None:
        raise BlockingIOError("reads that never wait need Linux")
    try:
        descriptor = os.open(path, os.O_RDONLY | _BINARY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = 0
        while done < size:
            count = os.preadv(descriptor, [view[done:]], offset + done, _NOWAIT)
            if not count:
                return None
            done += count
        return buffer
    finally:
        os.close(descriptor)


def open_for_write(path: Path, *, create_length: int | None) -> int | None:
    """A descriptor for writing into `path`. If it is missing: create it (sparse, at
    `create_length` bytes, with its folders) when `create_length` is given, else None."""
    try:
        return os.open(path, os.O_WRONLY | _BINARY)
    except (FileNotFoundError, NotADirectoryError):
        if create_length is None:
            return None
    create_sparse(path, create_length)
    return os.open(path, os.O_WRONLY | _BINARY)


def create_sparse(path: Path, length: int) -> None:
    """Create `path` (and its folders) at `length` bytes without writing them: the file
    system allocates blocks only where pieces land. An existing file is resized, never
    rewritten, so re-adding after a crash keeps what was there (unheld, so never served)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | _BINARY, 0o644)
    try:
        if os.fstat(descriptor).st_size != length:
            os.ftruncate(descriptor, length)
    finally:
        os.close(descriptor)


def folders_between(top: Path, paths: Iterator[Path] | list[Path]) -> list[Path]:
    """Every folder from `top` down to each path's parent (deepest first), for fsync."""
    folders: dict[Path, None] = {}
    for path in paths:
        folder = path.parent
        while True:
            folders[folder] = None
            if folder == top or top not in folder.parents:
                break
            folder = folder.parent
    return sorted(folders, key=lambda folder: len(folder.parts), reverse=True)


def destinations(target_dir: Path, name: str) -> Iterator[Path]:
    """`name`, then `name (2)`, `name (3)`... inside `target_dir`."""
    yield target_dir / name
    number = 2
    while True:
        yield target_dir / f"{name} ({number})"
        number += 1


def reserve_folder(path: Path) -> bool:
    """Create `path` as an empty folder; False if something is already there. mkdir is
    atomic and exclusive, so two movers (or the user) can never end up sharing a name."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    return True


def is_empty_folder(path: Path) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except (FileNotFoundError, NotADirectoryError):
        return False


def move_onto_reserved(source: Path, reserved: Path) -> None:
    """Rename folder `source` onto the empty folder `reserved` (which it replaces).

    POSIX rename replaces an empty folder atomically; Windows refuses to replace, so there the
    empty reservation is removed first (a crash in between leaves `source` in place, which
    recovery handles like any unfinished move)."""
    try:
        os.rename(source, reserved)
    except OSError:
        if os.name == "posix" or not is_empty_folder(reserved):
            raise
        os.rmdir(reserved)
        os.rename(source, reserved)


def remove_empty_folders(*folders: Path) -> None:
    """rmdir each folder in order, stopping at the first that is not empty or not there."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def first_mismatch(folder: Path, files: Iterable[tuple[tuple[str, ...], int]]) -> str | None:
    """Why `folder` does not hold these (path, length) files, or None if it does."""
    for parts, length in files:
        path = folder.joinpath(*parts)
        try:
            status = path.stat()
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        if not stat.S_ISREG(status.st_mode) or status.st_size != length:
            return f"{path}: expected a file of {length} bytes"
    return None


def holds_files(folder: Path, files: Iterable[tuple[tuple[str, ...], int]]) -> bool:
    return first_mismatch(folder, files) is None
