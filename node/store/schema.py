"""The SQLite schema of the store's index, how the database is opened, and migrations.

**Pragmas, and why.**

* `journal_mode=WAL`: readers never block the writer and a commit appends to one file; a crash
  at any moment leaves the database at its last commit (SQLite replays or discards the WAL).
* `synchronous=FULL`: in WAL mode, NORMAL only fsyncs at checkpoints, so after a *power loss*
  the last commits can vanish (still consistent, but gone). The store's promise is that a piece
  marked held is on disk and is never fetched twice, and that a container's recorded location
  is where its folder is; both need each commit to be durable when `commit()` returns. FULL
  costs one fsync of the WAL per commit, which is why writes come in batches
  (`Store.write_pieces`: one commit for many pieces).
* `foreign_keys=ON`: files and names cannot outlive their container, and a file row cannot
  point at a root the store has no data record for. SQLite turns them off by default, per
  connection.

**Versions.** `schema_version` holds one row. A new database gets the newest schema at once; an
older one is brought forward by `MIGRATIONS[v]` (v → v + 1), each step inside the same
transaction as the version bump, so a crash mid-migration leaves the old version intact. A
database newer than this code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

SCHEMA_VERSION: Final = 2

Migration = Callable[[sqlite3.Connection], None]
"""Upgrades the schema by one version, inside the caller's transaction."""


def _add_name_index(connection: sqlite3.Connection) -> None:
    """Version 2: look containers up by their name (`kinswarm info "My dataset"`)."""
    connection.execute(_NAME_INDEX)


MIGRATIONS: Final[Mapping[int, Migration]] = {1: _add_name_index}
"""`MIGRATIONS[v]` upgrades a version-v database to v + 1."""


class SchemaError(Exception):
    """The index cannot be used by this version of kinswarm (too new, or not ours)."""


_NAME_INDEX: Final = "CREATE INDEX containers_name ON containers (name)"

_SCHEMA: Final = """
CREATE TABLE schema_version (
    version INTEGER NOT NULL
);

-- One row per container. `location` is the folder the manifest's paths are relative to:
-- in place for containers the user added, `<download dir>/.kinswarm-partial/<id>/<name>`
-- while downloading, the final folder once complete. `target_dir` is the download dir a
-- partial container moves into; `moving_to` is the move's intent, written before the rename
-- and cleared with the new location (see node.store.moves).
CREATE TABLE containers (
    id           BLOB PRIMARY KEY CHECK (length(id) = 32),
    manifest     BLOB NOT NULL,
    name         TEXT NOT NULL,
    piece_length INTEGER NOT NULL,
    total_length INTEGER NOT NULL,
    location     TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('partial', 'complete')),
    target_dir   TEXT,
    moving_to    TEXT,
    added_at     REAL NOT NULL,
    metadata     BLOB NOT NULL
);
CREATE INDEX containers_partial ON containers (state) WHERE state = 'partial';
CREATE INDEX containers_name ON containers (name);

-- Names other than the id: kind is 'btih' (20-byte SHA-1), 'btmh' (32-byte SHA-256 digest),
-- 'url' (the exact URL, UTF-8) or 'ks' (32 bytes). `extra` is canonical msgpack (a URL's
-- Last-Modified, ETag, length...). The primary key is the lookup index.
CREATE TABLE names (
    kind         TEXT NOT NULL,
    value        BLOB NOT NULL,
    container_id BLOB NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    extra        BLOB,
    PRIMARY KEY (kind, value, container_id)
) WITHOUT ROWID;
CREATE INDEX names_container ON names (container_id);

-- One row per distinct non-empty file (root), shared by every container holding it.
-- `piece_length` is the finest seen for this root; `piece_layer` the concatenated hashes for
-- it ([root] for a one-piece file); `held` a BEP 3 bitfield of pieces verified and fsynced in
-- every copy; `complete` is held == all, kept for indexed completion checks.
CREATE TABLE file_data (
    root         BLOB PRIMARY KEY CHECK (length(root) = 32),
    length       INTEGER NOT NULL CHECK (length > 0),
    piece_length INTEGER NOT NULL,
    piece_layer  BLOB NOT NULL,
    held         BLOB NOT NULL,
    complete     INTEGER NOT NULL CHECK (complete IN (0, 1))
);

-- The files of each container, in manifest order. A root's bytes are on disk at
-- `containers.location / files.path` for every row with that root (its *copies*).
CREATE TABLE files (
    container_id BLOB NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL,
    path         TEXT NOT NULL,
    length       INTEGER NOT NULL,
    root         BLOB REFERENCES file_data (root),
    PRIMARY KEY (container_id, idx)
) WITHOUT ROWID;
CREATE INDEX files_root ON files (root);

CREATE VIEW copies AS
    SELECT f.root AS root, f.container_id AS container_id, f.idx AS idx,
           c.location AS location, f.path AS path, c.state AS state
    FROM files AS f JOIN containers AS c ON c.id = f.container_id
    WHERE f.root IS NOT NULL;
"""


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the index with the pragmas above, in autocommit mode: every
    transaction is an explicit `BEGIN IMMEDIATE ... COMMIT`.

    `check_same_thread=False` because the node calls the store from whichever worker thread
    `Network.run_blocking` uses; the Store's lock makes those calls one at a time."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SchemaError(f"{path}: cannot switch the index to WAL mode (got {mode!r})")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        connection.close()
        raise
    return connection


def schema_version(connection: sqlite3.Connection) -> int | None:
    """The stored version, or None for an empty database."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return None
    row = connection.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        raise SchemaError("the index has a schema_version table but no version")
    return int(row[0])


def migrate(
    connection: sqlite3.Connection,
    *,
    target: int = SCHEMA_VERSION,
    migrations: Mapping[int, Migration] = MIGRATIONS,
) -> int:
    """Create or upgrade the schema to `target`; return the version found before (0 if new)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(connection)
        if found is None:
            if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise SchemaError("the index file holds tables that are not kinswarm's")
            for statement in _statements(_SCHEMA):
                connection.execute(statement)
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
            connection.execute("COMMIT")
            return 0
        if found > target:
            raise SchemaError(
                f"the index was written by a newer kinswarm (schema {found}, this one knows "
                f"up to {target}); upgrade kinswarm or use another data directory"
            )
        for version in range(found, target):
            step = migrations.get(version)
            if step is None:
                raise SchemaError(f"no migration from schema {version} to {version + 1}")
            step(connection)
        connection.execute("UPDATE schema_version SET version = ?", (target,))
        connection.execute("COMMIT")
        return found
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a script into statements (`executescript` would COMMIT our transaction first)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise ValueError("incomplete SQL statement at the end of the schema")
    return statements


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "SchemaError",
    "connect",
    "migrate",
    "schema_version",
]
