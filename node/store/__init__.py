"""The node's store: ordinary files and folders, indexed in SQLite. See `node.store.store`.

| module    | job |
|-----------|-----|
| `store`   | `Store`: containers, names, files, pieces; the write ordering and crash recovery |
| `schema`  | the SQLite schema, pragmas (WAL, synchronous=FULL, foreign keys) and migrations |
| `records` | the records and errors the store hands back |
| `names`   | parsing names (ids, roots, ks:, btih:, btmh:, URLs) into indexed (kind, value) |
| `pieces`  | piece arithmetic: verifying a piece against its layer, bitfields, piece lengths |
| `disk`    | positioned I/O, fsync of files and folders, sparse files, the final move |
"""

from node.store.names import Extra, format_name, parse_name, url_name
from node.store.records import (
    AlreadyStored,
    ContainerRecord,
    FileReport,
    Held,
    NewContainer,
    NotHeld,
    Progress,
    State,
    StoredFile,
    StoreError,
    StoreLocked,
    UnknownContainer,
    UnknownRoot,
    VerifyReport,
    WouldBlock,
    WriteResult,
)
from node.store.schema import SCHEMA_VERSION, SchemaError
from node.store.store import INDEX_FILE, Store

__all__ = [
    "INDEX_FILE",
    "SCHEMA_VERSION",
    "AlreadyStored",
    "ContainerRecord",
    "Extra",
    "FileReport",
    "Held",
    "NewContainer",
    "NotHeld",
    "Progress",
    "SchemaError",
    "State",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoredFile",
    "UnknownContainer",
    "UnknownRoot",
    "VerifyReport",
    "WouldBlock",
    "WriteResult",
    "format_name",
    "parse_name",
    "url_name",
]
