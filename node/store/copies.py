"""A root's bytes and its copies on disk: the in-memory root record, the descriptors one
operation opens, and copying verified pieces between copies.

Every file of every container that has a given root is a *copy* of that root. The store keeps
one invariant about them (see `node.store.store`): every piece marked held is intact in every
copy. Whatever moves bytes between copies here re-verifies each piece as it reads it, so a copy
damaged behind our back is never spread to the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Self

import attrs

from node.store import disk
from node.store.pieces import (
    bit_indices,
    empty_bits,
    piece_matches,
    piece_size,
    popcount,
    set_bits,
    stored_spans,
)
from wire.merkle import piece_count

_BINARY: Final = getattr(os, "O_BINARY", 0)


@attrs.define
class RootRow:
    """A `file_data` row in memory (mutable while an operation builds its new state)."""

    root: bytes
    length: int
    piece_length: int
    """The finest piece length the store has seen for this root; `layer` and `held` use it."""
    layer: list[bytes]
    held: bytes

    @property
    def count(self) -> int:
        return piece_count(self.length, self.piece_length)

    @property
    def complete(self) -> bool:
        return popcount(self.held) == self.count


@attrs.frozen
class Copy:
    """One file on disk holding a root's bytes."""

    container_id: bytes
    path: Path
    partial: bool
    """In a download's partial folder: ours, so recreated (sparse) if it went missing."""


class OpenFiles:
    """Descriptors opened during one operation: each file is opened once, and every file
    written is fsynced once by `sync()` (with the folders of any file or folder that had to
    be created), however many pieces went into it."""

    def __init__(self) -> None:
        self._readers: dict[Path, int | None] = {}
        self._writers: dict[Path, int | None] = {}
        self._new_entries: list[Path] = []
        self.recreated: list[Copy] = []
        """Download files that had vanished and were created again, empty: whatever was
        held in them is gone, so the caller must restore or unmark it before committing."""

    def read(self, path: Path, size: int, offset: int) -> bytes | None:
        """`size` bytes at `offset`, or None if the file is missing or too short."""
        if path not in self._readers:
            try:
                self._readers[path] = os.open(path, os.O_RDONLY | _BINARY)
            except (FileNotFoundError, NotADirectoryError):
                self._readers[path] = None
        descriptor = self._readers[path]
        return None if descriptor is None else disk.pread_exact(descriptor, size, offset)

    def write(self, copy: Copy, length: int, data: bytes | memoryview, offset: int) -> bool:
        """Write into a copy; False if it has vanished. Only a download's files, which are
        ours, are recreated: a user's missing file stays missing (`verify` reports it)."""
        if copy.path not in self._writers:
            created = [] if copy.path.exists() else [copy.path]
            created += [parent for parent in copy.path.parents if not parent.exists()]
            self._writers[copy.path] = disk.open_for_write(
                copy.path, create_length=length if copy.partial else None
            )
            if self._writers[copy.path] is not None:
                self._new_entries += created
                if created:
                    self.recreated.append(copy)
        descriptor = self._writers[copy.path]
        if descriptor is None:
            return False
        disk.pwrite_all(descriptor, data, offset)
        return True

    def sync(self) -> None:
        """fsync every file written, then the folders whose entries changed."""
        for descriptor in self._writers.values():
            if descriptor is not None:
                os.fsync(descriptor)
        for folder in dict.fromkeys(entry.parent for entry in self._new_entries):
            disk.fsync_dir(folder)
        self._new_entries.clear()

    def close(self) -> None:
        for descriptor in (*self._readers.values(), *self._writers.values()):
            if descriptor is not None:
                os.close(descriptor)
        self._readers.clear()
        self._writers.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def copy_pieces(
    files: OpenFiles,
    row: RootRow,
    sources: Sequence[Copy],
    destinations: Sequence[Copy],
    pieces: Iterable[int],
) -> list[int]:
    """Copy each piece from the first source where it verifies into every destination.
    Returns the pieces copied; a piece no source has intact is left out. The caller syncs."""
    copied = []
    for index in pieces:
        size = piece_size(row.length, row.piece_length, index)
        offset = index * row.piece_length
        for source in sources:
            data = files.read(source.path, size, offset)
            if data is not None and piece_matches(
                data, index, row.length, row.piece_length, row.layer
            ):
                for destination in destinations:
                    files.write(destination, row.length, data, offset)
                copied.append(index)
                break
    return copied


def fine_parts(
    row: RootRow, index: int, data: memoryview, piece_length: int | None
) -> list[tuple[int, memoryview]] | None:
    """Cut a piece given at `piece_length` (a container's, default the stored one) into the
    stored pieces it spans (`stored_spans`); None if its index or size is wrong for the file."""
    spans = stored_spans(row.length, row.piece_length, index, len(data), piece_length)
    if spans is None:
        return None
    return [(fine, data[start : start + size]) for fine, start, size in spans]


def refill_recreated(files: OpenFiles, row: RootRow, copies: Sequence[Copy]) -> bool:
    """Download files among `copies` that `files` had to create again (the user deleted
    the partial folder) are empty: copy the root's held pieces back into them from the other
    copies, and unmark in `row.held` the pieces no copy has any more. True if any was found."""
    recreated = [copy for copy in files.recreated if copy in copies]
    for new in recreated:
        others = [copy for copy in copies if copy != new]
        kept = copy_pieces(files, row, others, [new], bit_indices(row.held, row.count))
        row.held = set_bits(empty_bits(row.count), kept)
        files.recreated.remove(new)
    return bool(recreated)
