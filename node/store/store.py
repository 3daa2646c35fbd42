"""The node's crash-safe index and data store.

**What it keeps.** Data stays ordinary files and folders that the user can open, copy and back
up. A container the user adds is indexed in place; a download is written under
`<download dir>/.kinswarm-partial/<id hex>/<name>/` and renamed to `<download dir>/<name>`
(or `<name> (2)`, ...) when every piece is verified (`node.store.moves`). The index (SQLite,
`node.store.schema`) records containers, their names, their files, and per file root the
piece layer and which pieces are *held*: verified and durable on disk.

**The one invariant.** A piece is marked held only after its bytes hashed to the piece layer
and were fsynced into *every* copy of that root (every container file with that root). So:

* nothing unverified is ever served: `read_block` refuses pieces not marked held;
* nothing verified is lost: a crash at any point leaves the held set at its last commit, and
  every piece in it is on disk (data first, then the commit that says so);
* a file shared by several containers is fetched once: held state is per root, and a new
  download's copy receives the held pieces when it is added (`node.store.adding`).

**Write ordering** (`write_pieces`): verify every piece in memory → `pwrite` it into every
copy → `fsync` each touched file once (and the folders of files that had to be created) →
one SQLite transaction marks all of them held → COMMIT (durable on return:
`synchronous=FULL`) → move downloads that became complete. A crash before the COMMIT leaves
bytes on disk that are not marked held: never served, simply written again (or adopted by
`verify`).

**Threads.** `Store` is a plain synchronous class. The Trio side calls it through
`Network.run_blocking` (a worker thread on real networks, a plain call in the simulator). The
SQLite connection is opened with `check_same_thread=False` and every public method holds one
`threading.Lock` for its whole run (disk work included), so calls from several threads are
serialised and each sees the effects of the previous one. A lock file (`index.lock`, `flock`)
keeps a second process from opening the same store.

**Never.** The store never deletes a user's file: `remove` forgets a container; the only
removals are of folders that are empty by construction.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from node.store import disk, moves, schema
from node.store.adding import Batch, Names, plan_add
from node.store.copies import OpenFiles, RootRow, fine_parts, refill_recreated
from node.store.index import Index
from node.store.moves import log
from node.store.names import Extra, ExtraValue, encode_extra, parse_name, parse_stored_name
from node.store.pieces import (
    coarser_bits,
    coarser_layer,
    has_bit,
    piece_matches,
    piece_size,
    pieces_per,
    set_bits,
)
from node.store.records import (
    AlreadyStored,
    ContainerRecord,
    Held,
    NewContainer,
    NotHeld,
    Progress,
    StoredFile,
    StoreError,
    StoreLocked,
    VerifyReport,
    WouldBlock,
    WriteResult,
)
from node.store.verify import verify_container
from wire.container import Manifest, Metadata, decode_manifest
from wire.merkle import BLOCK_SIZE, block_count

INDEX_FILE: Final = "index.sqlite3"
LOCK_FILE: Final = "index.lock"

Phase = Callable[[str], None]
"""Test instrumentation (`Store.on_phase`): called with "pieces-synced" (data fsynced, held
not yet committed), "move-intent" (destination committed, nothing renamed) and "moved"
(renamed, new location not yet committed): the instants a crash is most interesting."""


class Store:
    """The index (`<data_dir>/index.sqlite3`) and the files it describes. See the module
    docstring for the invariant, the write ordering and the threading rules."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.on_phase: Phase | None = None
        self._lock_descriptor = _lock_file(self.data_dir / LOCK_FILE)
        try:
            connection = schema.connect(self.data_dir / INDEX_FILE)
            try:
                schema.migrate(connection)
                self._index = Index(connection)
                self.recover()
            except BaseException:
                connection.close()
                raise
        except BaseException:
            os.close(self._lock_descriptor)
            raise

    def close(self) -> None:
        """Close the index and release the lock file (safe to call twice)."""
        with self._lock:
            if self._lock_descriptor < 0:
                return
            self._index.db.close()
            os.close(self._lock_descriptor)
            self._lock_descriptor = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            version = schema.schema_version(self._index.db)
        assert version is not None
        return version

    # -- adding --------------------------------------------------------------------------

    def add_container(
        self,
        manifest: Manifest,
        piece_layers: Mapping[bytes, Sequence[bytes]],
        location: Path | str,
        *,
        complete: bool,
        now: float,
        metadata: Metadata | None = None,
        names: Names = (),
    ) -> ContainerRecord:
        """Index a container.

        `complete=True`: the user's folder `location` holds the files, indexed in place
        (checked by name and size; their roots are trusted, since the caller hashed them to
        build the manifest, and `verify` re-checks). `complete=False`: a download into the
        folder `location`, created sparse under its partial folder; pieces the store already
        holds are copied in before the commit, and a download of files all held completes
        at once.

        `piece_layers` maps each root longer than one piece to its layer (optional for roots
        the store already has at this or a finer piece length). `now` is the caller's clock
        (`added_at`); `names` are names alone or a mapping name → extra facts."""
        with self._lock:
            batch = Batch()
            plan_add(
                self._index,
                batch,
                manifest,
                piece_layers,
                Path(location),
                complete=complete,
                now=now,
                metadata=metadata,
                names=names,
            )
            self._commit_batch(batch)
            record = self._index.get(manifest.id)
            assert record is not None
            return record

    def share_in_place(
        self,
        manifest: Manifest,
        piece_layers: Mapping[bytes, Sequence[bytes]],
        location: Path | str,
        *,
        now: float,
        metadata: Metadata | None = None,
        urls: Sequence[str] = (),
    ) -> tuple[ContainerRecord, bool]:
        """What `kinswarm add` does, with or without a node running: index a container whose
        files are complete at `location`, named by `urls` besides its id; if the store has it
        already, the URLs become further names of it. The record, and whether it is new."""
        try:
            record = self.add_container(
                manifest,
                piece_layers,
                location,
                complete=True,
                now=now,
                metadata=metadata,
                names=dict.fromkeys(urls),
            )
        except AlreadyStored:
            existing = self.get(manifest.id)
            if existing is None:
                raise StoreError("the store refused the container but does not have it") from None
            for url in urls:
                self.add_name(existing.id, url)
            return existing, False
        return record, True

    def add_containers(
        self, entries: Iterable[NewContainer], *, now: float, check_files: bool = True
    ) -> int:
        """Bulk-add containers complete in place, in one transaction (imports, benchmarks:
        one commit and one fsync for the whole batch). Returns how many were added."""
        with self._lock:
            batch = Batch()
            for entry in entries:
                plan_add(
                    self._index,
                    batch,
                    entry.manifest,
                    entry.piece_layers,
                    entry.location,
                    complete=True,
                    now=now,
                    metadata=entry.metadata,
                    names=entry.names,
                    check_files=check_files,
                )
            self._commit_batch(batch)
            return len(batch.plans)

    def _commit_batch(self, batch: Batch) -> None:
        with self._index.transaction():
            batch.insert_into(self._index)
        self._finish_ready(batch.may_be_complete(self._index))

    # -- names ---------------------------------------------------------------------------

    def add_name(self, container_id: bytes, name: str, extra: Extra | None = None) -> None:
        """Record another name for a container (updating its extra facts if it has it)."""
        kind, value = parse_stored_name(name)
        with self._lock:
            self._index.require(container_id)
            with self._index.transaction():
                self._index.add_name(container_id, kind, value, encode_extra(extra))

    def names_of(self, container_id: bytes) -> dict[str, dict[str, ExtraValue]]:
        with self._lock:
            return self._index.names_of(container_id)

    def resolve(self, name: str) -> list[bytes]:
        """The ids of the containers a name refers to; every lookup is an index lookup.

        A bare 64-hex name is a container id or a file root (then: every container holding
        that file); `ks:<hex>` is a container id or a stored ks name; `btih:`, `btmh:` and
        URLs (exact) are looked up among stored names. Raises ValueError for a malformed
        name; an unknown one gives []."""
        kind, value = parse_name(name)
        with self._lock:
            return self._index.resolve(kind, value)

    def find_by_name(self, name: str) -> list[bytes]:
        """Ids of the containers whose manifest name is exactly `name` (oldest first)."""
        with self._lock:
            return self._index.ids_named(name)

    # -- reading the index ---------------------------------------------------------------

    def get(self, container_id: bytes) -> ContainerRecord | None:
        with self._lock:
            return self._index.get(container_id)

    def list_containers(self) -> list[ContainerRecord]:
        with self._lock:
            return self._index.all_containers()

    def manifest(self, container_id: bytes) -> Manifest:
        with self._lock:
            data = self._index.manifest_bytes(container_id)
        return decode_manifest(data)

    def files_of(self, container_id: bytes) -> list[StoredFile]:
        with self._lock:
            return self._index.files_of(container_id)

    def is_complete(self, container_id: bytes) -> bool:
        """True if every piece of every file of the container is held (a container in its
        final place may not be, after `verify` found damage)."""
        with self._lock:
            self._index.require(container_id)
            return self._index.all_held(container_id)

    def piece_layer(self, root: bytes, piece_length: int | None = None) -> list[bytes]:
        """The root's piece layer at `piece_length` (default: the finest stored)."""
        with self._lock:
            row = self._index.require_root(root)
        if piece_length is None or piece_length == row.piece_length:
            return list(row.layer)
        return coarser_layer(row.layer, row.length, row.piece_length, piece_length)

    def held(self, root: bytes, piece_length: int | None = None) -> Held:
        """Which pieces of a root are verified on disk, at `piece_length` (default: finest)."""
        with self._lock:
            row = self._index.require_root(root)
        if piece_length is None or piece_length == row.piece_length:
            return Held(row.piece_length, row.count, row.held)
        bits, count = coarser_bits(row.held, row.count, pieces_per(piece_length, row.piece_length))
        return Held(piece_length, count, bits)

    def copies(self, root: bytes) -> list[Path]:
        """Where the root's bytes are on disk (every container file with that root)."""
        with self._lock:
            return [copy.path for copy in self._index.copies(root)]

    # -- pieces --------------------------------------------------------------------------

    def write_piece(
        self, root: bytes, index: int, data: bytes, *, piece_length: int | None = None
    ) -> WriteResult:
        """Verify one piece, write it into every copy, fsync, then mark it held."""
        return self.write_pieces([(root, index, data)], piece_length=piece_length)

    def write_pieces(
        self,
        pieces: Iterable[tuple[bytes, int, bytes | bytearray | memoryview]],
        *,
        piece_length: int | None = None,
    ) -> WriteResult:
        """Verify, write and mark held many pieces: one fsync per file, one commit.

        `piece_length` is what the indices count in (a container's; default: the finest
        stored for each root). A piece that fails verification, or whose index or size is
        wrong, is refused and nothing of it is written. Ordering: verify all → pwrite into
        every copy → fsync each file → COMMIT the held bits → move completed downloads."""
        with self._lock:
            rows: dict[bytes, RootRow] = {}
            refused: list[tuple[bytes, int]] = []
            writes: list[tuple[RootRow, int, memoryview]] = []
            for root, index, data in pieces:
                row = rows.get(root)
                if row is None:
                    row = rows[root] = self._index.require_root(root)
                parts = fine_parts(row, index, memoryview(data), piece_length)
                if parts is None or not all(
                    piece_matches(part, fine, row.length, row.piece_length, row.layer)
                    for fine, part in parts
                ):
                    refused.append((root, index))
                    continue
                writes += [(row, fine, part) for fine, part in parts if not has_bit(row.held, fine)]
            landed: dict[bytes, set[int]] = {}
            with OpenFiles() as files:
                copies = {root: self._index.copies(root) for root in rows}
                for row, fine, part in writes:
                    offset = fine * row.piece_length
                    written = [files.write(c, row.length, part, offset) for c in copies[row.root]]
                    if any(written):
                        landed.setdefault(row.root, set()).add(fine)
                lost = [r for r in rows if refill_recreated(files, rows[r], copies[r])]
                files.sync()
            if landed or lost:
                self._phase("pieces-synced")
                with self._index.transaction():
                    for root in {*landed, *lost}:
                        bits = set_bits(rows[root].held, landed.get(root, ()))
                        self._index.update_held(rows[root], bits)
            completed = self._finish_ready(self._index.partial_holding(landed))
            return WriteResult(tuple(refused), tuple(completed))

    def read_block(self, root: bytes, block_index: int) -> bytes:
        """Block `block_index` (16 KiB; the last may be short) of a root, if its piece is held.

        Held pieces were verified when written. Bytes a user changes behind our back are
        caught by `verify`, and by the receiving peer, which checks every block's proof."""
        with self._lock:
            length, piece_length = self._index.root_geometry(root)
            if not 0 <= block_index < block_count(length):
                raise IndexError(f"block {block_index} is outside a file of {length} bytes")
            offset = block_index * BLOCK_SIZE
            if not self._index.held_bit(root, offset // piece_length):
                raise NotHeld(f"block {block_index} of {root.hex()} is not held")
            return self._read(root, min(BLOCK_SIZE, length - offset), offset)

    def read_piece(self, root: bytes, index: int, *, piece_length: int | None = None) -> bytes:
        """A whole piece (at `piece_length`, default the finest stored), if held."""
        with self._lock:
            size, offset = self._held_piece(root, index, piece_length)
            return self._read(root, size, offset)

    def read_piece_nowait(
        self, root: bytes, index: int, *, piece_length: int | None = None
    ) -> bytes | bytearray:
        """`read_piece` for an event loop: raises WouldBlock instead of waiting for the
        disk (bytes the OS does not hold in memory) or for another thread using the store."""
        if not self._lock.acquire(blocking=False):
            raise WouldBlock("the store is busy")
        try:
            size, offset = self._held_piece(root, index, piece_length)
            for copy in self._index.copies(root):
                try:
                    data = disk.read_at_nowait(copy.path, size, offset)
                except BlockingIOError as exc:
                    raise WouldBlock(f"piece {index} of {root.hex()} is on disk") from exc
                if data is not None:
                    return data
            raise StoreError(f"no copy of {root.hex()} is readable on disk (run verify)")
        finally:
            self._lock.release()

    def _held_piece(self, root: bytes, index: int, piece_length: int | None) -> tuple[int, int]:
        """(size, offset) of a held piece; raises NotHeld. Call with the lock held."""
        # Geometry and single held bits, not the whole row: splitting the piece layer on
        # every read made serving cost grow with the square of the piece count.
        length, stored_unit = self._index.root_geometry(root)
        unit = piece_length or stored_unit
        size = piece_size(length, unit, index)
        offset = index * unit
        first, last = offset // stored_unit, (offset + size - 1) // stored_unit
        if not all(self._index.held_bit(root, fine) for fine in range(first, last + 1)):
            raise NotHeld(f"piece {index} of {root.hex()} is not held")
        return size, offset

    def _read(self, root: bytes, size: int, offset: int) -> bytes:
        for copy in self._index.copies(root):
            data = disk.read_at(copy.path, size, offset)
            if data is not None:
                return data
        raise StoreError(f"no copy of {root.hex()} is readable on disk (run verify)")

    # -- verify, remove, recover ---------------------------------------------------------

    def verify(self, container_id: bytes, progress: Progress | None = None) -> VerifyReport:
        """Re-hash the container's files on disk and rewrite the held bits to the truth
        (`node.store.verify`). `progress(done, total)` runs in this thread, under the lock."""
        with self._lock:
            report, roots = verify_container(self._index, container_id, progress)
            self._finish_ready(self._index.partial_holding(roots))
            return report

    def remove(self, container_id: bytes) -> None:
        """Forget a container. Its files stay where they are (a download's partial folder
        too): the store never deletes them."""
        with self._lock:
            self._index.require(container_id)
            with self._index.transaction():
                self._index.remove(container_id)

    def recover(self) -> None:
        """Finish moves a crash interrupted (`node.store.moves`). Runs when the store opens."""
        with self._lock:
            moves.recover(self._index, self._phase)

    # -- internals -----------------------------------------------------------------------

    def _phase(self, name: str) -> None:
        if self.on_phase is not None:
            self.on_phase(name)

    def _finish_ready(self, container_ids: Iterable[bytes]) -> list[bytes]:
        """Move the downloads among `container_ids` whose pieces are all held."""
        finished = []
        for container_id in container_ids:
            if self._index.all_held(container_id):
                try:
                    moves.finish(self._index, container_id, self._phase)
                except OSError as exc:  # retried by recover() at the next open
                    log.warning("could not move download %s: %s", container_id.hex(), exc)
                    continue
                finished.append(container_id)
        return finished


def _lock_file(path: Path) -> int:
    """Hold an exclusive flock on `path` for the store's lifetime (released by the kernel
    if the process dies, so a crash never leaves a stale lock)."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        import fcntl
    except ImportError:  # Windows: SQLite's own locking still guards the database
        return descriptor
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(descriptor)
        raise StoreLocked(f"{path.parent}: the store is in use by another process") from exc
    return descriptor
