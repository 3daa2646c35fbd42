"""Per-connection state: when an unchoke counts as unused (the choker's idle slots)."""

from __future__ import annotations

from typing import cast

from node.peer import PeerConnection
from node.swarm.session import ALL_PIECES, IDLE_UNCHOKE_SECONDS, Session
from wire.index import IndexExchange
from wire.swarm import Request


def unchoked_at(when: float) -> Session:
    session = Session(
        peer=cast(PeerConnection, None), index=cast(IndexExchange, None), connected_at=0.0
    )
    session.am_choking = False
    session.last_unchoked = when
    return session


def test_an_unchoke_is_unused_once_the_peer_asked_nothing_for_the_idle_time() -> None:
    session = unchoked_at(10.0)
    assert not session.unchoke_unused(10.0 + IDLE_UNCHOKE_SECONDS - 0.01)
    assert session.unchoke_unused(10.0 + IDLE_UNCHOKE_SECONDS)
    at_zero = unchoked_at(0.0)  # a clock that starts at zero (the simulator's) counts too
    assert not at_zero.unchoke_unused(IDLE_UNCHOKE_SECONDS - 0.01)


def test_a_recent_request_or_one_still_queued_keeps_the_unchoke_in_use() -> None:
    session = unchoked_at(10.0)
    session.last_asked = 11.5
    assert not session.unchoke_unused(11.5 + IDLE_UNCHOKE_SECONDS - 0.01)
    assert session.unchoke_unused(11.5 + IDLE_UNCHOKE_SECONDS)
    session.uploads.append(Request(b"r" * 32, 0, 0))
    assert not session.unchoke_unused(100.0)


def test_a_choked_peer_holds_no_unchoke_to_be_unused() -> None:
    session = unchoked_at(0.0)
    session.am_choking = True
    assert not session.unchoke_unused(100.0)


def test_what_a_peer_holds_is_counted_per_file_and_in_total() -> None:
    session = unchoked_at(0.0)
    session.peer_holds(b"a", 10)  # a Bitfield of 10 pieces
    session.peer_holds(b"a", 3, added=True)  # a Have of 3 more
    session.peer_holds(b"b", 5)
    assert session.pieces_held == {b"a": 13, b"b": 5}
    assert session.pieces_held_total == 18
    session.peer_holds(b"a", 4)  # a newer Bitfield replaces what was said
    assert session.pieces_held_total == 9
    session.peer_holds(b"b", ALL_PIECES)  # HaveAll
    session.peer_holds(b"b", 1, added=True)  # never beyond "all"
    assert session.pieces_held[b"b"] == ALL_PIECES
    assert session.pieces_held_total == 4 + ALL_PIECES
    session.peer_holds(b"b", 0)  # HaveNone
    assert session.pieces_held_total == 4
