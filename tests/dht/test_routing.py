"""The routing table: buckets, splitting, liveness, replacements, subnet limits."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from dht.ids import ID_BITS, common_prefix_length, id_in_bucket, id_to_int
from dht.routing import (
    MAX_FAILURES,
    QUESTIONABLE_AFTER_SECONDS,
    REFRESH_INTERVAL_SECONDS,
    RoutingTable,
)

OWN = hashlib.sha256(b"own").digest()


def node(label: object) -> bytes:
    return hashlib.sha256(str(label).encode()).digest()


def host(index: int) -> str:
    return f"10.{index % 250}.{index // 250 % 250}.1"  # each in its own /24


def at_prefix(prefix: int, label: object) -> bytes:
    return id_in_bucket(OWN, prefix, node(label))


def test_id_in_bucket_shares_exactly_that_prefix() -> None:
    for prefix in (0, 1, 7, 100, 255):
        assert common_prefix_length(OWN, at_prefix(prefix, prefix)) == prefix


def test_far_bucket_keeps_k_then_fills_the_replacement_cache() -> None:
    table = RoutingTable(OWN, now=0.0, k=4)
    for index in range(4):  # near our id: they move out when the first bucket splits
        table.observe(at_prefix(5, index), host(100 + index), 1, b"k" * 32, now=0.0)
    far = [at_prefix(0, i) for i in range(10)]
    for index, node_id in enumerate(far):
        assert table.observe(node_id, host(index), 1000, b"k" * 32, now=1.0) is None
    first = table.buckets[0]
    assert len(first.entries) == 4
    assert [e.node_id for e in first.entries] == far[:4]  # long-lived contacts are kept
    assert [e.node_id for e in first.replacements] == far[6:]  # the newest k that did not fit


def test_the_bucket_holding_our_id_splits() -> None:
    table = RoutingTable(OWN, now=0.0, k=4)
    for prefix in range(12):
        for copy in range(3):
            table.observe(
                at_prefix(prefix, (prefix, copy)), host(prefix * 3 + copy), 1, b"k" * 32, 0.0
            )
    assert len(table.buckets) > 4
    for index, bucket in enumerate(table.buckets[:-1]):
        for entry in bucket.entries:
            assert common_prefix_length(OWN, entry.node_id) == index
    assert len(table) == 36


def test_a_quiet_oldest_entry_is_offered_for_a_ping_and_failures_evict() -> None:
    table = RoutingTable(OWN, now=0.0, k=2)
    table.observe(at_prefix(5, "near1"), host(99), 1, b"k" * 32, 0.0)
    table.observe(at_prefix(5, "near2"), host(98), 1, b"k" * 32, 0.0)
    a, b, c = (at_prefix(0, x) for x in "abc")
    table.observe(a, host(1), 1, b"k" * 32, 0.0)
    table.observe(b, host(2), 1, b"k" * 32, 0.0)
    assert table.observe(c, host(3), 1, b"k" * 32, 1.0) is None  # a is fresh: no ping
    later = QUESTIONABLE_AFTER_SECONDS + 5
    to_ping = table.observe(c, host(3), 1, b"k" * 32, later)
    assert to_ping is not None and to_ping.node_id == a
    assert table.failure(a, later) is False
    assert table.failure(a, later) is True  # two failures and a replacement is waiting
    assert a not in table and c in table


def test_without_replacements_a_contact_survives_until_max_failures() -> None:
    table = RoutingTable(OWN, now=0.0)
    a = node("a")
    table.observe(a, host(1), 1, b"k" * 32, 0.0)
    for _ in range(MAX_FAILURES - 1):
        assert not table.failure(a, 1.0)
    assert table.failure(a, 1.0)
    assert a not in table


def test_an_answer_resets_the_failure_count() -> None:
    table = RoutingTable(OWN, now=0.0)
    a = node("a")
    table.observe(a, host(1), 1, b"k" * 32, 0.0)
    table.failure(a, 1.0)
    table.failure(a, 1.0)
    table.observe(a, host(1), 1, b"k" * 32, 2.0)
    assert not table.failure(a, 3.0)


def test_at_most_two_per_subnet_in_a_bucket() -> None:
    table = RoutingTable(OWN, now=0.0)
    for index in range(5):
        table.observe(at_prefix(0, index), f"192.0.2.{index + 1}", 1, b"k" * 32, 0.0)
    assert len(table) == 2
    for index in range(5):
        table.observe(at_prefix(1, index), f"2001:db8::{index + 1}", 1, b"k" * 32, 0.0)
    assert len(table) == 4


def test_a_live_contact_keeps_its_address() -> None:
    table = RoutingTable(OWN, now=0.0)
    a = node("a")
    table.observe(a, "10.0.0.1", 1, b"k" * 32, 0.0)
    table.observe(a, "10.9.9.9", 2, b"k" * 32, 1.0)
    entry = table.get(a)
    assert entry is not None and (entry.host, entry.port) == ("10.0.0.1", 1)
    table.failure(a, 2.0)
    table.observe(a, "10.9.9.9", 2, b"k" * 32, 3.0)  # it moved while unreachable
    assert (entry.host, entry.port) == ("10.9.9.9", 2)


def test_we_never_add_ourselves() -> None:
    table = RoutingTable(OWN, now=0.0)
    table.observe(OWN, "10.0.0.1", 1, b"k" * 32, 0.0)
    assert len(table) == 0


def test_stale_buckets_and_touch() -> None:
    table = RoutingTable(OWN, now=0.0)
    assert table.stale_buckets(REFRESH_INTERVAL_SECONDS - 1) == []
    assert table.stale_buckets(REFRESH_INTERVAL_SECONDS) == [0]
    table.touch(node("x"), REFRESH_INTERVAL_SECONDS)
    assert table.stale_buckets(REFRESH_INTERVAL_SECONDS + 1) == []


@settings(max_examples=30)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=150, unique=True), st.integers())
def test_closest_is_the_true_xor_order(labels: list[int], target_label: int) -> None:
    table = RoutingTable(OWN, now=0.0)
    for index, label in enumerate(labels):
        table.observe(node(label), host(index), 1, b"k" * 32, 0.0)
    target = node(f"target{target_label}")
    everyone = sorted(
        (e.node_id for e in table.entries()), key=lambda n: id_to_int(n) ^ id_to_int(target)
    )
    assert [e.node_id for e in table.closest(target, 8)] == everyone[:8]
    assert len(table) <= len(labels)
    assert all(common_prefix_length(OWN, e.node_id) < ID_BITS for e in table.entries())
