"""The iterative lookup against a synthetic network, step by step (no sockets, no clock)."""

from __future__ import annotations

import hashlib
import random

import pytest

from dht.contacts import Contact
from dht.ids import id_to_int
from dht.lookup import MAX_CANDIDATES, Lookup


def make_network(size: int, seed: int = 1) -> dict[bytes, Contact]:
    rng = random.Random(seed)
    contacts = {}
    for index in range(size):
        node_id = rng.randbytes(32)
        contacts[node_id] = Contact(node_id, f"10.0.{index // 250}.{index % 250 + 1}", 7000)
    return contacts


def closest(network: dict[bytes, Contact], target: bytes, count: int) -> list[Contact]:
    goal = id_to_int(target)
    return sorted(network.values(), key=lambda c: id_to_int(c.node_id) ^ goal)[:count]


def answer(network: dict[bytes, Contact], node_id: bytes, target: bytes) -> list[Contact]:
    """What a perfect node returns: the 16 nodes it knows closest to the target, where each
    node 'knows' the 40 nodes closest to itself plus 40 random ones."""
    rng = random.Random(node_id)
    known = closest(network, node_id, 40) + rng.sample(list(network.values()), 40)
    goal = id_to_int(target)
    return sorted(known, key=lambda c: id_to_int(c.node_id) ^ goal)[:16]


def run(
    lookup: Lookup,
    network: dict[bytes, Contact],
    *,
    dead: set[bytes] = frozenset(),
    slow: set[bytes] = frozenset(),
    malicious: dict[bytes, list[Contact]] | None = None,
) -> float:
    """Answer every query immediately (dead nodes never; slow ones after everything else)."""
    now = 0.0
    queried: list[bytes] = []
    late: list[bytes] = []
    while not lookup.done:
        queries = lookup.next_queries(now)
        if not queries:
            now = lookup.next_deadline() or now + 1
            lookup.tick(now)
            for node_id in late:
                lookup.on_response(node_id, answer(network, node_id, lookup.target), now)
            late.clear()
            continue
        for contact in queries:
            queried.append(contact.node_id)
            if contact.node_id in dead:
                lookup.on_failure(contact.node_id, now + 2)
            elif contact.node_id in slow:
                late.append(contact.node_id)
            elif malicious and contact.node_id in malicious:
                lookup.on_response(contact.node_id, malicious[contact.node_id], now)
            else:
                lookup.on_response(
                    contact.node_id, answer(network, contact.node_id, lookup.target), now
                )
        now += 0.1
    assert len(queried) == len(set(queried)), "no node is queried twice"
    return now


def test_finds_the_true_closest_nodes() -> None:
    network = make_network(2000)
    own = hashlib.sha256(b"me").digest()
    for trial in range(5):
        target = hashlib.sha256(f"t{trial}".encode()).digest()
        seeds = random.Random(trial).sample(list(network.values()), 20)
        lookup = Lookup(target, seeds, now=0.0, own_id=own)
        run(lookup, network)
        # Responses carry 16 contacts (a datagram's worth), so the 16 closest are certain.
        assert [c.node_id for c in lookup.results()][:16] == [
            c.node_id for c in closest(network, target, 16)
        ]
        assert 1 < lookup.hops <= 6
        assert lookup.rpcs < 120


def test_dead_and_slow_nodes_do_not_stop_it() -> None:
    network = make_network(1500, seed=2)
    target = hashlib.sha256(b"target").digest()
    truth = closest(network, target, 40)
    dead = {c.node_id for c in truth[:3]}
    slow = {c.node_id for c in truth[3:6]}
    seeds = random.Random(3).sample(list(network.values()), 20)
    lookup = Lookup(target, seeds, now=0.0, own_id=b"\x00" * 32)
    run(lookup, network, dead=dead, slow=slow)
    found = [c.node_id for c in lookup.results()]
    alive = [c.node_id for c in truth if c.node_id not in dead]
    assert found[:10] == alive[:10]


def test_a_slow_query_frees_its_slot_after_the_soft_timeout() -> None:
    network = make_network(100, seed=4)
    target = hashlib.sha256(b"x").digest()
    seeds = list(network.values())[:10]
    lookup = Lookup(target, seeds, now=0.0, own_id=b"\x00" * 32, alpha=1, soft_timeout=0.5)
    first = lookup.next_queries(0.0)
    assert len(first) == 1 and lookup.next_queries(0.1) == []
    assert lookup.next_deadline() == pytest.approx(0.5)
    lookup.tick(0.5)
    second = lookup.next_queries(0.5)
    assert len(second) == 1 and second != first
    lookup.on_response(first[0].node_id, [], 0.9)  # a late answer still counts
    assert first[0] in lookup.results()


def test_stop_ends_it_early() -> None:
    network = make_network(300, seed=5)
    lookup = Lookup(b"\x01" * 32, list(network.values())[:20], now=0.0, own_id=b"\x00" * 32)
    contact = lookup.next_queries(0.0)[0]
    lookup.on_response(contact.node_id, [], 0.1)
    lookup.stop(0.2)
    assert lookup.done and lookup.finished_at == 0.2 and lookup.next_queries(0.3) == []


def test_a_flood_of_fake_contacts_stays_bounded() -> None:
    network = make_network(200, seed=6)
    target = b"\x55" * 32
    rng = random.Random(7)
    liar = next(iter(network.values()))
    fakes = [Contact(rng.randbytes(32), "10.9.9.9", 1) for _ in range(16)]
    lookup = Lookup(target, [liar], now=0.0, own_id=b"\x00" * 32)
    for _ in range(50):
        for contact in lookup.next_queries(0.0):
            lookup.on_response(
                contact.node_id,
                [Contact(rng.randbytes(32), "10.9.9.9", 1) for _ in range(16)] + fakes,
                0.0,
            )
        if lookup.done:
            break
    assert len(lookup._candidates) <= MAX_CANDIDATES + lookup.rpcs


def test_disjoint_paths_share_no_node_and_still_converge() -> None:
    network = make_network(2000, seed=8)
    target = hashlib.sha256(b"disjoint").digest()
    seeds = random.Random(9).sample(list(network.values()), 24)
    lookup = Lookup(target, seeds, now=0.0, own_id=b"\x00" * 32, paths=3)
    run(lookup, network)
    truth = [c.node_id for c in closest(network, target, 5)]
    found = [c.node_id for c in lookup.results()]
    assert set(truth) <= set(found)


def test_disjoint_paths_survive_a_path_captured_by_liars() -> None:
    network = make_network(2000, seed=10)
    target = hashlib.sha256(b"eclipse").digest()
    seeds = random.Random(11).sample(list(network.values()), 24)
    # Every node of path 0's first seed lies, answering with fake ids "close" to the target.
    liars = {
        seeds[0].node_id: [
            Contact(bytes([b ^ 1 for b in target[:31]]) + bytes([i]), "10.7.7.7", 1)
            for i in range(16)
        ]
    }
    lookup = Lookup(target, seeds, now=0.0, own_id=b"\x00" * 32, paths=3)
    run(lookup, network, dead=set(), malicious=liars)
    truth = closest(network, target, 1)[0].node_id
    assert truth in [c.node_id for c in lookup.results()]


def test_no_seeds_means_done_with_nothing() -> None:
    lookup = Lookup(b"\x01" * 32, [], now=0.0, own_id=b"\x00" * 32)
    assert lookup.next_queries(0.0) == [] and lookup.done and lookup.results() == []


def test_the_soft_deadline_is_honoured_exactly_at_large_clock_values() -> None:
    """At t ~ 1e6 s, `now - sent_at >= timeout` can be false at `sent_at + timeout`: tick()
    must use the same arithmetic as next_deadline() or its caller spins at one instant."""
    network = make_network(50, seed=12)
    for sent in (1_000_003.0, 1_000_003.1, 1_234_567.891):
        lookup = Lookup(b"\x01" * 32, list(network.values())[:5], now=sent, own_id=b"\x00" * 32)
        lookup.next_queries(sent)
        deadline = lookup.next_deadline()
        assert deadline is not None
        lookup.tick(deadline)
        assert lookup.next_deadline() is None or lookup.next_deadline() > deadline
