"""The Kademlia routing table: k-buckets with splitting, a replacement cache, liveness.

Sans-IO: the table never sends anything. When it wants a node checked it *returns* that node
(see `observe`), and the DHT service pings it and reports back with `observe` or `failure`.

* Bucket `i` holds contacts whose ids share exactly `i` leading bits with ours; the last
  bucket holds everything closer. When the last bucket is full it splits, so the table keeps
  about k contacts per distance class: fine detail near our id, a sample far away.
* Only *verified* contacts enter (the caller checked, by a signed challenge, that the contact
  holds the key its id derives from), so responses from unverified contacts cannot fill it.
* At most `max_per_subnet` contacts of one /24 (IPv4) or /64 (IPv6) per bucket.
* Each bucket keeps its entries least recently seen first (long-lived contacts are kept, as
  Kademlia prefers: they are the likeliest to stay) and a replacement cache of verified
  contacts that did not fit. A contact that fails `MAX_FAILURES` times in a row is evicted (two
  are enough when a replacement is waiting), and the newest replacement takes its place.
* A bucket nobody touched for `REFRESH_INTERVAL` reports itself stale (`stale_buckets`), so
  the service looks up a random id in it.
"""

from __future__ import annotations

import heapq
from typing import Final

import attrs

from dht.contacts import Contact, subnet_of
from dht.ids import ID_BITS, id_to_int

K: Final = 20
MAX_FAILURES: Final = 3
QUESTIONABLE_AFTER_SECONDS: Final = 15 * 60.0
REFRESH_INTERVAL_SECONDS: Final = 15 * 60.0


@attrs.define(slots=True, eq=False)
class Entry:
    """A verified contact in the table, with its liveness record."""

    node_id: bytes
    id_int: int
    host: str
    port: int
    public_key: bytes
    last_seen: float
    added_at: float
    failures: int = 0
    subnet: str = ""
    """The /24 or /64 of `host` (kept, not recomputed: the subnet check runs on every
    insert attempt)."""

    @property
    def contact(self) -> Contact:
        return Contact(self.node_id, self.host, self.port)


@attrs.define(slots=True, eq=False)
class Bucket:
    entries: list[Entry] = attrs.Factory(list)
    replacements: list[Entry] = attrs.Factory(list)
    last_changed: float = 0.0


class RoutingTable:
    def __init__(self, own_id: bytes, *, now: float, k: int = K, max_per_subnet: int = 2) -> None:
        self.own_id = own_id
        self._own = id_to_int(own_id)
        self.k = k
        self.max_per_subnet = max_per_subnet
        self.buckets: list[Bucket] = [Bucket(last_changed=now)]
        self._entries: dict[bytes, Entry] = {}

    # -- queries --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def get(self, node_id: bytes) -> Entry | None:
        return self._entries.get(node_id)

    def entries(self) -> list[Entry]:
        return [entry for bucket in self.buckets for entry in bucket.entries]

    def bucket_index(self, id_int: int) -> int:
        prefix = ID_BITS - (self._own ^ id_int).bit_length()
        return min(prefix, len(self.buckets) - 1)

    def closest(self, target: bytes, count: int | None = None) -> list[Entry]:
        """The `count` (default k) entries closest to `target`, closest first."""
        goal = id_to_int(target)
        return heapq.nsmallest(
            count or self.k, self._entries.values(), key=lambda entry: entry.id_int ^ goal
        )

    def stale_buckets(self, now: float) -> list[int]:
        return [
            index
            for index, bucket in enumerate(self.buckets)
            if now - bucket.last_changed >= REFRESH_INTERVAL_SECONDS
        ]

    def touch(self, target: bytes, now: float) -> None:
        """A lookup for `target` covered its bucket: no refresh needed there for a while."""
        self.buckets[self.bucket_index(id_to_int(target))].last_changed = now

    # -- updates --------------------------------------------------------------------------

    def observe(
        self, node_id: bytes, host: str, port: int, public_key: bytes, now: float
    ) -> Entry | None:
        """A verified contact was heard from. Adds or refreshes it.

        Returns an entry the caller should ping (the least recently seen of a full bucket,
        if it has gone quiet), so that a dead contact can make room; None otherwise."""
        if node_id == self.own_id:
            return None
        entry = self._entries.get(node_id)
        if entry is not None:
            if (entry.host, entry.port) != (host, port) and entry.failures:
                # It moved while we could not reach it. A contact that is answering at its
                # old address keeps it: a second address claiming its id is suspect.
                entry.host, entry.port, entry.subnet = host, port, subnet_of(host)
            entry.last_seen = now
            entry.failures = 0
            bucket = self.buckets[self.bucket_index(entry.id_int)]
            bucket.entries.remove(entry)
            bucket.entries.append(entry)
            return None
        new = Entry(
            node_id, id_to_int(node_id), host, port, public_key, now, now, 0, subnet_of(host)
        )
        while True:
            index = self.bucket_index(new.id_int)
            bucket = self.buckets[index]
            if not self._subnet_allows(bucket, host):
                return None
            if len(bucket.entries) < self.k:
                bucket.entries.append(new)
                bucket.last_changed = now
                self._entries[node_id] = new
                return None
            if index == len(self.buckets) - 1 and len(self.buckets) < ID_BITS:
                self._split_last(now)
                continue
            self._remember_replacement(bucket, new)
            oldest = bucket.entries[0]
            if oldest.failures or now - oldest.last_seen >= QUESTIONABLE_AFTER_SECONDS:
                return oldest
            return None

    def failure(self, node_id: bytes, now: float) -> bool:
        """A request to `node_id` went unanswered. Returns True if it was evicted."""
        entry = self._entries.get(node_id)
        if entry is None:
            return False
        entry.failures += 1
        bucket = self.buckets[self.bucket_index(entry.id_int)]
        if entry.failures >= MAX_FAILURES or (entry.failures >= 2 and bucket.replacements):
            self._evict(bucket, entry, now)
            return True
        return False

    def remove(self, node_id: bytes, now: float) -> None:
        """Drop a contact at once (it sent garbage or lied)."""
        entry = self._entries.get(node_id)
        if entry is not None:
            self._evict(self.buckets[self.bucket_index(entry.id_int)], entry, now)
        for bucket in self.buckets:
            bucket.replacements = [r for r in bucket.replacements if r.node_id != node_id]

    # -- internals ------------------------------------------------------------------------

    def _subnet_allows(self, bucket: Bucket, host: str) -> bool:
        subnet = subnet_of(host)
        same = sum(entry.subnet == subnet for entry in bucket.entries)
        return same < self.max_per_subnet

    def _remember_replacement(self, bucket: Bucket, entry: Entry) -> None:
        bucket.replacements = [r for r in bucket.replacements if r.node_id != entry.node_id]
        bucket.replacements.append(entry)
        if len(bucket.replacements) > self.k:
            del bucket.replacements[0]

    def _evict(self, bucket: Bucket, entry: Entry, now: float) -> None:
        bucket.entries.remove(entry)
        del self._entries[entry.node_id]
        bucket.last_changed = now
        while bucket.replacements:
            replacement = bucket.replacements.pop()
            if replacement.node_id in self._entries or not self._subnet_allows(
                bucket, replacement.host
            ):
                continue
            replacement.failures = 0
            bucket.entries.append(replacement)
            self._entries[replacement.node_id] = replacement
            break

    def _split_last(self, now: float) -> None:
        """Split the bucket covering our own id: the closer half moves to a new bucket."""
        depth = len(self.buckets)
        old = self.buckets[-1]
        new = Bucket(last_changed=old.last_changed)
        self.buckets.append(new)
        keep: list[Entry] = []
        for entry in old.entries:
            (new.entries if self.bucket_index(entry.id_int) == depth else keep).append(entry)
        old.entries = keep
        stay: list[Entry] = []
        for entry in old.replacements:
            (new.replacements if self.bucket_index(entry.id_int) == depth else stay).append(entry)
        old.replacements = stay
