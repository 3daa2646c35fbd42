"""The DHT's local storage: providers and records other nodes asked us to keep, with hard bounds.

A DHT node stores what strangers send it, so everything here is bounded and every rule is
explicit. `RecordStore` is a sans-IO core: the RPC layer calls it with already-decoded records,
the datagram's source address and the current time (`now`, seconds, from the node's clock); it
never reads a clock, draws randomness or does I/O.

**Lifetimes.** A provider lives `PROVIDER_TTL` (30 min) after its latest announcement, a record
`RECORD_TTL` (2 h) after its latest put; re-announcing or re-putting refreshes it. Providers are
republished by their owners more often than that, so a live one never lapses.

**Mutable records** follow BEP 44: the signature must verify; a put whose `seq` is below the
stored one is refused (`SEQ_TOO_OLD`), an equal `seq` with a different value too
(`SEQ_CONFLICT`), and an equal `seq` with the same value refreshes the stored record. With
`cas`, the put only succeeds if the stored record's `seq` equals `cas` (`CAS_MISMATCH`); as in
libtorrent, `cas` is not checked when nothing is stored (there is nothing to compare, and a
record that expired here may live on elsewhere).

**Bounds** (constructor parameters, defaults below):

* `max_providers_per_key` — when a key is full, a new provider evicts the soonest-expiring
  provider of the source holding the most providers at that key, counting the newcomer. A
  source that is (or would become) the heaviest there replaces its own oldest entry instead. So
  one source flooding a key ends up replacing its own entries and never pushes out others.
* `max_per_source` — entries (providers and records) charged to one source; a source over
  quota has its new writes refused (`SOURCE_QUOTA`) — others' entries are never evicted for it.
  Refreshes are always allowed. A source is an IPv4 address or an IPv6 /64
  (`dht.records.address_group`). An entry is charged to the source that stored its current
  content; a refresh from someone else does not move the charge.
* `max_keys`, `max_bytes` — the whole store. When a write needs room, the entries that expire
  soonest are evicted first (they are the ones closest to lapsing anyway). Bytes are an estimate
  of memory: the stored fields plus `ENTRY_OVERHEAD` per entry for the Python objects around them.

**Time and cost.** Lifetimes are fixed per kind, so entries expire in the order they were
stored or refreshed: one ordered dict per lifetime (refresh = move to the end) gives eviction and
`expire(now)` in O(1) per entry removed, and `expire` is cheap to call on every datagram. For
that order to hold, time never runs backwards here: a `now` below the latest one seen is taken
as the latest one.

**Keys and kinds.** Mutable and immutable records are kept apart, each keyed by its own key:
``SHA-256(value)`` of a value of 32 to 96 bytes can equal a mutable key
``SHA-256(public_key || salt)`` (when the value is that public key followed by that salt), so one
kind must not be able to occupy the other's slot.

Iteration is over dicts only (insertion order), never sets: the same calls give the same results
in every run.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final

import attrs

from dht.records import (
    KEY_LEN,
    MAX_SALT_BYTES,
    MAX_VALUE_BYTES,
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
    ImmutableRecord,
    MutableRecord,
    Provider,
    address_group,
)
from wire.errors import DecodeError

PROVIDER_TTL: Final = 30 * 60.0
RECORD_TTL: Final = 2 * 60 * 60.0

ENTRY_OVERHEAD: Final = 384
"""Bytes charged per entry on top of its fields: roughly what CPython spends on the entry
object, the record object, and the two dict slots that index it."""

DEFAULT_MAX_KEYS: Final = 100_000
DEFAULT_MAX_PROVIDERS_PER_KEY: Final = 64
DEFAULT_MAX_PER_SOURCE: Final = 4096
"""In a small network every node sees most announcements, and one node may share thousands of
containers: a per-source quota much lower than this would refuse honest nodes."""
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_PROVIDER_LIMIT: Final = 20
"""Providers returned by default: about 1.4 KB encoded, so a reply stays one datagram."""

_PROVIDER: Final = 0
_MUTABLE: Final = 1
_IMMUTABLE: Final = 2

_LARGEST_ENTRY: Final = (
    ENTRY_OVERHEAD + KEY_LEN + PUBLIC_KEY_LEN + MAX_SALT_BYTES + 8 + MAX_VALUE_BYTES + SIGNATURE_LEN
)


class RejectCode(enum.IntEnum):
    """Why a write was refused. 206, 301 and 302 are BEP 44's codes; the others are ours."""

    INVALID_SIGNATURE = 206
    CAS_MISMATCH = 301
    SEQ_TOO_OLD = 302
    SEQ_CONFLICT = 303
    KEY_MISMATCH = 304
    SOURCE_QUOTA = 305


class StoreRejected(Exception):
    """A write the store refused: the requester's fault, to be answered with an error reply."""

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(f"{reason} ({int(code)})")
        self.code = code
        self.reason = reason


class PutResult(enum.Enum):
    STORED = "stored"
    """A new entry."""
    REFRESHED = "refreshed"
    """The same entry was already there; its lifetime starts again."""
    REPLACED = "replaced"
    """A mutable record with a higher seq replaced the stored one."""


@attrs.frozen
class StoreStats:
    """What `dht status` shows."""

    keys: int
    providers: int
    mutable_records: int
    immutable_records: int
    bytes: int
    sources: int
    evicted: int
    """Entries evicted to make room since the store was created (not counting expiry)."""

    @property
    def records(self) -> int:
        return self.mutable_records + self.immutable_records

    def as_dict(self) -> dict[str, int]:
        """Plain figures, for JSON."""
        return {**attrs.asdict(self), "records": self.records}


class _Entry:
    """One stored provider or record. Hashes by identity, so it can index the expiry queues."""

    __slots__ = ("expires", "item", "key", "kind", "size", "source")

    def __init__(
        self,
        kind: int,
        key: bytes,
        item: Provider | MutableRecord | ImmutableRecord,
        source: str,
        size: int,
        expires: float,
    ) -> None:
        self.kind = kind
        self.key = key
        self.item = item
        self.source = source
        self.size = size
        self.expires = expires


def _provider_size(provider: Provider) -> int:
    return ENTRY_OVERHEAD + KEY_LEN + len(provider.node_id) + len(provider.host) + 2


def _mutable_size(record: MutableRecord) -> int:
    return (
        ENTRY_OVERHEAD
        + KEY_LEN
        + len(record.public_key)
        + len(record.salt)
        + 8
        + len(record.value)
        + len(record.signature)
    )


def _immutable_size(record: ImmutableRecord) -> int:
    return ENTRY_OVERHEAD + KEY_LEN + len(record.value)


def _check_key(key: bytes) -> None:
    if type(key) is not bytes or len(key) != KEY_LEN:
        raise ValueError(f"a DHT key is {KEY_LEN} bytes")


class RecordStore:
    """Bounded storage for providers and records (see the module docstring for every rule)."""

    def __init__(
        self,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_providers_per_key: int = DEFAULT_MAX_PROVIDERS_PER_KEY,
        max_per_source: int = DEFAULT_MAX_PER_SOURCE,
        max_bytes: int = DEFAULT_MAX_BYTES,
        provider_ttl: float = PROVIDER_TTL,
        record_ttl: float = RECORD_TTL,
    ) -> None:
        if min(max_keys, max_providers_per_key, max_per_source) < 1:
            raise ValueError("store bounds must be at least 1")
        if max_bytes < _LARGEST_ENTRY:
            raise ValueError(f"max_bytes must hold at least one entry ({_LARGEST_ENTRY} bytes)")
        if not (provider_ttl > 0 and record_ttl > 0):
            raise ValueError("lifetimes must be positive")
        self.max_keys = max_keys
        self.max_providers_per_key = max_providers_per_key
        self.max_per_source = max_per_source
        self.max_bytes = max_bytes
        self.provider_ttl = provider_ttl
        self.record_ttl = record_ttl
        # Per key, providers in refresh order: oldest first, freshest last.
        self._providers: dict[bytes, OrderedDict[Provider, _Entry]] = {}
        self._mutable: dict[bytes, _Entry] = {}
        self._immutable: dict[bytes, _Entry] = {}
        # Expiry order (= refresh order, as each queue has one lifetime).
        self._provider_queue: OrderedDict[_Entry, None] = OrderedDict()
        self._record_queue: OrderedDict[_Entry, None] = OrderedDict()
        self._key_refs: dict[bytes, int] = {}
        self._source_counts: dict[str, int] = {}
        self._bytes = 0
        self._evicted = 0
        self._now = float("-inf")

    # -- time ---------------------------------------------------------------------------------

    def _advance(self, now: float) -> float:
        """The effective time: `now`, or the latest time seen if `now` is earlier."""
        if now > self._now:
            self._now = now
        return self._now

    def expire(self, now: float) -> int:
        """Remove every entry whose lifetime ended at or before `now`; return how many.

        O(1) when nothing is due, O(1) per entry removed: call it as often as you like.
        """
        now = self._advance(now)
        removed = 0
        for queue in (self._provider_queue, self._record_queue):
            while queue:
                entry = next(iter(queue))
                if entry.expires > now:
                    break
                self._remove(entry)
                removed += 1
        return removed

    # -- bookkeeping --------------------------------------------------------------------------

    def _insert(self, entry: _Entry) -> None:
        if entry.kind == _PROVIDER:
            assert isinstance(entry.item, Provider)
            self._providers.setdefault(entry.key, OrderedDict())[entry.item] = entry
            self._provider_queue[entry] = None
        else:
            (self._mutable if entry.kind == _MUTABLE else self._immutable)[entry.key] = entry
            self._record_queue[entry] = None
        self._key_refs[entry.key] = self._key_refs.get(entry.key, 0) + 1
        self._source_counts[entry.source] = self._source_counts.get(entry.source, 0) + 1
        self._bytes += entry.size

    def _remove(self, entry: _Entry) -> None:
        if entry.kind == _PROVIDER:
            assert isinstance(entry.item, Provider)
            providers = self._providers[entry.key]
            del providers[entry.item]
            if not providers:
                del self._providers[entry.key]
            del self._provider_queue[entry]
        else:
            del (self._mutable if entry.kind == _MUTABLE else self._immutable)[entry.key]
            del self._record_queue[entry]
        refs = self._key_refs[entry.key] - 1
        if refs:
            self._key_refs[entry.key] = refs
        else:
            del self._key_refs[entry.key]
        count = self._source_counts[entry.source] - 1
        if count:
            self._source_counts[entry.source] = count
        else:
            del self._source_counts[entry.source]
        self._bytes -= entry.size

    def _refresh(self, entry: _Entry, now: float) -> None:
        if entry.kind == _PROVIDER:
            assert isinstance(entry.item, Provider)
            entry.expires = now + self.provider_ttl
            self._providers[entry.key].move_to_end(entry.item)
            self._provider_queue.move_to_end(entry)
        else:
            entry.expires = now + self.record_ttl
            self._record_queue.move_to_end(entry)

    def _check_quota(self, source: str, released: _Entry | None) -> None:
        """Refuse a new entry for `source` at its quota, unless it replaces one of its own."""
        if released is not None and released.source == source:
            return
        if self._source_counts.get(source, 0) >= self.max_per_source:
            raise StoreRejected(
                RejectCode.SOURCE_QUOTA,
                f"source {source} already holds {self.max_per_source} entries here",
            )

    def _make_room(self, key: bytes, size: int) -> None:
        """Evict the soonest-expiring entries until an entry of `size` bytes at `key` fits."""
        while self._bytes + size > self.max_bytes or (
            key not in self._key_refs and len(self._key_refs) >= self.max_keys
        ):
            first_provider = next(iter(self._provider_queue), None)
            first_record = next(iter(self._record_queue), None)
            if first_provider is None:
                victim = first_record
            elif first_record is None or first_provider.expires <= first_record.expires:
                victim = first_provider
            else:
                victim = first_record
            assert victim is not None, "the constructor guarantees one entry always fits"
            self._remove(victim)
            self._evicted += 1

    def _provider_victim(self, providers: OrderedDict[Provider, _Entry], source: str) -> _Entry:
        """Which provider a newcomer from `source` displaces at a full key (fair share)."""
        counts: dict[str, int] = {}
        for entry in providers.values():
            counts[entry.source] = counts.get(entry.source, 0) + 1
        own = counts.get(source, 0)
        heaviest = max(max(counts.values()), own + 1)
        if own and own + 1 >= heaviest:
            return next(entry for entry in providers.values() if entry.source == source)
        return next(entry for entry in providers.values() if counts[entry.source] == heaviest)

    # -- providers ----------------------------------------------------------------------------

    def add_provider(
        self, key: bytes, provider: Provider, *, source_host: str, now: float
    ) -> PutResult:
        """Remember that `provider` serves `key`, as announced from `source_host` (the datagram's
        source address). Re-announcing refreshes the entry. Raises StoreRejected when the source
        is over its quota."""
        _check_key(key)
        now = self._advance(now)
        self.expire(now)
        source = address_group(source_host)
        providers = self._providers.get(key)
        if providers is not None:
            existing = providers.get(provider)
            if existing is not None:
                self._refresh(existing, now)
                return PutResult.REFRESHED
        victim = None
        if providers is not None and len(providers) >= self.max_providers_per_key:
            victim = self._provider_victim(providers, source)
        self._check_quota(source, victim)
        if victim is not None:
            self._remove(victim)
        entry = _Entry(
            _PROVIDER, key, provider, source, _provider_size(provider), now + self.provider_ttl
        )
        self._make_room(key, entry.size)
        self._insert(entry)
        return PutResult.STORED

    def get_providers(
        self, key: bytes, now: float, limit: int = DEFAULT_PROVIDER_LIMIT
    ) -> list[Provider]:
        """Up to `limit` live providers of `key`, most recently announced first."""
        now = self._advance(now)
        providers = self._providers.get(key)
        if providers is None or limit <= 0:
            return []
        result: list[Provider] = []
        for provider, entry in reversed(providers.items()):
            if entry.expires <= now:
                break  # older ones expired too
            result.append(provider)
            if len(result) >= limit:
                break
        return result

    # -- records ------------------------------------------------------------------------------

    def put_mutable(
        self,
        record: MutableRecord,
        *,
        cas: int | None = None,
        source_host: str,
        now: float,
        key: bytes | None = None,
    ) -> PutResult:
        """Store a signed mutable record under the BEP 44 rules (see the module docstring).

        `key`, when the request named one, must be the record's key. Raises StoreRejected.
        """
        record_key = record.key
        if key is not None and key != record_key:
            raise StoreRejected(RejectCode.KEY_MISMATCH, "the key is not SHA-256(public_key+salt)")
        now = self._advance(now)
        self.expire(now)
        source = address_group(source_host)
        current = self._mutable.get(record_key)
        stored = current.item if current is not None else None
        assert stored is None or isinstance(stored, MutableRecord)
        if current is not None and record == stored:
            # A republication of exactly what we hold: it was verified when stored.
            self._check_cas(cas, record.seq)
            self._refresh(current, now)
            return PutResult.REFRESHED
        try:
            record.verify()
        except DecodeError as exc:
            raise StoreRejected(RejectCode.INVALID_SIGNATURE, "invalid signature") from exc
        if current is not None:
            assert stored is not None
            self._check_cas(cas, stored.seq)
            if record.seq < stored.seq:
                raise StoreRejected(
                    RejectCode.SEQ_TOO_OLD, f"seq too old: {record.seq} < stored {stored.seq}"
                )
            if record.seq == stored.seq:
                if record.value != stored.value:
                    raise StoreRejected(
                        RejectCode.SEQ_CONFLICT, f"seq {record.seq} already holds another value"
                    )
                # Same content, another valid signature (a randomised signer): keep ours.
                self._refresh(current, now)
                return PutResult.REFRESHED
        self._check_quota(source, current)
        if current is not None:
            self._remove(current)
        entry = _Entry(
            _MUTABLE, record_key, record, source, _mutable_size(record), now + self.record_ttl
        )
        self._make_room(record_key, entry.size)
        self._insert(entry)
        return PutResult.STORED if current is None else PutResult.REPLACED

    @staticmethod
    def _check_cas(cas: int | None, stored_seq: int) -> None:
        if cas is not None and cas != stored_seq:
            raise StoreRejected(
                RejectCode.CAS_MISMATCH, f"cas mismatch: expected {cas}, stored {stored_seq}"
            )

    def put_immutable(
        self, record: ImmutableRecord, *, source_host: str, now: float, key: bytes | None = None
    ) -> PutResult:
        """Store an immutable record. `key`, when the request named one, must be
        SHA-256(value). Raises StoreRejected."""
        record_key = record.key
        if key is not None and key != record_key:
            raise StoreRejected(RejectCode.KEY_MISMATCH, "the key is not SHA-256(value)")
        now = self._advance(now)
        self.expire(now)
        source = address_group(source_host)
        current = self._immutable.get(record_key)
        if current is not None:
            self._refresh(current, now)
            return PutResult.REFRESHED
        self._check_quota(source, None)
        entry = _Entry(
            _IMMUTABLE, record_key, record, source, _immutable_size(record), now + self.record_ttl
        )
        self._make_room(record_key, entry.size)
        self._insert(entry)
        return PutResult.STORED

    def get(self, key: bytes, now: float) -> MutableRecord | ImmutableRecord | None:
        """The live record at `key`: the mutable one if both kinds are held (see the module
        docstring), else the immutable one, else None."""
        mutable = self.get_mutable(key, now)
        return mutable if mutable is not None else self.get_immutable(key, now)

    def get_mutable(self, key: bytes, now: float) -> MutableRecord | None:
        now = self._advance(now)
        entry = self._mutable.get(key)
        if entry is None or entry.expires <= now:
            return None
        assert isinstance(entry.item, MutableRecord)
        return entry.item

    def get_immutable(self, key: bytes, now: float) -> ImmutableRecord | None:
        now = self._advance(now)
        entry = self._immutable.get(key)
        if entry is None or entry.expires <= now:
            return None
        assert isinstance(entry.item, ImmutableRecord)
        return entry.item

    # -- status -------------------------------------------------------------------------------

    def stats(self, now: float | None = None) -> StoreStats:
        """Figures for `dht status`. With `now`, what is due expires first, so they are exact;
        without, they may still count entries that lapsed since the last write or `expire`."""
        if now is not None:
            self.expire(now)
        return StoreStats(
            keys=len(self._key_refs),
            providers=len(self._provider_queue),
            mutable_records=len(self._mutable),
            immutable_records=len(self._immutable),
            bytes=self._bytes,
            sources=len(self._source_counts),
            evicted=self._evicted,
        )

    def source_count(self, source_host: str) -> int:
        """Entries charged to `source_host`'s source (its IPv4 address or IPv6 /64)."""
        return self._source_counts.get(address_group(source_host), 0)
