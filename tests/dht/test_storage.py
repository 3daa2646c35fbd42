"""The record store: BEP 44 rules, lifetimes with an explicit clock, every bound, and speed."""

from __future__ import annotations

import hashlib
import time

import attrs
import nacl.bindings as bindings
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.records import ImmutableRecord, MutableRecord, Provider
from dht.storage import (
    ENTRY_OVERHEAD,
    PROVIDER_TTL,
    RECORD_TTL,
    PutResult,
    RecordStore,
    RejectCode,
    StoreRejected,
    StoreStats,
)

SIGNING_KEY = nacl.signing.SigningKey(bytes(range(32)))
OTHER_KEY = nacl.signing.SigningKey(bytes(range(1, 33)))
LARGEST_ENTRY = ENTRY_OVERHEAD + 32 + 32 + 64 + 8 + 1000 + 64


def key(label: object) -> bytes:
    return hashlib.sha256(f"key {label}".encode()).digest()


def host(index: int) -> str:
    return f"10.{index % 250}.{index // 250 % 250}.{1 + index // 62500}"


def provider(index: int, port: int = 4000) -> Provider:
    return Provider(hashlib.sha256(f"node {index}".encode()).digest(), host(index), port)


def signed(seq: int, value: bytes = b"v", salt: bytes = b"") -> MutableRecord:
    return MutableRecord.sign(SIGNING_KEY, salt, seq, value)


def rejected(code: RejectCode) -> pytest.RaisesExc[StoreRejected]:
    return pytest.raises(StoreRejected, check=lambda exc: exc.code == code)


# -- providers ----------------------------------------------------------------------------------


def test_providers_freshest_first_with_a_limit() -> None:
    store = RecordStore()
    for index in range(5):
        assert store.add_provider(key(0), provider(index), source_host=host(index), now=index)
    assert store.get_providers(key(0), 10.0) == [provider(i) for i in (4, 3, 2, 1, 0)]
    assert store.get_providers(key(0), 10.0, limit=2) == [provider(4), provider(3)]
    assert store.get_providers(key(0), 10.0, limit=0) == []
    assert store.get_providers(key(1), 10.0) == []


def test_reannouncing_refreshes_a_provider() -> None:
    store = RecordStore()
    store.add_provider(key(0), provider(0), source_host=host(0), now=0.0)
    store.add_provider(key(0), provider(1), source_host=host(1), now=1.0)
    result = store.add_provider(key(0), provider(0), source_host=host(0), now=100.0)
    assert result is PutResult.REFRESHED
    assert store.get_providers(key(0), 100.0) == [provider(0), provider(1)]
    # provider(1) lapses at 1 + TTL; provider(0) lives on until 100 + TTL.
    assert store.get_providers(key(0), 1.0 + PROVIDER_TTL) == [provider(0)]
    assert store.expire(1.0 + PROVIDER_TTL) == 1
    assert store.get_providers(key(0), 100.0 + PROVIDER_TTL - 0.001) == [provider(0)]
    assert store.get_providers(key(0), 100.0 + PROVIDER_TTL) == []
    assert store.expire(100.0 + PROVIDER_TTL) == 1
    assert store.stats(100.0 + PROVIDER_TTL).keys == 0


def test_the_same_node_at_another_port_is_another_provider() -> None:
    store = RecordStore()
    store.add_provider(key(0), provider(0, 1), source_host=host(0), now=0.0)
    store.add_provider(key(0), provider(0, 2), source_host=host(0), now=1.0)
    assert store.get_providers(key(0), 1.0) == [provider(0, 2), provider(0, 1)]


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        RecordStore().add_provider(b"short", provider(0), source_host=host(0), now=0.0)


# -- mutable records ------------------------------------------------------------------------


def test_mutable_put_get_and_replace() -> None:
    store = RecordStore()
    first = signed(1, b"one")
    assert store.get(first.key, 0.0) is None
    assert store.put_mutable(first, source_host=host(0), now=0.0) is PutResult.STORED
    assert store.get(first.key, 0.0) == first
    second = signed(2, b"two")
    assert store.put_mutable(second, source_host=host(1), now=1.0) is PutResult.REPLACED
    assert store.get(first.key, 1.0) == second
    assert store.get_mutable(first.key, 1.0) == second
    assert store.get_immutable(first.key, 1.0) is None
    assert store.stats(1.0).mutable_records == 1
    assert store.source_count(host(0)) == 0  # the charge moved with the content
    assert store.source_count(host(1)) == 1


def test_lower_seq_is_refused() -> None:
    store = RecordStore()
    store.put_mutable(signed(5), source_host=host(0), now=0.0)
    with rejected(RejectCode.SEQ_TOO_OLD) as info:
        store.put_mutable(signed(4), source_host=host(0), now=1.0)
    assert "seq too old" in info.value.reason
    assert store.get(signed(5).key, 1.0) == signed(5)


def test_equal_seq_with_another_value_is_refused() -> None:
    store = RecordStore()
    store.put_mutable(signed(5, b"a"), source_host=host(0), now=0.0)
    with rejected(RejectCode.SEQ_CONFLICT):
        store.put_mutable(signed(5, b"b"), source_host=host(0), now=1.0)
    assert store.get(signed(5).key, 1.0) == signed(5, b"a")


def test_equal_seq_and_value_refreshes() -> None:
    store = RecordStore()
    record = signed(5)
    store.put_mutable(record, source_host=host(0), now=0.0)
    assert store.put_mutable(record, source_host=host(1), now=1000.0) is PutResult.REFRESHED
    assert store.get(record.key, RECORD_TTL + 999.0) == record
    assert store.get(record.key, RECORD_TTL + 1000.0) is None
    assert store.source_count(host(0)) == 1  # a refresh does not move the charge


def _randomised_signature(seed: bytes, message: bytes, nonce: bytes) -> bytes:
    """A valid Ed25519 signature with a nonce of our choice (as a randomising signer makes),
    which libsodium's deterministic signing never produces."""
    digest = hashlib.sha512(seed).digest()
    scalar = bytearray(digest[:32])
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    a = bindings.crypto_core_ed25519_scalar_reduce(bytes(scalar) + bytes(32))
    r = bindings.crypto_core_ed25519_scalar_reduce(hashlib.sha512(nonce).digest())
    big_r = bindings.crypto_scalarmult_ed25519_base_noclamp(r)
    public_key = bytes(nacl.signing.SigningKey(seed).verify_key)
    k = bindings.crypto_core_ed25519_scalar_reduce(
        hashlib.sha512(big_r + public_key + message).digest()
    )
    return big_r + bindings.crypto_core_ed25519_scalar_add(
        r, bindings.crypto_core_ed25519_scalar_mul(k, a)
    )


def test_equal_seq_and_value_with_another_valid_signature_refreshes_and_keeps_ours() -> None:
    store = RecordStore()
    record = signed(5)
    store.put_mutable(record, source_host=host(0), now=0.0)
    other = attrs.evolve(
        record, signature=_randomised_signature(bytes(range(32)), record.signed_bytes(), b"n")
    )
    assert other.signature != record.signature
    other.verify()
    assert store.put_mutable(other, source_host=host(1), now=10.0) is PutResult.REFRESHED
    assert store.get(record.key, RECORD_TTL + 5.0) == record
    # A second signature that does not verify is refused, whatever it claims.
    with rejected(RejectCode.INVALID_SIGNATURE):
        store.put_mutable(attrs.evolve(record, signature=bytes(64)), source_host=host(0), now=11.0)
    assert store.get(record.key, 11.0) == record


def test_cas() -> None:
    store = RecordStore()
    # Nothing stored: cas is not checked (as libtorrent).
    assert store.put_mutable(signed(3), cas=7, source_host=host(0), now=0.0) is PutResult.STORED
    with rejected(RejectCode.CAS_MISMATCH) as info:
        store.put_mutable(signed(4), cas=2, source_host=host(0), now=1.0)
    assert "cas mismatch" in info.value.reason
    with rejected(RejectCode.CAS_MISMATCH):  # even for a republication of what is stored
        store.put_mutable(signed(3), cas=2, source_host=host(0), now=1.0)
    result = store.put_mutable(signed(3), cas=3, source_host=host(0), now=1.0)
    assert result is PutResult.REFRESHED
    result = store.put_mutable(signed(4), cas=3, source_host=host(0), now=2.0)
    assert result is PutResult.REPLACED
    assert store.get(signed(4).key, 2.0) == signed(4)


def test_bad_signatures_are_refused_and_nothing_is_stored() -> None:
    store = RecordStore()
    record = signed(1)
    for tampered in (
        attrs.evolve(record, value=b"other"),
        attrs.evolve(record, seq=2),
        attrs.evolve(record, salt=b"s"),
        attrs.evolve(record, public_key=bytes(OTHER_KEY.verify_key)),
        attrs.evolve(record, signature=bytes(64)),
    ):
        with rejected(RejectCode.INVALID_SIGNATURE):
            store.put_mutable(tampered, source_host=host(0), now=0.0)
    assert store.stats(0.0).records == 0
    store.put_mutable(record, source_host=host(0), now=0.0)
    with rejected(RejectCode.INVALID_SIGNATURE):  # a higher seq must be signed too
        store.put_mutable(attrs.evolve(record, seq=9), source_host=host(0), now=0.0)


def test_explicit_keys_must_match() -> None:
    store = RecordStore()
    record = signed(1, salt=b"s")
    with rejected(RejectCode.KEY_MISMATCH):
        store.put_mutable(record, source_host=host(0), now=0.0, key=key(0))
    assert store.put_mutable(record, source_host=host(0), now=0.0, key=record.key)
    immutable = ImmutableRecord(b"data")
    with rejected(RejectCode.KEY_MISMATCH):
        store.put_immutable(immutable, source_host=host(0), now=0.0, key=key(0))
    assert store.put_immutable(
        immutable, source_host=host(0), now=0.0, key=hashlib.sha256(b"data").digest()
    )


def test_salts_make_separate_records() -> None:
    store = RecordStore()
    a, b = signed(1, b"a", salt=b"x"), signed(1, b"b", salt=b"y")
    store.put_mutable(a, source_host=host(0), now=0.0)
    store.put_mutable(b, source_host=host(0), now=0.0)
    assert store.get(a.key, 0.0) == a
    assert store.get(b.key, 0.0) == b


# -- immutable records ----------------------------------------------------------------------


def test_immutable_put_refresh_and_expiry() -> None:
    store = RecordStore()
    record = ImmutableRecord(b"hello")
    assert store.put_immutable(record, source_host=host(0), now=0.0) is PutResult.STORED
    assert store.get(record.key, 0.0) == record
    assert store.put_immutable(record, source_host=host(1), now=50.0) is PutResult.REFRESHED
    assert store.get(record.key, RECORD_TTL + 49.0) == record
    assert store.get(record.key, RECORD_TTL + 50.0) is None
    assert store.expire(RECORD_TTL + 50.0) == 1
    assert store.stats(RECORD_TTL + 50.0) == store.stats(0.0)  # time never runs backwards


def test_mutable_records_expire_unless_reput() -> None:
    store = RecordStore()
    kept, lapsed = signed(1, salt=b"kept"), signed(1, salt=b"lapsed")
    store.put_mutable(kept, source_host=host(0), now=0.0)
    store.put_mutable(lapsed, source_host=host(0), now=0.0)
    store.put_mutable(kept, source_host=host(0), now=RECORD_TTL - 1)
    assert store.expire(RECORD_TTL) == 1
    assert store.get(lapsed.key, RECORD_TTL) is None
    assert store.get(kept.key, 2 * RECORD_TTL - 2) == kept


def test_an_immutable_value_equal_to_a_mutable_key_input_cannot_take_its_slot() -> None:
    store = RecordStore()
    record = signed(1, salt=b"salt")
    squatter = ImmutableRecord(record.public_key + b"salt")
    assert squatter.key != record.key  # the mutable key is domain-separated
    store.put_immutable(squatter, source_host=host(9), now=0.0)
    assert store.put_mutable(record, source_host=host(0), now=0.0) is PutResult.STORED
    assert store.get(record.key, 0.0) == record
    assert store.get(squatter.key, 0.0) == squatter
    assert store.stats(0.0).keys == 2


# -- bounds ---------------------------------------------------------------------------------


def test_a_flooding_source_is_refused_past_its_quota_without_evicting_others() -> None:
    store = RecordStore(max_per_source=10)
    for index in range(5):
        store.add_provider(key(index), provider(index), source_host=host(index), now=0.0)
    others = store.stats(0.0)
    flood = host(100)
    refused = 0
    for index in range(100):
        record = MutableRecord.sign(SIGNING_KEY, str(index).encode(), 1, b"x")
        try:
            store.put_mutable(record, source_host=flood, now=1.0)
        except StoreRejected as exc:
            assert exc.code is RejectCode.SOURCE_QUOTA
            refused += 1
    with rejected(RejectCode.SOURCE_QUOTA):
        store.add_provider(key(0), provider(100), source_host=flood, now=1.0)
    with rejected(RejectCode.SOURCE_QUOTA):
        store.put_immutable(ImmutableRecord(b"more"), source_host=flood, now=1.0)
    assert refused == 90
    assert store.source_count(flood) == 10
    for index in range(5):
        assert store.get_providers(key(index), 1.0) == [provider(index)]
    assert store.stats(1.0).providers == others.providers
    # Refreshing what it holds is still allowed; once its entries lapse it may write again.
    first = MutableRecord.sign(SIGNING_KEY, b"0", 1, b"x")
    assert store.put_mutable(first, source_host=flood, now=2.0) is PutResult.REFRESHED
    store.expire(1.0 + RECORD_TTL)
    assert store.source_count(flood) == 1
    assert store.put_immutable(ImmutableRecord(b"more"), source_host=flood, now=1.0 + RECORD_TTL)


def test_a_replacement_by_the_same_source_does_not_need_more_quota() -> None:
    store = RecordStore(max_per_source=1)
    store.put_mutable(signed(1), source_host=host(0), now=0.0)
    assert store.put_mutable(signed(2), source_host=host(0), now=1.0) is PutResult.REPLACED
    with rejected(RejectCode.SOURCE_QUOTA):
        store.put_mutable(signed(1, salt=b"other"), source_host=host(0), now=1.0)
    # Another source at its quota cannot take over the record either.
    store.put_immutable(ImmutableRecord(b"x"), source_host=host(1), now=1.0)
    with rejected(RejectCode.SOURCE_QUOTA):
        store.put_mutable(signed(3), source_host=host(1), now=1.0)


def test_an_ipv6_slash_64_is_one_source() -> None:
    store = RecordStore(max_per_source=3)
    for index in range(3):
        store.add_provider(key(index), provider(index), source_host=f"2001:db8::{index}", now=0.0)
    with rejected(RejectCode.SOURCE_QUOTA):
        store.add_provider(key(9), provider(9), source_host="2001:db8::ffff:1", now=0.0)
    store.add_provider(key(9), provider(9), source_host="2001:db8:0:1::1", now=0.0)


def test_a_flood_into_one_key_replaces_its_own_entries_not_others() -> None:
    store = RecordStore(max_providers_per_key=8)
    honest = [provider(index) for index in range(3)]
    for index, item in enumerate(honest):
        store.add_provider(key(0), item, source_host=host(index), now=float(index))
    flood = [provider(100 + index) for index in range(50)]
    for index, item in enumerate(flood):
        store.add_provider(key(0), item, source_host=host(100), now=10.0 + index)
    held = store.get_providers(key(0), 100.0, limit=100)
    assert len(held) == 8
    assert set(honest) <= set(held)
    assert held[:5] == flood[::-1][:5]  # the flooder keeps its five newest


def test_a_full_key_of_distinct_sources_drops_its_oldest() -> None:
    store = RecordStore(max_providers_per_key=4)
    for index in range(6):
        store.add_provider(key(0), provider(index), source_host=host(index), now=float(index))
    assert store.get_providers(key(0), 10.0) == [provider(i) for i in (5, 4, 3, 2)]


def test_the_heaviest_source_at_a_full_key_gives_way() -> None:
    store = RecordStore(max_providers_per_key=4)
    store.add_provider(key(0), provider(0), source_host=host(0), now=0.0)
    for index in range(1, 4):  # host(1) holds three
        store.add_provider(key(0), provider(index), source_host=host(1), now=float(index))
    store.add_provider(key(0), provider(9), source_host=host(9), now=10.0)
    assert store.get_providers(key(0), 10.0) == [provider(i) for i in (9, 3, 2, 0)]


def test_total_bytes_bound_evicts_the_soonest_expiring_first() -> None:
    store = RecordStore(max_bytes=LARGEST_ENTRY * 3)
    records = [ImmutableRecord(bytes([index]) * 1000) for index in range(5)]
    for index, record in enumerate(records):
        store.put_immutable(record, source_host=host(index), now=float(index))
        assert store.stats(float(index)).bytes <= store.max_bytes
    stats = store.stats(10.0)
    assert stats.immutable_records == 3  # 3 x 1416 bytes fit in 4752, 4 do not
    assert stats.evicted == 2
    assert [store.get(r.key, 10.0) is not None for r in records] == [False] * 2 + [True] * 3


def test_eviction_order_spans_providers_and_records() -> None:
    size_of_provider = ENTRY_OVERHEAD + 32 + 32 + len(host(0)) + 2
    store = RecordStore(max_bytes=LARGEST_ENTRY + 3 * size_of_provider)
    # A provider stored at 0 expires at TTL = 1800; a record stored at 0 at 7200.
    store.put_immutable(ImmutableRecord(bytes(1000)), source_host=host(0), now=0.0)
    for index in range(3):
        store.add_provider(key(index), provider(index), source_host=host(index), now=100.0)
    # A large record needs room: the providers (expiring at 1900) go before the record (7200).
    store.put_immutable(ImmutableRecord(bytes(999)), source_host=host(1), now=200.0)
    stats = store.stats(200.0)
    assert stats.providers == 0
    assert stats.immutable_records == 2


def test_max_keys_bound() -> None:
    store = RecordStore(max_keys=3)
    for index in range(5):
        store.add_provider(key(index), provider(index), source_host=host(index), now=float(index))
        assert store.stats(float(index)).keys <= 3
    assert [bool(store.get_providers(key(i), 10.0)) for i in range(5)] == [False] * 2 + [True] * 3
    # Adding to a key that exists needs no new key.
    store.add_provider(key(4), provider(9), source_host=host(9), now=11.0)
    assert store.stats(11.0).keys == 3
    assert store.stats(11.0).providers == 4


def test_stats() -> None:
    store = RecordStore()
    store.add_provider(key(0), provider(0), source_host=host(0), now=0.0)
    store.put_mutable(signed(1), source_host=host(0), now=0.0)
    store.put_immutable(ImmutableRecord(b"x"), source_host=host(1), now=0.0)
    stats = store.stats(1.0)
    assert stats.as_dict() == {
        "keys": 3,
        "providers": 1,
        "mutable_records": 1,
        "immutable_records": 1,
        "records": 2,
        "bytes": stats.bytes,
        "sources": 2,
        "evicted": 0,
    }
    assert stats.bytes == 3 * ENTRY_OVERHEAD + (32 + 32 + 8 + 2) + (32 + 32 + 8 + 1 + 64) + 33
    assert store.get_providers(key(0), PROVIDER_TTL) == []  # lapsed (reads remove nothing)
    assert store.stats().providers == 1  # without `now`: not collected yet
    assert store.stats(PROVIDER_TTL).providers == 0


def test_constructor_bounds() -> None:
    with pytest.raises(ValueError):
        RecordStore(max_keys=0)
    with pytest.raises(ValueError):
        RecordStore(max_bytes=100)
    with pytest.raises(ValueError):
        RecordStore(provider_ttl=0)


def test_time_running_backwards_is_taken_as_the_latest_time() -> None:
    store = RecordStore()
    store.add_provider(key(0), provider(0), source_host=host(0), now=100.0)
    store.add_provider(key(0), provider(1), source_host=host(1), now=50.0)  # taken as 100
    assert store.get_providers(key(0), 0.0) == [provider(1), provider(0)]
    assert store.get_providers(key(0), 100.0 + PROVIDER_TTL) == []


# -- invariants under any sequence of operations --------------------------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["provider", "mutable", "other value", "cas", "immutable", "expire"]),
        st.integers(0, 7),  # key
        st.integers(0, 11),  # source / provider / seq
        st.floats(0, 400, allow_nan=False),  # time step
    ),
    max_size=60,
)
_MUTABLE_POOL = {
    (k, s, variant): MutableRecord.sign(SIGNING_KEY, bytes([k]), s, bytes([variant]) * 300)
    for k in range(8)
    for s in range(12)
    for variant in range(2)
}


def _run(ops: list[tuple[str, int, int, float]]) -> tuple[RecordStore, list[object]]:
    store = RecordStore(
        max_keys=6,
        max_providers_per_key=3,
        max_per_source=4,
        max_bytes=LARGEST_ENTRY * 6,
    )
    now = 0.0
    log: list[object] = []
    for op, k, n, step in ops:
        now += step
        source = host(n % 3)
        try:
            if op == "provider":
                log.append(store.add_provider(key(k), provider(n), source_host=source, now=now))
            elif op in ("mutable", "other value", "cas"):
                record = _MUTABLE_POOL[k, n, int(op == "other value")]
                cas = n % 4 if op == "cas" else None
                log.append(store.put_mutable(record, cas=cas, source_host=source, now=now))
            elif op == "immutable":
                value = bytes([k]) * (90 * n)
                log.append(store.put_immutable(ImmutableRecord(value), source_host=source, now=now))
            else:
                log.append(store.expire(now))
        except StoreRejected as exc:
            log.append(exc.code)
        log.append(store.stats(now))
        log.append(tuple(store.get_providers(key(k), now, limit=10)))
        log.append(store.get(_MUTABLE_POOL[k, 0, 0].key, now))
    return store, log


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_bounds_hold_and_runs_are_deterministic(ops: list[tuple[str, int, int, float]]) -> None:
    store, log = _run(ops)
    assert _run(ops)[1] == log
    for item in log:
        if isinstance(item, StoreStats):
            assert item.bytes <= store.max_bytes
            assert item.keys <= store.max_keys
            assert item.sources <= item.providers + item.records
    # Recount from the store's own tables: the counters never drift.
    internal = store._providers
    assert all(0 < len(p) <= store.max_providers_per_key for p in internal.values())
    counts: dict[str, int] = {}
    total = 0
    for entry in [*store._provider_queue, *store._record_queue]:
        counts[entry.source] = counts.get(entry.source, 0) + 1
        total += entry.size
    assert counts == store._source_counts
    assert all(count <= store.max_per_source for count in counts.values())
    assert total == store._bytes
    keys = {*internal, *store._mutable, *store._immutable}
    assert keys == set(store._key_refs)


# -- speed ----------------------------------------------------------------------------------


def test_100k_providers_added_and_expired_quickly() -> None:
    store = RecordStore(max_per_source=1 << 20, max_keys=1 << 20, max_bytes=1 << 30)
    items = [(key(index % 20_000), provider(index)) for index in range(100_000)]
    sources = [item.host for _, item in items]
    started = time.perf_counter()
    for index, (item_key, item) in enumerate(items):
        store.add_provider(item_key, item, source_host=sources[index], now=index * 0.001)
    assert store.stats(100.0).providers == 100_000
    for step in range(1, 101):  # expire called often, in small batches
        store.expire(100.0 + PROVIDER_TTL * step / 100)
    elapsed = time.perf_counter() - started
    assert store.stats(200.0 + PROVIDER_TTL).providers == 0
    assert store.stats(200.0 + PROVIDER_TTL).bytes == 0
    # Not a speed target (those live in bench/): a guard against quadratic adds or expiry,
    # which take minutes here. About 1 s on an idle machine; CI shares its cores.
    assert elapsed < 15.0, f"{elapsed:.2f} s"
