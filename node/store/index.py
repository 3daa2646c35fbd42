"""The SQL side of the store: every query, and nothing else (no file I/O, no locking).

`Index` wraps the connection opened by `node.store.schema`. Its callers (`Store`, `moves`,
`verify`) hold the store's lock, decide the order of disk work and commits, and wrap writes
in `transaction()`. Every lookup that runs per request (`resolve`, `held_bit`, `copies`,
`all_held`) is a primary-key or index lookup; `tests/node/test_store.py` checks the query
plans so a schema change cannot quietly turn one into a table scan.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from node.store.copies import Copy, RootRow
from node.store.names import ExtraValue, decode_extra, format_name
from node.store.pieces import has_bit, join_layer
from node.store.records import (
    ContainerRecord,
    State,
    StoredFile,
    UnknownContainer,
    UnknownRoot,
)
from wire.canonical import pack_canonical, unpack_canonical
from wire.container import Metadata
from wire.merkle import split_layer
from wire.schema import from_wire, to_wire

BY_ID: Final = "SELECT id FROM containers WHERE id = ?"
BY_ROOT: Final = "SELECT DISTINCT container_id FROM files WHERE root = ? ORDER BY container_id"
BY_NAME: Final = "SELECT container_id FROM names WHERE kind = ? AND value = ? ORDER BY container_id"

_CONTAINER_COLUMNS: Final = (
    "id, name, piece_length, total_length, location, state, added_at, metadata, target_dir"
)
INSERT_CONTAINER: Final = (
    "INSERT INTO containers (id, manifest, name, piece_length, total_length, location, state,"
    " target_dir, added_at, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""Column order of the container rows `insert` takes."""


_NO_METADATA: Final = pack_canonical(to_wire(Metadata()))


def encode_metadata(metadata: Metadata | None) -> bytes:
    if metadata is None:
        return _NO_METADATA
    return pack_canonical(to_wire(metadata))


def disk_path(location: str | Path, path: str) -> Path:
    """Where a file row is on disk: the container's folder joined with its `/` path."""
    return Path(location).joinpath(*path.split("/"))


class Index:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (durable on return: synchronous=FULL), or ROLLBACK."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def column(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        return [row[0] for row in self.db.execute(sql, parameters)]

    # -- containers ----------------------------------------------------------------------

    def exists(self, container_id: bytes) -> bool:
        return bool(self.column(BY_ID, (container_id,)))

    def require(self, container_id: bytes) -> None:
        if not self.exists(container_id):
            raise UnknownContainer(f"no container {container_id.hex()}")

    def get(self, container_id: bytes) -> ContainerRecord | None:
        row = self.db.execute(
            f"SELECT {_CONTAINER_COLUMNS} FROM containers WHERE id = ?", (container_id,)
        ).fetchone()
        return None if row is None else _container_record(row)

    def all_containers(self) -> list[ContainerRecord]:
        rows = self.db.execute(
            f"SELECT {_CONTAINER_COLUMNS} FROM containers ORDER BY added_at, id"
        ).fetchall()
        return [_container_record(row) for row in rows]

    def manifest_bytes(self, container_id: bytes) -> bytes:
        row = self.db.execute(
            "SELECT manifest FROM containers WHERE id = ?", (container_id,)
        ).fetchone()
        if row is None:
            raise UnknownContainer(f"no container {container_id.hex()}")
        return bytes(row[0])

    def files_of(self, container_id: bytes) -> list[StoredFile]:
        record = self.get(container_id)
        if record is None:
            raise UnknownContainer(f"no container {container_id.hex()}")
        rows = self.db.execute(
            "SELECT idx, path, length, root FROM files WHERE container_id = ? ORDER BY idx",
            (container_id,),
        ).fetchall()
        return [
            StoredFile(
                index, tuple(path.split("/")), length, root, disk_path(record.location, path)
            )
            for index, path, length, root in rows
        ]

    def insert(
        self,
        roots: Iterable[RootRow],
        containers: Sequence[tuple[Any, ...]],
        files: Iterable[tuple[Any, ...]],
        names: Iterable[tuple[Any, ...]],
    ) -> None:
        """Insert new containers with their files and names, and upsert their roots' rows
        (inside the caller's transaction; container rows in `INSERT_CONTAINER` order)."""
        self.db.executemany(
            "INSERT INTO file_data (root, length, piece_length, piece_layer, held, complete)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (root) DO UPDATE SET"
            " piece_length = excluded.piece_length, piece_layer = excluded.piece_layer,"
            " held = excluded.held, complete = excluded.complete",
            [
                (r.root, r.length, r.piece_length, join_layer(r.layer), r.held, int(r.complete))
                for r in roots
            ],
        )
        self.db.executemany(INSERT_CONTAINER, containers)
        self.db.executemany(
            "INSERT INTO files (container_id, idx, path, length, root) VALUES (?, ?, ?, ?, ?)",
            files,
        )
        self.db.executemany(
            "INSERT INTO names (kind, value, container_id, extra) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO UPDATE SET extra = excluded.extra",
            names,
        )

    def remove(self, container_id: bytes) -> None:
        """Delete a container (its files and names cascade) and the data records of roots
        no other container holds (inside the caller's transaction)."""
        roots = self.column(
            "SELECT DISTINCT root FROM files WHERE container_id = ? AND root IS NOT NULL",
            (container_id,),
        )
        self.db.execute("DELETE FROM containers WHERE id = ?", (container_id,))
        self.db.executemany(
            "DELETE FROM file_data WHERE root = ?1"
            " AND NOT EXISTS (SELECT 1 FROM files WHERE root = ?1)",
            [(root,) for root in roots],
        )

    # -- names ---------------------------------------------------------------------------

    def add_name(self, container_id: bytes, kind: str, value: bytes, extra: bytes | None) -> None:
        self.db.execute(
            "INSERT INTO names (kind, value, container_id, extra) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO UPDATE SET extra = excluded.extra",
            (kind, value, container_id, extra),
        )

    def names_of(self, container_id: bytes) -> dict[str, dict[str, ExtraValue]]:
        rows = self.db.execute(
            "SELECT kind, value, extra FROM names WHERE container_id = ? ORDER BY kind, value",
            (container_id,),
        ).fetchall()
        return {format_name(kind, value): decode_extra(extra) for kind, value, extra in rows}

    def resolve(self, kind: str, value: bytes) -> list[bytes]:
        found: list[bytes] = []
        if kind in ("hex", "ks"):
            found += self.column(BY_ID, (value,))
        if kind == "hex":
            found += self.column(BY_ROOT, (value,))
        else:
            found += self.column(BY_NAME, (kind, value))
        return list(dict.fromkeys(found))

    # -- roots ---------------------------------------------------------------------------

    def ids_named(self, name: str) -> list[bytes]:
        return [
            bytes(row)
            for row in self.column(
                "SELECT id FROM containers WHERE name = ? ORDER BY added_at, id", (name,)
            )
        ]

    def root_row(self, root: bytes) -> RootRow | None:
        row = self.db.execute(
            "SELECT length, piece_length, piece_layer, held FROM file_data WHERE root = ?",
            (root,),
        ).fetchone()
        if row is None:
            return None
        length, piece_length, layer, held = row
        return RootRow(root, length, piece_length, split_layer(layer), bytes(held))

    def require_root(self, root: bytes) -> RootRow:
        row = self.root_row(root)
        if row is None:
            raise UnknownRoot(f"no file with root {root.hex()}")
        return row

    def root_geometry(self, root: bytes) -> tuple[int, int]:
        """(length, stored piece length) without loading the layer."""
        row = self.db.execute(
            "SELECT length, piece_length FROM file_data WHERE root = ?", (root,)
        ).fetchone()
        if row is None:
            raise UnknownRoot(f"no file with root {root.hex()}")
        return int(row[0]), int(row[1])

    def held_bit(self, root: bytes, piece: int) -> bool:
        """One bit, reading one byte of the bitfield (not the whole blob) per block served."""
        (byte,) = self.db.execute(
            "SELECT substr(held, ?, 1) FROM file_data WHERE root = ?", ((piece >> 3) + 1, root)
        ).fetchone()
        return bool(byte) and has_bit(byte, piece & 7)

    def update_held(self, row: RootRow, bits: bytes) -> None:
        row.held = bits
        self.db.execute(
            "UPDATE file_data SET held = ?, complete = ? WHERE root = ?",
            (bits, int(row.complete), row.root),
        )

    def copies(self, root: bytes) -> list[Copy]:
        """Every copy of a root, complete containers first (the preferred read source)."""
        rows = self.db.execute(
            "SELECT container_id, location, path, state FROM copies WHERE root = ?"
            " ORDER BY state = 'partial', container_id, idx",
            (root,),
        ).fetchall()
        return [
            Copy(container_id, disk_path(location, path), state == "partial")
            for container_id, location, path, state in rows
        ]

    def partial_holding(self, roots: Iterable[bytes]) -> list[bytes]:
        """Downloads (partial containers) with a file among `roots`."""
        found: dict[bytes, None] = {}
        for root in roots:
            for container_id in self.column(
                "SELECT DISTINCT container_id FROM copies WHERE root = ? AND state = 'partial'",
                (root,),
            ):
                found[container_id] = None
        return list(found)

    def all_held(self, container_id: bytes) -> bool:
        """Every piece of every file of the container is held."""
        return not self.db.execute(
            "SELECT 1 FROM files AS f JOIN file_data AS d ON d.root = f.root"
            " WHERE f.container_id = ? AND d.complete = 0 LIMIT 1",
            (container_id,),
        ).fetchone()

    # -- moves ---------------------------------------------------------------------------

    def downloads(self) -> list[tuple[bytes, Path, Path | None]]:
        """(id, location, moving_to) of every partial container."""
        rows = self.db.execute(
            "SELECT id, location, moving_to FROM containers WHERE state = 'partial'"
        ).fetchall()
        return [
            (bytes(cid), Path(location), None if moving is None else Path(moving))
            for cid, location, moving in rows
        ]

    def move_info(self, container_id: bytes) -> tuple[str, Path, Path, Path | None]:
        """(name, location, target dir, moving_to) of a download."""
        name, location, target_dir, moving_to = self.db.execute(
            "SELECT name, location, target_dir, moving_to FROM containers WHERE id = ?",
            (container_id,),
        ).fetchone()
        moving = None if moving_to is None else Path(moving_to)
        return name, Path(location), Path(target_dir), moving

    def set_moving_to(self, container_id: bytes, destination: Path | None) -> None:
        self.db.execute(
            "UPDATE containers SET moving_to = ? WHERE id = ?",
            (None if destination is None else str(destination), container_id),
        )

    def set_moved(self, container_id: bytes, destination: Path) -> None:
        self.db.execute(
            "UPDATE containers SET location = ?, state = 'complete', moving_to = NULL WHERE id = ?",
            (str(destination), container_id),
        )


def _container_record(row: Sequence[Any]) -> ContainerRecord:
    (cid, name, piece_length, total, location, state, added_at, metadata, target_dir) = row
    checked_state: State = "complete" if state == "complete" else "partial"
    return ContainerRecord(
        id=bytes(cid),
        name=name,
        piece_length=piece_length,
        total_length=total,
        location=Path(location),
        state=checked_state,
        added_at=float(added_at),
        metadata=from_wire(Metadata, unpack_canonical(metadata)),
        target_dir=None if target_dir is None else Path(target_dir),
    )
