"""The index exchange: two state machines wired back to back through the real codec.

Checks that wants are answered, that changes travel as increments, that a fresh Summary
replaces increments once removals pile up, what it all costs in bytes, and that a peer
breaking the rules is caught.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wire.index
from wire.errors import LocalProtocolError, ProtocolError
from wire.index import (
    MAX_EAGER_WANTS,
    MAX_INCREMENTS,
    MAX_WANTS_PER_PEER,
    REFRESH_FLOOR,
    IndexExchange,
    LocalIndex,
    PeerHolds,
    PeerWants,
    added_limit,
    removed_limit,
)
from wire.swarm import (
    MAX_IDS_PER_MESSAGE,
    HaveContainer,
    Holding,
    Summary,
    Wants,
    decode,
    encode,
)


def ids(start: int, count: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(start, start + count)]


class Side:
    """One node's index and its exchange with the other side, counting what it sends."""

    def __init__(self, held: list[bytes] = (), wants: list[bytes] = ()) -> None:  # type: ignore[assignment]
        self.local = LocalIndex(held, wants)
        self.exchange = IndexExchange(self.local)
        self.sent_bytes = 0
        self.sent: list[Any] = []
        self.events: list[Any] = []

    def reset_counts(self) -> None:
        self.sent_bytes = 0
        self.sent = []


def pump(a: Side, b: Side, *, answer_wants: bool = True) -> None:
    """Deliver everything both sides have to say until both are quiet. When `answer_wants`,
    play the engine: answer each PeerWants with a HaveContainer (sent through the codec)."""
    for _ in range(50):
        moved = False
        for source, target in ((a, b), (b, a)):
            outgoing: list[Any] = list(source.exchange.flush())
            for event in source.exchange.take_events():
                source.events.append(event)
                if answer_wants and isinstance(event, PeerWants):
                    outgoing += [
                        HaveContainer(cid, True, (), (), ()) for cid in event.container_ids
                    ]
            for message in outgoing:
                payload = encode(message)
                source.sent_bytes += len(payload)
                source.sent.append(message)
                target.exchange.receive(decode(payload))  # type: ignore[arg-type]
                moved = True
        if not moved:
            for side in (a, b):
                side.events += side.exchange.take_events()
            return
    raise AssertionError("the exchange did not settle")


def connect(a: Side, b: Side) -> None:
    pump(a, b)


def kinds(messages: list[Any]) -> list[str]:
    return [type(message).__name__ for message in messages]


# -- the basics ----------------------------------------------------------------------------------


def test_on_connect_each_side_sends_one_summary_first() -> None:
    a, b = Side(ids(0, 10)), Side(ids(100, 3))
    assert kinds(a.exchange.flush()) == ["Summary"]
    assert a.exchange.flush() == []
    assert not b.exchange.has_peer_summary
    assert not b.exchange.peer_may_hold(ids(0, 1)[0])


def test_a_want_is_answered_and_confirmed() -> None:
    x, y = ids(0, 2)
    a = Side(wants=[x])
    b = Side(held=[x, y])
    connect(a, b)
    assert b.events == [PeerWants((x,))]
    assert b.exchange.peer_wants_held() == (x,)
    assert [event.container_id for event in a.events if isinstance(event, PeerHolds)] == [x]
    assert a.exchange.peer_may_hold(x) and a.exchange.peer_may_hold(y)


def test_wants_go_only_to_peers_that_may_hold_them_and_follow_increments() -> None:
    wanted = ids(0, 200)
    a = Side(wants=wanted)
    b = Side(held=ids(1000, 20))
    connect(a, b)
    # B holds none of them: at most the odd Bloom false positive is sent.
    early = {x for m in a.sent if isinstance(m, Wants) for x in m.added}
    assert len(early) < 10
    later = [x for x in wanted if x not in early][7:9]
    a.reset_counts()
    b.reset_counts()
    b.local.held_added(later)
    pump(a, b)
    assert kinds(b.sent[:1]) == ["Holding"]
    assert [m for m in a.sent if isinstance(m, Wants)] == [Wants(tuple(later), ())]
    assert PeerWants(tuple(later)) in b.events
    assert {e.container_id for e in a.events if isinstance(e, PeerHolds)} == set(later)


def test_holding_something_the_peer_wanted_earlier_is_reported() -> None:
    x, y = ids(0, 2)
    a = Side(wants=[x])
    b = Side(held=[y])
    connect(a, b)
    # Force the want through (as after a false positive), then B comes to hold it.
    a.local.unwant([x])
    a.exchange._wants_view.clear()  # white box: as if the want had been sent earlier
    b.exchange.receive(Wants((x,), ()))
    assert b.exchange.take_events() == []  # B does not hold it: nothing to answer yet
    b.local.held_added([x])
    assert b.exchange.take_events() == [PeerWants((x,))]
    assert b.exchange.peer_wants_held() == (x,)


def test_a_want_for_metadata_still_sought_goes_to_every_peer_and_is_answered_on_holding() -> None:
    x, y = ids(0, 2)
    a = Side()
    a.local.want([x], everywhere=True)
    a.local.want([y])
    b = Side(held=ids(1000, 20))
    first = a.exchange.flush()  # without waiting for B's Summary
    assert first[1:] == [Wants((x,), ())] and kinds(first) == ["Summary", "Wants"]
    for message in first:
        b.exchange.receive(decode(encode(message)))  # type: ignore[arg-type]
    connect(a, b)
    assert not any(isinstance(m, Wants) for m in a.sent)  # y: B may not hold it
    assert b.events == []  # B does not hold x: nothing to answer yet
    a.reset_counts()
    b.reset_counts()
    b.local.held_added([x])
    pump(a, b)
    # B answers the want at once, beside its increment; A need not want it again.
    assert kinds(b.sent) == ["Holding", "HaveContainer"]
    assert not any(isinstance(m, Wants) for m in a.sent)
    assert PeerWants((x,)) in b.events
    assert [e.container_id for e in a.events if isinstance(e, PeerHolds)] == [x]


def test_a_settled_want_goes_only_where_it_may_be_held_and_eager_wants_are_capped() -> None:
    x = ids(0, 1)[0]
    a = Side()
    a.exchange.close()  # connect only once the metadata is in
    a.local.want([x], everywhere=True)
    a.local.settle([x])
    assert a.local.wants(x) and not a.local.wanted_everywhere(x)
    a.exchange = IndexExchange(a.local)
    b = Side(held=ids(1000, 20))
    connect(a, b)
    assert not any(isinstance(m, Wants) for m in a.sent)
    many = ids(10, MAX_EAGER_WANTS + 5)
    a.local.want(many, everywhere=True)
    assert a.local.eager_ids() == tuple(many[:MAX_EAGER_WANTS])
    a.local.unwant(many[:1])
    assert not a.local.wanted_everywhere(many[0])


def test_unwanting_tells_only_peers_that_were_told() -> None:
    x, y = ids(0, 2)
    a = Side(wants=[x, y])
    b = Side(held=[x])
    connect(a, b)
    a.reset_counts()
    a.local.unwant([x, y])
    pump(a, b)
    wants = [m for m in a.sent if isinstance(m, Wants)]
    assert wants == [Wants((), (x,))]
    assert b.exchange.peer_wants_held() == ()


def test_changes_travel_as_increments() -> None:
    a, b = Side(ids(0, 5000)), Side()
    connect(a, b)
    a.reset_counts()
    a.local.held_added(ids(10_000, 10))
    a.local.held_removed(ids(0, 5))
    pump(a, b)
    assert a.sent == [Holding(tuple(ids(10_000, 10)), tuple(ids(0, 5)))]
    assert all(b.exchange.peer_may_hold(x) for x in ids(10_000, 10))
    assert not any(b.exchange.peer_may_hold(x) for x in ids(0, 5))
    assert all(b.exchange.peer_may_hold(x) for x in ids(5, 4995))


def test_changes_that_cancel_before_a_flush_send_nothing() -> None:
    a, b = Side(ids(0, 100)), Side()
    connect(a, b)
    a.reset_counts()
    a.local.held_added(ids(500, 3))
    a.local.held_removed(ids(500, 3))
    a.local.held_removed(ids(0, 2))
    a.local.held_added(ids(0, 2))
    pump(a, b)
    assert a.sent == []


def test_a_fresh_summary_replaces_increments_after_many_removals() -> None:
    a, b = Side(ids(0, 8000)), Side()
    connect(a, b)
    assert removed_limit(8000) == 2000
    a.reset_counts()
    a.local.held_removed(ids(0, 1500))
    pump(a, b)
    assert kinds(a.sent) == ["Holding"]
    a.reset_counts()
    a.local.held_removed(ids(1500, 501))  # 2,001 removed since the Summary
    pump(a, b)
    assert kinds(a.sent) == ["Summary"]
    summary = a.sent[0]
    assert summary.count == 8000 - 2001
    # Removed ids are gone from B's view (up to the odd false positive of the new filter).
    assert sum(b.exchange.peer_may_hold(x) for x in ids(0, 2001)) < 60
    assert all(b.exchange.peer_may_hold(x) for x in ids(2001, 5999))
    # And the counters start again from the new Summary.
    a.reset_counts()
    a.local.held_removed(ids(2001, 10))
    pump(a, b)
    assert kinds(a.sent) == ["Holding"]


def test_a_fresh_summary_replaces_increments_once_additions_outgrow_the_summary() -> None:
    a, b = Side(ids(0, 10)), Side()
    connect(a, b)
    a.reset_counts()
    a.local.held_added(ids(100, REFRESH_FLOOR))
    pump(a, b)
    assert kinds(a.sent) == ["Holding"]
    a.reset_counts()
    a.local.held_added(ids(5000, 1))
    pump(a, b)
    assert kinds(a.sent) == ["Summary"]
    assert all(b.exchange.peer_may_hold(x) for x in ids(100, REFRESH_FLOOR) + ids(5000, 1))


def test_big_increments_are_split_and_shrinking_ops_go_first() -> None:
    a, b = Side(ids(0, 20_000)), Side()
    connect(a, b)
    a.local.held_removed(ids(0, 4000))
    pump(a, b)
    a.reset_counts()
    a.local.held_added(ids(100_000, 4000))  # grows B's added set
    a.local.held_added(ids(0, 2000))  # shrinks B's removed set
    pump(a, b)
    assert kinds(a.sent) == ["Holding", "Holding"]
    assert len(a.sent[0].added) == MAX_IDS_PER_MESSAGE
    assert a.sent[0].added[:2000] == tuple(ids(0, 2000))
    assert all(b.exchange.peer_may_hold(x) for x in ids(0, 2000) + ids(100_000, 4000))


def test_wants_beyond_the_per_peer_cap_are_deferred() -> None:
    wanted = ids(0, 10)
    with mock.patch.object(wire.index, "MAX_WANTS_PER_PEER", 4):
        a, b = Side(wants=wanted), Side(held=wanted)
        connect(a, b)
        assert PeerWants(tuple(wanted[:4])) in b.events
        a.local.unwant(wanted[:2])
        pump(a, b)
        assert b.exchange.peer_wants_held() == tuple(wanted[2:6])


def test_limits() -> None:
    assert added_limit(0) == REFRESH_FLOOR and removed_limit(0) == REFRESH_FLOOR
    assert added_limit(50_000) == 50_000 and removed_limit(50_000) == 12_500
    assert added_limit(10**9) == MAX_INCREMENTS == removed_limit(10**9)
    assert MAX_WANTS_PER_PEER >= 65_536


# -- what it costs -------------------------------------------------------------------------------


def test_bytes_for_100000_held_containers() -> None:
    held = ids(0, 100_000)
    a, b = Side(held), Side()
    connect(a, b)
    naive = 32 * len(held)
    print(f"\nconnect: {a.sent_bytes:,} bytes for 100,000 held ids (naive list: {naive:,})")
    assert kinds(a.sent) == ["Summary"]
    assert a.sent_bytes < 121_000  # ~1.2 bytes per id
    assert a.sent_bytes * 26 < naive
    assert b.sent_bytes < 100  # B holds nothing: its Summary is a one-byte filter
    a.reset_counts()
    a.local.held_added(ids(500_000, 10))
    pump(a, b)
    print(f"10 additions: {a.sent_bytes} bytes")
    assert kinds(a.sent) == ["Holding"]
    assert a.sent_bytes < 10 * 34 + 30
    # And B can tell, without asking, what A may hold.
    assert all(b.exchange.peer_may_hold(x) for x in held[:1000] + ids(500_000, 10))
    strangers = ids(1_000_000, 5000)
    assert sum(b.exchange.peer_may_hold(x) for x in strangers) < 100  # ~1 %


# -- a peer breaking the rules -------------------------------------------------------------------


def test_index_messages_before_the_summary_are_violations() -> None:
    b = IndexExchange(LocalIndex())
    for message in (Holding((), ()), Wants((), ()), HaveContainer(bytes(32), True, (), (), ())):
        with pytest.raises(ProtocolError, match="before the peer's Summary"):
            b.receive(message)


def test_summary_versions_must_increase() -> None:
    a = LocalIndex(ids(0, 3))
    b = IndexExchange(LocalIndex())
    summary = a.summary()
    b.receive(summary)
    with pytest.raises(ProtocolError, match="does not follow"):
        b.receive(summary)


def test_too_many_increments_are_a_violation() -> None:
    b = IndexExchange(LocalIndex())
    b.receive(LocalIndex(ids(0, 10)).summary())
    for start in range(0, REFRESH_FLOOR, 512):
        b.receive(Holding(tuple(ids(100 + start, 512)), ()))
    with pytest.raises(ProtocolError, match="before a new Summary"):
        b.receive(Holding(tuple(ids(10_000, 1)), ()))


def test_too_many_wants_are_a_violation() -> None:
    with mock.patch.object(wire.index, "MAX_WANTS_PER_PEER", 5):
        b = IndexExchange(LocalIndex())
        b.receive(LocalIndex().summary())
        b.receive(Wants(tuple(ids(0, 5)), ()))
        with pytest.raises(ProtocolError, match="more than 5 wants"):
            b.receive(Wants(tuple(ids(5, 1)), ()))


def test_local_misuse() -> None:
    local = LocalIndex()
    exchange = IndexExchange(local)
    with pytest.raises(ValueError):
        local.held_added([b"short"])
    exchange.close()
    local.held_added(ids(0, 3))  # no longer reaches the closed exchange
    assert exchange.flush() == []
    with pytest.raises(LocalProtocolError):
        exchange.receive(local.summary())


def test_the_summary_is_built_once_per_version_and_shared() -> None:
    local = LocalIndex(ids(0, 1000))
    first, second = IndexExchange(local), IndexExchange(local)
    assert first.flush()[0] is second.flush()[0]
    local.held_added(ids(5000, 1))
    assert local.summary().version == 1 and local.summary().tweak == 1


# -- random histories ----------------------------------------------------------------------------

POOL = ids(0, 24)
operations = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["add", "remove", "want", "unwant", "flush"]),
        st.lists(st.sampled_from(POOL), max_size=6),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_random_histories_keep_both_views_exact(
    history: list[tuple[str, str, list[bytes]]],
) -> None:
    """After any history of changes on both sides (with a tiny refresh floor, so Summaries are
    refreshed often), once the sides are quiet: no false negatives, every want of one side
    that the other holds is known there, and confirmed by a HaveContainer."""
    with mock.patch.object(wire.index, "REFRESH_FLOOR", 3):
        sides = {"a": Side(POOL[:8], POOL[4:12]), "b": Side(POOL[6:14], POOL[:5])}
        a, b = sides["a"], sides["b"]
        connect(a, b)
        for who, what, items in history:
            local = sides[who].local
            if what == "add":
                local.held_added(items)
            elif what == "remove":
                local.held_removed(items)
            elif what == "want":
                local.want(items)
            elif what == "unwant":
                local.unwant(items)
            else:
                pump(a, b)
        pump(a, b)
        for me, peer in ((a, b), (b, a)):
            for item in peer.local.held_ids():
                assert me.exchange.peer_may_hold(item)
            for item in _both(me.local.wanted_ids(), peer.local.held_ids()):
                assert item in peer.exchange.peer_wants_held()
                assert any(
                    isinstance(event, PeerHolds) and event.container_id == item
                    for event in me.events
                )


def _both(first: tuple[bytes, ...], second: tuple[bytes, ...]) -> Iterator[bytes]:
    return (item for item in first if item in second)


def test_summary_message_round_trips_through_the_codec() -> None:
    summary = LocalIndex(ids(0, 50)).summary()
    decoded = decode(encode(summary))
    assert isinstance(decoded, Summary) and decoded == summary
    assert all(x in decoded.filter() for x in ids(0, 50))
