"""The simulator's virtual disk: an in-memory `SwarmStore` over content shared by every node.

A thousand simulated nodes cannot each write, fsync and re-read real files, and they do not
need to: every node that holds a file holds *the same bytes*. So content is virtual too:

* `Content` is one registry per simulation. Each file's bytes are a deterministic function
  (`Content.generate(label, length)`: a `random.Random` seeded from the label through SHA-256),
  materialised once and shared by every node; its Merkle tree (root, piece layers) is computed
  once (`wire.merkle`). `Content.container(...)` builds a manifest and its piece layers from
  such files, as `node.hashing.build_container` does from a folder.
* `MemoryStore` is one node's store. Per file root it keeps only the piece layer (a reference
  to the registry's list when the layer is the registry's) and a bitfield of held pieces; per
  container its manifest, record and state. Bytes are never copied into it: `read_piece`
  slices the shared content, and only for held pieces.

**Semantics are the real store's** (`node.store.Store`), method by method: the same records
(`ContainerRecord`, `Held`, `WriteResult`), the same errors (`UnknownContainer`,
`UnknownRoot`, `AlreadyStored`, `NotHeld`, `StoreError`), held state per root (a file shared by
two containers is fetched once), the finest piece length seen per root with coarser layers and
bitfields derived, pieces already held copied into a new download, a complete copy filling
waiting downloads, and a download moved to `<target>/<name>` (or `<name> (2)`, ...) when its
last piece is held, reported in `WriteResult.completed`. `tests/sim/test_memstore.py` runs the
same behaviours against both stores.

**Verification is not skipped.** `write_pieces` checks every piece before marking it held, as
the real store does, so a simulated node cannot accept garbage either. By default
(`verify="compare"`) it compares the piece with the registry's bytes for that root instead of
hashing it. That is the same test: the store only knows a root whose layer it checked against
the root (`normalise_layer`), and the registry's bytes for a root are bytes whose tree has that
root, so the layer entry for piece i is the hash of the registry's piece i. Equal bytes
therefore hash to the layer entry; different bytes that hashed to it would be a SHA-256
second preimage. A root the registry does not know (bytes nobody in the simulation has) is
hashed, as is everything with `verify="hash"`; `tests/sim/test_memstore.py` measures both.

Never: no file I/O (the `location` and `target_dir` paths are names only), no clock (`now` is
passed in), no randomness outside `Content.generate`'s seeded generators, no iteration over
sets.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

import attrs

from node.store.pieces import (
    coarser_bits,
    coarser_layer,
    empty_bits,
    finer_bits,
    full_bits,
    has_bit,
    normalise_layer,
    piece_matches,
    piece_size,
    pieces_per,
    popcount,
    set_bits,
    stored_spans,
)
from node.store.records import (
    AlreadyStored,
    ContainerRecord,
    Held,
    NewContainer,
    NotHeld,
    StoreError,
    UnknownContainer,
    UnknownRoot,
    WriteResult,
)
from wire.container import FileEntry, Manifest, Metadata
from wire.errors import DecodeError
from wire.merkle import MerkleTree, piece_count

PARTIAL_DIR: Final = ".kinswarm-partial"
"""As `node.store.disk.PARTIAL_DIR`: where a download lives until it is complete."""

Verify = Literal["compare", "hash"]


@attrs.frozen(eq=False)
class VirtualFile:
    """One file's bytes and Merkle tree, shared by every node of a simulation."""

    data: bytes
    tree: MerkleTree

    @property
    def root(self) -> bytes:
        return self.tree.root

    @property
    def length(self) -> int:
        return len(self.data)


class Content:
    """The registry of every file's bytes in one simulation (see the module docstring)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._files: dict[bytes, VirtualFile] = {}
        self._layers: dict[tuple[bytes, int], list[bytes]] = {}

    def generate(self, label: object, length: int) -> VirtualFile:
        """A file of `length` pseudo-random bytes, a pure function of (seed, label, length)."""
        if length <= 0:
            raise ValueError("a virtual file has at least one byte (empty files have no root)")
        text = f"{self.seed}/{label}/{length}".encode()
        generator = random.Random(int.from_bytes(hashlib.sha256(text).digest()[:8], "big"))
        return self.add(generator.randbytes(length))

    def add(self, data: bytes) -> VirtualFile:
        """Register `data` (once per distinct content) and return its file."""
        tree = MerkleTree.from_data(data)
        existing = self._files.get(tree.root)
        if existing is not None:
            return existing
        file = VirtualFile(bytes(data), tree)
        self._files[tree.root] = file
        return file

    def get(self, root: bytes) -> VirtualFile | None:
        return self._files.get(root)

    def __contains__(self, root: object) -> bool:
        return root in self._files

    def __len__(self) -> int:
        return len(self._files)

    def layer(self, root: bytes, piece_length: int) -> list[bytes]:
        """The root's piece layer at `piece_length` (`[root]` for a one-piece file), computed
        once and shared: callers must not change it."""
        key = (root, piece_length)
        layer = self._layers.get(key)
        if layer is None:
            file = self._files[root]
            layer = self._layers[key] = file.tree.piece_layer(piece_length)
        return layer

    def container(
        self,
        name: str,
        files: Sequence[tuple[str, VirtualFile | None]],
        piece_length: int,
    ) -> tuple[Manifest, dict[bytes, list[bytes]]]:
        """A manifest of `files` ((`/`-separated path, file or None for an empty file)) and
        the piece layers of its roots, like `node.hashing.build_container`."""
        entries = []
        layers: dict[bytes, list[bytes]] = {}
        for path, file in files:
            parts = tuple(path.split("/"))
            if file is None:
                entries.append(FileEntry(parts, 0, None))
                continue
            entries.append(FileEntry(parts, file.length, file.root))
            layers[file.root] = self.layer(file.root, piece_length)
        return Manifest.build(name=name, piece_length=piece_length, files=entries), layers


@attrs.define(eq=False)
class _Root:
    """A root as one node holds it (the real store's `file_data` row)."""

    root: bytes
    length: int
    piece_length: int
    """The finest piece length this store has seen for the root; `layer`/`held` use it."""
    layer: list[bytes]
    held: bytes
    held_count: int
    containers: list[bytes] = attrs.Factory(list)
    """Containers with a file of this root (insertion order): its "copies"."""

    @property
    def count(self) -> int:
        return piece_count(self.length, self.piece_length)

    @property
    def complete(self) -> bool:
        return self.held_count == self.count


@attrs.define(eq=False)
class _Container:
    record: ContainerRecord
    manifest: Manifest
    roots: list[bytes]
    """Distinct roots of its files, in manifest order."""


class MemoryStore:
    """One node's store over a shared `Content` registry (see the module docstring)."""

    def __init__(self, content: Content, *, verify: Verify = "compare") -> None:
        self.content = content
        self.verify = verify
        self._containers: dict[bytes, _Container] = {}
        self._roots: dict[bytes, _Root] = {}
        self._taken: dict[Path, None] = {}
        """Folders in use as some container's location (for `<name> (2)` on completion)."""
        self.pieces_hashed = 0
        self.pieces_compared = 0

    def close(self) -> None:
        """Nothing to release; for symmetry with `Store`."""

    # -- reading ---------------------------------------------------------------------------

    def list_containers(self) -> list[ContainerRecord]:
        records = [c.record for c in self._containers.values()]
        return sorted(records, key=lambda r: (r.added_at, r.id))

    def get(self, container_id: bytes) -> ContainerRecord | None:
        container = self._containers.get(container_id)
        return None if container is None else container.record

    def is_complete(self, container_id: bytes) -> bool:
        container = self._require(container_id)
        return all(self._roots[root].complete for root in container.roots)

    def manifest(self, container_id: bytes) -> Manifest:
        return self._require(container_id).manifest

    def piece_layer(self, root: bytes, piece_length: int | None = None) -> list[bytes]:
        row = self._require_root(root)
        if piece_length is None or piece_length == row.piece_length:
            return list(row.layer)
        return coarser_layer(row.layer, row.length, row.piece_length, piece_length)

    def held(self, root: bytes, piece_length: int | None = None) -> Held:
        row = self._require_root(root)
        if piece_length is None or piece_length == row.piece_length:
            return Held(row.piece_length, row.count, row.held)
        bits, count = coarser_bits(row.held, row.count, pieces_per(piece_length, row.piece_length))
        return Held(piece_length, count, bits)

    def read_piece_nowait(
        self, root: bytes, index: int, *, piece_length: int | None = None
    ) -> bytes | bytearray:
        """Memory never makes anyone wait."""
        return self.read_piece(root, index, piece_length=piece_length)

    def read_piece(self, root: bytes, index: int, *, piece_length: int | None = None) -> bytes:
        row = self._require_root(root)
        unit = piece_length or row.piece_length
        size = piece_size(row.length, unit, index)
        offset = index * unit
        first, last = offset // row.piece_length, (offset + size - 1) // row.piece_length
        if not all(has_bit(row.held, fine) for fine in range(first, last + 1)):
            raise NotHeld(f"piece {index} of {root.hex()} is not held")
        file = self.content.get(root)
        if file is None:  # held, so verified: only a registry swapped under us gets here
            raise StoreError(f"no copy of {root.hex()} is readable on disk (run verify)")
        return file.data[offset : offset + size]

    # -- writing ---------------------------------------------------------------------------

    def write_piece(
        self, root: bytes, index: int, data: bytes, *, piece_length: int | None = None
    ) -> WriteResult:
        return self.write_pieces([(root, index, data)], piece_length=piece_length)

    def write_pieces(
        self,
        pieces: Iterable[tuple[bytes, int, bytes | bytearray | memoryview]],
        *,
        piece_length: int | None = None,
    ) -> WriteResult:
        """Verify every piece, then mark the good ones held (all or nothing per piece, as
        the real store: an unknown root raises before anything is marked)."""
        refused: list[tuple[bytes, int]] = []
        marks: list[tuple[_Root, int]] = []
        for root, index, data in pieces:
            row = self._require_root(root)
            parts = stored_spans(row.length, row.piece_length, index, len(data), piece_length)
            if parts is None or not all(
                self._piece_ok(row, fine, data, start, size) for fine, start, size in parts
            ):
                refused.append((root, index))
                continue
            marks += [(row, fine) for fine, _, _ in parts]
        landed: dict[bytes, None] = {}
        for row, fine in marks:
            if not has_bit(row.held, fine):
                row.held = set_bits(row.held, (fine,))
                row.held_count += 1
                landed[row.root] = None
        completed = self._finish_ready(self._partial_holding(landed))
        return WriteResult(tuple(refused), tuple(completed))

    def _piece_ok(
        self, row: _Root, fine: int, data: bytes | bytearray | memoryview, start: int, size: int
    ) -> bool:
        """Piece `fine` (stored piece length) of `row` is `data[start:start + size]`."""
        file = self.content.get(row.root) if self.verify == "compare" else None
        if file is not None:
            self.pieces_compared += 1
            offset = fine * row.piece_length
            part = data if start == 0 and size == len(data) else bytes(data[start : start + size])
            # bytes == bytes is a memcmp; comparing memoryviews goes item by item (30x slower).
            return bytes(part) == file.data[offset : offset + size]
        self.pieces_hashed += 1
        view = memoryview(data)[start : start + size]
        return piece_matches(view, fine, row.length, row.piece_length, row.layer)

    # -- adding ----------------------------------------------------------------------------

    def add_container(
        self,
        manifest: Manifest,
        piece_layers: Mapping[bytes, Sequence[bytes]],
        location: Path | str,
        *,
        complete: bool,
        now: float,
        metadata: Metadata | None = None,
    ) -> ContainerRecord:
        """Index a container: `complete=True` holds every piece (the registry must know
        every root: that is "the files are there"); `complete=False` is a download into
        `location`, which gets the pieces already held and may complete at once."""
        container_id = self._add(manifest, piece_layers, Path(location), complete, now, metadata)
        return self._containers[container_id].record

    def add_containers(
        self, entries: Iterable[NewContainer], *, now: float, check_files: bool = True
    ) -> int:
        """Bulk-add complete containers (as `Store.add_containers`); returns how many."""
        added = 0
        for entry in entries:
            self._add(entry.manifest, entry.piece_layers, entry.location, True, now, entry.metadata)
            added += 1
        return added

    def _add(
        self,
        manifest: Manifest,
        piece_layers: Mapping[bytes, Sequence[bytes]],
        location: Path,
        complete: bool,
        now: float,
        metadata: Metadata | None,
    ) -> bytes:
        container_id = manifest.id
        if container_id in self._containers:
            raise AlreadyStored(f"container {container_id.hex()} is already in the store")
        location = location.absolute()
        if complete:
            folder, target_dir = location, None
            for entry in manifest.files:
                if entry.root is not None and entry.root not in self.content:
                    where = location.joinpath(*entry.path)
                    raise StoreError(f"{where}: No such file (no content for its root)")
        else:
            folder = location / PARTIAL_DIR / container_id.hex() / manifest.name
            target_dir = location
        lengths: dict[bytes, int] = {}
        for entry in manifest.files:
            if entry.root is not None:
                lengths[entry.root] = entry.length
        # Check every root before changing anything (the real store plans, then commits).
        planned = {
            root: self._plan_root(root, length, manifest, piece_layers, complete)
            for root, length in lengths.items()
        }
        filled: list[bytes] = []
        for root, row in planned.items():
            existing = self._roots.get(root)
            if existing is None:
                self._roots[root] = row
            else:
                if complete:  # our copy gives the root every piece it lacked
                    row.held = full_bits(row.count)
                    row.held_count = row.count
                    filled.append(root)
                existing.piece_length = row.piece_length
                existing.layer = row.layer
                existing.held = row.held
                existing.held_count = row.held_count
                row = existing
            row.containers.append(container_id)
        record = ContainerRecord(
            id=container_id,
            name=manifest.name,
            piece_length=manifest.piece_length,
            total_length=manifest.total_length,
            location=folder,
            state="complete" if complete else "partial",
            added_at=float(now),
            metadata=metadata if metadata is not None else Metadata(),
            target_dir=target_dir,
        )
        self._containers[container_id] = _Container(record, manifest, list(lengths))
        self._taken[folder] = None
        waiting = [] if complete else [container_id]
        self._finish_ready(dict.fromkeys([*waiting, *self._partial_holding(filled)]))
        return container_id

    def _plan_root(
        self,
        root: bytes,
        length: int,
        manifest: Manifest,
        piece_layers: Mapping[bytes, Sequence[bytes]],
        complete: bool,
    ) -> _Root:
        """The root's row as it will be (a new object: nothing is changed yet)."""
        piece_length = manifest.piece_length
        given = piece_layers.get(root)
        row = self._roots.get(root)
        where = f"{manifest.name}: file {root.hex()}"
        try:
            if row is None:
                layer = self._layer(given, root, length, piece_length)
                count = piece_count(length, piece_length)
                held = full_bits(count) if complete else empty_bits(count)
                return _Root(root, length, piece_length, layer, held, popcount(held))
            if row.length != length:
                raise StoreError(f"{where} is stored with {row.length} bytes, not {length}")
            if piece_length >= row.piece_length:
                if given is not None:
                    self._layer(given, root, length, piece_length)
                return _Root(root, length, row.piece_length, row.layer, row.held, row.held_count)
            layer = self._layer(given, root, length, piece_length)
        except DecodeError as exc:
            raise StoreError(f"{where}: {exc}") from exc
        ratio = pieces_per(row.piece_length, piece_length)
        count = piece_count(length, piece_length)
        held = finer_bits(row.held, row.count, ratio, count)
        return _Root(root, length, piece_length, layer, held, popcount(held))

    def _layer(
        self, given: Sequence[bytes] | None, root: bytes, length: int, piece_length: int
    ) -> list[bytes]:
        """`normalise_layer`, returning the registry's shared list when it is that layer
        (one copy of a layer for a thousand nodes)."""
        shared = self._shared_layer(root, piece_length)
        if shared is not None and given is not None and list(given) == shared:
            return shared  # equal to the registry's layer, which hashes to the root
        layer = normalise_layer(given, root, length, piece_length)
        return shared if shared is not None and layer == shared else layer

    def _shared_layer(self, root: bytes, piece_length: int) -> list[bytes] | None:
        return self.content.layer(root, piece_length) if root in self.content else None

    # -- completion ------------------------------------------------------------------------

    def _partial_holding(self, roots: Iterable[bytes]) -> list[bytes]:
        found: dict[bytes, None] = {}
        for root in roots:
            for container_id in self._roots[root].containers:
                if self._containers[container_id].record.state == "partial":
                    found[container_id] = None
        return list(found)

    def _finish_ready(self, container_ids: Iterable[bytes]) -> list[bytes]:
        """Move the downloads among `container_ids` whose pieces are all held."""
        finished = []
        for container_id in container_ids:
            container = self._containers[container_id]
            if container.record.state != "partial" or not self.is_complete(container_id):
                continue
            record = container.record
            assert record.target_dir is not None
            destination = next(
                path
                for path in _destinations(record.target_dir, record.name)
                if path not in self._taken
            )
            self._taken.pop(record.location, None)
            self._taken[destination] = None
            container.record = attrs.evolve(record, location=destination, state="complete")
            finished.append(container_id)
        return finished

    # -- lookups ---------------------------------------------------------------------------

    def _require(self, container_id: bytes) -> _Container:
        container = self._containers.get(container_id)
        if container is None:
            raise UnknownContainer(f"no container {container_id.hex()}")
        return container

    def _require_root(self, root: bytes) -> _Root:
        row = self._roots.get(root)
        if row is None:
            raise UnknownRoot(f"no file with root {root.hex()}")
        return row


def _destinations(target_dir: Path, name: str) -> Iterable[Path]:
    yield target_dir / name
    number = 2
    while True:
        yield target_dir / f"{name} ({number})"
        number += 1
