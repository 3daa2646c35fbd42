"""The trace of a simulated run: a running digest of every event, and counters.

Two runs with the same seed must produce the same digest; that is how we know a run is
reproducible, and it is checked by a test. Events are tuples of ints and strings (never floats,
object ids or anything ordered by hashing), fed to SHA-256 as they happen. Counters
(events by kind, bytes by kind) come along for the summary.
"""

from __future__ import annotations

import hashlib
from collections import Counter


class Trace:
    __slots__ = ("_digest", "bytes_by_kind", "events", "events_by_kind")

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.events = 0
        self.events_by_kind: Counter[str] = Counter()
        self.bytes_by_kind: Counter[str] = Counter()

    def record(self, kind: str, *fields: int | str, size: int = 0) -> None:
        """Add one event. `size` (bytes) is both hashed and counted under `kind`."""
        self._digest.update(repr((kind, fields, size)).encode("utf-8"))
        self.events += 1
        self.events_by_kind[kind] += 1
        if size:
            self.bytes_by_kind[kind] += size

    def digest(self) -> str:
        return self._digest.hexdigest()
