"""Serving container metadata (manifests, piece layers) first come, first served.

In a flash crowd every newcomer asks the one seed for the manifest and the piece layers at
the same instant. Answered all at once, the replies share the seed's uplink evenly and all
arrive together, late (1,000 leechers ask for ~2.3 MB: 4.6 s of a 500 KB/s uplink), and
nobody can pass the metadata on before then. Answered one at a time in the order asked, the
first askers have it within milliseconds and serve it to the rest: an asker kept waiting
longer than the engine's `METADATA_PATIENCE_SECONDS` asks another holder, or asks again.

So the engine queues metadata requests here and one task answers them in order. A request
that waited longer than `stale_after` is dropped unanswered: its asker has moved on to
another holder, or will ask again; answering it would only delay the next in line. The queue
is bounded; a request beyond the bound is dropped the same way.

Sans-IO: no clock, no I/O. The caller passes the time.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Generic, TypeVar

MAX_QUEUED: Final = 4096
"""Requests held at most (a few hundred bytes each)."""
STALE_SECONDS: Final = 0.4
"""A request older than this is dropped unanswered (below the asker's patience, 0.5 s)."""

Request = TypeVar("Request")


class MetadataQueue(Generic[Request]):
    """Metadata requests in the order they came, each with who asked and when."""

    __slots__ = ("_items", "limit", "stale_after")

    def __init__(self, limit: int = MAX_QUEUED, stale_after: float = STALE_SECONDS) -> None:
        if limit < 1 or stale_after <= 0:
            raise ValueError("limit and stale_after must be positive")
        self.limit = limit
        self.stale_after = stale_after
        self._items: deque[tuple[float, bytes, Request]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, peer: bytes, request: Request, now: float) -> bool:
        """Queue `peer`'s request; False if the queue is full (dropped: the peer asks
        again)."""
        if len(self._items) >= self.limit:
            return False
        self._items.append((now, peer, request))
        return True

    def pop(self, now: float) -> tuple[bytes, Request] | None:
        """The oldest request still worth answering, or None. Stale ones are dropped."""
        items = self._items
        while items:
            asked_at, peer, request = items.popleft()
            if asked_at + self.stale_after >= now:
                return peer, request
        return None
