"""Adding containers: checking them, doing their disk work, and the rows they insert.

Adding is split in two so that many containers can share one transaction (`Store.
add_containers`): `plan_add` checks a container and does all of its disk work *before* any
commit — a download's files are created sparse, pieces of files the store already holds are
copied in, everything written is fsynced — and returns the rows; the caller then inserts the
rows of every plan in one transaction. A crash in between leaves files on disk that the index
does not mention: a download re-added later reuses them (resized, never trusted: nothing in
them is held until verified), and a user's files were never touched.

Roots shared with containers already stored keep the invariant "every held piece is intact
in every copy":

* a download's new copy receives every held piece (read from an existing copy, re-verified);
  pieces no copy has intact any more are dropped from the held set;
* a complete copy added in place gives every piece the root lacked to the existing copies
  (downloads waiting for them may complete).

A root seen before at a coarser piece length switches to the finer one: its layer is checked
against the root and the held bits are split, so nothing already verified is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from node.store import disk
from node.store.copies import Copy, OpenFiles, RootRow, copy_pieces, refill_recreated
from node.store.index import Index, encode_metadata
from node.store.names import Extra, encode_extra, parse_stored_name
from node.store.pieces import (
    bit_indices,
    empty_bits,
    finer_bits,
    full_bits,
    has_bit,
    normalise_layer,
    pieces_per,
    set_bits,
)
from node.store.records import AlreadyStored, StoreError
from wire.container import Manifest, Metadata
from wire.container import container_id as container_id_of
from wire.errors import DecodeError
from wire.merkle import piece_count

Names = Mapping[str, Extra | None] | Iterable[str]
"""Names for a new container: names alone, or a mapping of name → extra facts."""


@attrs.define
class PendingRow:
    """A root row the adds in one transaction will write, with the copies they add for it."""

    row: RootRow
    new_copies: list[Copy] = attrs.field(factory=list)
    filled: bool = False
    """Pieces were copied into existing downloads' files: some may be complete now."""


@attrs.frozen
class Plan:
    """The rows one new container adds (its disk work already done)."""

    container: tuple[Any, ...]
    files: list[tuple[Any, ...]]
    names: list[tuple[Any, ...]]
    partial: bool

    @property
    def container_id(self) -> bytes:
        return bytes(self.container[0])


@attrs.define
class Batch:
    """Plans that will be committed together, and the root rows they write."""

    plans: list[Plan] = attrs.field(factory=list)
    roots: dict[bytes, PendingRow] = attrs.field(factory=dict)
    ids: set[bytes] = attrs.field(factory=set)

    def insert_into(self, index: Index) -> None:
        index.insert(
            [pending.row for pending in self.roots.values()],
            [plan.container for plan in self.plans],
            [row for plan in self.plans for row in plan.files],
            [row for plan in self.plans for row in plan.names],
        )

    def may_be_complete(self, index: Index) -> list[bytes]:
        """Downloads to check after the commit: new ones (their files may all be shared)
        and those holding roots this batch filled."""
        waiting = [plan.container_id for plan in self.plans if plan.partial]
        filled = [root for root, pending in self.roots.items() if pending.filled]
        return list(dict.fromkeys([*waiting, *index.partial_holding(filled)]))


def plan_add(
    index: Index,
    batch: Batch,
    manifest: Manifest,
    piece_layers: Mapping[bytes, Sequence[bytes]],
    location: Path,
    *,
    complete: bool,
    now: float,
    metadata: Metadata | None,
    names: Names,
    check_files: bool = True,
) -> Plan:
    """Check one container, do its disk work, and add its plan to `batch`."""
    encoded = manifest.encode()
    container_id = container_id_of(encoded)
    if container_id in batch.ids or index.exists(container_id):
        raise AlreadyStored(f"container {container_id.hex()} is already in the store")
    name_rows = [
        (*parse_stored_name(name), container_id, encode_extra(extra))
        for name, extra in _name_items(names)
    ]
    location = location.absolute()
    if complete:
        folder, target_dir = location, None
        problem = check_files and disk.first_mismatch(folder, _sizes(manifest))
        if problem:
            raise StoreError(problem)
    else:
        folder = location / disk.PARTIAL_DIR / container_id.hex() / manifest.name
        target_dir = location
    copies: dict[bytes, list[Copy]] = {}
    lengths: dict[bytes, int] = {}
    for entry in manifest.files:
        if entry.root is not None:
            copy = Copy(container_id, folder.joinpath(*entry.path), not complete)
            copies.setdefault(entry.root, []).append(copy)
            lengths[entry.root] = entry.length
    rows = {
        root: _root_for_add(index, batch, root, length, manifest, piece_layers, complete)
        for root, length in lengths.items()
    }
    if not complete:
        for entry in manifest.files:
            disk.create_sparse(folder.joinpath(*entry.path), entry.length)
        folder.mkdir(parents=True, exist_ok=True)
    filled: set[bytes] = set()
    with OpenFiles() as files:
        for root, (row, is_new) in rows.items():
            if is_new:
                continue
            pending = batch.roots.get(root)
            existing = index.copies(root) + (pending.new_copies if pending else [])
            if complete:
                lacking = [i for i in range(row.count) if not has_bit(row.held, i)]
                gained = copy_pieces(files, row, copies[root], existing, lacking)
                row.held = set_bits(row.held, gained)
                filled.add(root)
            else:
                held = bit_indices(row.held, row.count)
                kept = copy_pieces(files, row, existing, copies[root], held)
                row.held = set_bits(empty_bits(row.count), kept)
            refill_recreated(files, row, [*existing, *copies[root]])
        files.sync()
    if not complete:
        _sync_download(folder, manifest)
    for root, (row, _) in rows.items():
        pending = batch.roots.setdefault(root, PendingRow(row))
        pending.row = row
        pending.new_copies += copies[root]
        pending.filled = pending.filled or root in filled
    plan = Plan(
        container=(
            container_id,
            encoded,
            manifest.name,
            manifest.piece_length,
            manifest.total_length,
            str(folder),
            "complete" if complete else "partial",
            None if target_dir is None else str(target_dir),
            float(now),
            encode_metadata(metadata),
        ),
        files=[
            (container_id, number, "/".join(entry.path), entry.length, entry.root)
            for number, entry in enumerate(manifest.files)
        ],
        names=name_rows,
        partial=not complete,
    )
    batch.plans.append(plan)
    batch.ids.add(container_id)
    return plan


def _root_for_add(
    index: Index,
    batch: Batch,
    root: bytes,
    length: int,
    manifest: Manifest,
    piece_layers: Mapping[bytes, Sequence[bytes]],
    complete: bool,
) -> tuple[RootRow, bool]:
    """The root's row as it will be, and whether it is new to the store."""
    piece_length = manifest.piece_length
    given = piece_layers.get(root)
    pending = batch.roots.get(root)
    row = pending.row if pending is not None else index.root_row(root)
    where = f"{manifest.name}: file {root.hex()}"
    try:
        if row is None:
            layer = normalise_layer(given, root, length, piece_length)
            count = piece_count(length, piece_length)
            held = full_bits(count) if complete else empty_bits(count)
            return RootRow(root, length, piece_length, layer, held), True
        if row.length != length:
            raise StoreError(f"{where} is stored with {row.length} bytes, not {length}")
        if piece_length >= row.piece_length:
            if given is not None:
                normalise_layer(given, root, length, piece_length)
            return attrs.evolve(row), False
        layer = normalise_layer(given, root, length, piece_length)
    except DecodeError as exc:
        raise StoreError(f"{where}: {exc}") from exc
    ratio = pieces_per(row.piece_length, piece_length)
    count = piece_count(length, piece_length)
    held = finer_bits(row.held, row.count, ratio, count)
    return RootRow(root, length, piece_length, layer, held), False


def _name_items(names: Names) -> list[tuple[str, Extra | None]]:
    if isinstance(names, Mapping):
        return list(names.items())
    return [(name, None) for name in names]


def _sizes(manifest: Manifest) -> list[tuple[tuple[str, ...], int]]:
    return [(entry.path, entry.length) for entry in manifest.files]


def _sync_download(folder: Path, manifest: Manifest) -> None:
    """fsync the folders of a new download, down from the download dir, so their entries
    survive a power loss with the commit that records them. The (empty, sparse) files
    themselves need no fsync: nothing in them is held yet, every piece written later is
    fsynced with its file, and a file lost anyway is recreated by the next write."""
    top = folder.parent.parent.parent  # the download dir
    paths = [folder.joinpath(*entry.path) for entry in manifest.files]
    for directory in disk.folders_between(top, [folder / "-", *paths]):
        disk.fsync_dir(directory)
