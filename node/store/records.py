"""What the store hands back: plain frozen records and the store's errors.

Kept apart from `node.store.store` so callers (the swarm engine, the control API, the CLI) can
name these types without pulling in the SQLite side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import attrs

from node.store.names import Extra
from node.store.pieces import bit_indices, has_bit, popcount
from wire.container import Manifest, Metadata

State = Literal["partial", "complete"]
"""Where a container's folder is: `partial` while it downloads under the partial folder,
`complete` once it is at its final location (or was added in place). Whether every piece is
currently held is a separate question (`Store.is_complete`): `verify` may find a complete
container damaged on disk, and then its missing pieces are fetched again into its folder."""

Progress = Callable[[int, int], None]
"""`progress(done_bytes, total_bytes)`, called from the store's worker thread while it holds
the store's lock: it must be quick and must not call the store."""


class StoreError(Exception):
    """The store cannot do what was asked; the message says why."""


class StoreLocked(StoreError):
    """Another process (a running node) holds the store."""


class UnknownContainer(StoreError):
    """No container with that id is in the index."""


class UnknownRoot(StoreError):
    """No file with that root is in the index."""


class AlreadyStored(StoreError):
    """A container with that id is already in the index."""


class NotHeld(StoreError):
    """The piece is not verified on disk; serving it could hand out unverified bytes."""


class WouldBlock(StoreError):
    """Answering now would wait (on the disk, or on another thread using the store): ask
    again from a worker thread."""


@attrs.frozen
class ContainerRecord:
    """One container as the index knows it (without its manifest: `Store.manifest(id)`)."""

    id: bytes
    name: str
    piece_length: int
    total_length: int
    location: Path
    """The folder the manifest's paths are relative to."""
    state: State
    added_at: float
    metadata: Metadata
    target_dir: Path | None
    """For a download: the folder it moves into when complete."""


@attrs.frozen
class StoredFile:
    index: int
    path: tuple[str, ...]
    length: int
    root: bytes | None
    disk_path: Path


@attrs.frozen
class Held:
    """Which pieces of one file are verified on disk, at one piece length."""

    piece_length: int
    count: int
    bits: bytes
    """BEP 3 bitfield: piece i is bit `0x80 >> (i % 8)` of byte `i // 8`."""

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and 0 <= index < self.count and has_bit(self.bits, index)

    def __len__(self) -> int:
        return popcount(self.bits)

    def __iter__(self) -> Iterator[int]:
        return iter(bit_indices(self.bits, self.count))

    @property
    def complete(self) -> bool:
        return len(self) == self.count


@attrs.frozen
class NewContainer:
    """One entry for `Store.add_containers` (bulk adds of containers already on disk)."""

    manifest: Manifest
    piece_layers: Mapping[bytes, Sequence[bytes]]
    location: Path
    metadata: Metadata | None = None
    names: Mapping[str, Extra | None] = attrs.field(factory=dict)


@attrs.frozen
class WriteResult:
    """What `write_piece`/`write_pieces` did."""

    refused: tuple[tuple[bytes, int], ...] = ()
    """(root, piece index) of pieces that failed verification: nothing of them was marked
    held. The caller blames whoever sent them."""
    completed: tuple[bytes, ...] = ()
    """Ids of containers these pieces completed (already moved into place)."""

    @property
    def ok(self) -> bool:
        return not self.refused


@attrs.frozen
class FileReport:
    """The outcome of re-hashing one file of a container (pieces at `piece_length`, the
    finest the store keeps for that root)."""

    index: int
    path: tuple[str, ...]
    root: bytes
    piece_length: int
    pieces: int
    bad: tuple[int, ...]
    """Pieces that were held and are not intact on disk any more (changed, truncated or
    deleted behind our back): damage. They are no longer held."""
    missing: tuple[int, ...]
    """Pieces that were not held and are not on disk either: still to be fetched."""

    @property
    def ok(self) -> bool:
        return not self.bad and not self.missing


@attrs.frozen
class VerifyReport:
    container_id: bytes
    files: tuple[FileReport, ...]
    unheld: int
    """Pieces that were marked held and are not any more (found damaged or missing)."""
    newly_held: int
    """Pieces found good on disk that were not marked held (now they are)."""

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.files)

    @property
    def bad_pieces(self) -> int:
        return sum(len(report.bad) + len(report.missing) for report in self.files)
