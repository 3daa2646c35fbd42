"""PEX choices: rounds spread over ticks, longest due first; a random sample per recipient."""

from __future__ import annotations

import random
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from node.peer import PeerConnection
from node.swarm.pex import PEX_ADDED_PER_MESSAGE, contacts_to_add, due_for_pex
from node.swarm.session import PEX_FIRST_SECONDS, PEX_PERIOD_SECONDS, Session
from wire.index import IndexExchange


def session(connected_at: float, last_pex: float | None = None) -> Session:
    made = Session(
        peer=cast(PeerConnection, None),
        index=cast(IndexExchange, None),
        connected_at=connected_at,
    )
    made.last_pex = last_pex
    return made


def test_a_thousand_connections_opened_at_once_get_their_first_round_twenty_a_tick() -> None:
    sessions = [session(0.0) for _ in range(1000)]
    now, ticks = PEX_FIRST_SECONDS, 0
    while any(s.last_pex is None for s in sessions):
        due = due_for_pex(sessions, now)
        assert len(due) <= 20
        for s in due:
            s.last_pex = now
        now += 1.0
        ticks += 1
    assert ticks == 50


def test_the_longest_due_go_first() -> None:
    late = session(0.0, last_pex=10.0)  # due at 70
    later = session(0.0, last_pex=30.0)  # due at 90
    fresh = session(95.0)  # due at 98
    waiting = [session(0.0, last_pex=40.0 + i) for i in range(30)]  # due at 100..129
    due = due_for_pex([*waiting, fresh, later, late], 200.0, limit=3)
    assert due == [late, later, fresh]
    assert due_for_pex([fresh], 97.0) == []
    assert late.next_pex_at() == 10.0 + PEX_PERIOD_SECONDS


def members(count: int) -> dict[bytes, str]:
    return {b"n%03d" % i: f"contact {i}" for i in range(count)}


def test_each_recipient_gets_its_own_sample_of_members_it_was_not_told_of() -> None:
    rng = random.Random(1)
    swarm = members(200)
    samples = [contacts_to_add(swarm, [], b"n%03d" % r, rng) for r in range(40)]
    assert all(len(sample) == PEX_ADDED_PER_MESSAGE == 10 for sample in samples)
    told_someone = {contact for sample in samples for contact in sample}
    assert len(told_someone) > 150  # the first 10 to everyone would be 10 (11 with recipients)
    told = [b"n%03d" % i for i in range(190)]
    assert contacts_to_add(swarm, told, b"n199", rng) == [f"contact {i}" for i in range(190, 199)]


@given(
    st.integers(0, 80),
    st.sets(st.integers(0, 79)),
    st.integers(0, 79),
    st.integers(1, 50),
    st.integers(0, 2**32),
)
def test_added_contacts_are_fresh_distinct_bounded_and_in_member_order(
    count: int, told: set[int], recipient: int, limit: int, seed: int
) -> None:
    swarm = members(count)
    told_ids = [b"n%03d" % i for i in told]
    added = contacts_to_add(swarm, told_ids, b"n%03d" % recipient, random.Random(seed), limit)
    fresh = [i for i in range(count) if i not in told and i != recipient]
    assert len(added) == min(limit, len(fresh))
    assert all(contact in {f"contact {i}" for i in fresh} for contact in added)
    order = [int(contact.split()[1]) for contact in added]
    assert order == sorted(set(order))
