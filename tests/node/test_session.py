"""Per-connection state: when an unchoke counts as unused (the choker's idle slots), what a
peer holds (and of what we seed it), and availability kept while we fetch a container's
metadata."""

from __future__ import annotations

from typing import cast

from node.peer import PeerConnection
from node.swarm.reveal import PeerReveal, RevealedFile
from node.swarm.session import (
    ALL_PIECES,
    EARLY_PIECES,
    EARLY_ROOTS,
    IDLE_UNCHOKE_SECONDS,
    SILENT_SECONDS,
    Session,
)
from wire.index import IndexExchange
from wire.swarm import Bitfield, Have, HaveAll, Request


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


def test_a_peer_is_silent_once_it_told_us_nothing_of_what_it_holds_for_a_while() -> None:
    session = unchoked_at(0.0)
    session.connected_at = 5.0
    assert not session.silent(5.0 + SILENT_SECONDS)  # a newcomer has had no time to tell
    assert session.silent(5.0 + SILENT_SECONDS + 0.01)
    session.last_told = 9.0  # a Have, a Bitfield or a HaveAll
    assert not session.silent(9.0 + SILENT_SECONDS)
    assert session.silent(9.0 + SILENT_SECONDS + 0.01)


def test_seed_progress_is_the_share_held_of_every_file_we_seed_the_peer() -> None:
    session = unchoked_at(0.0)
    assert session.seed_progress() is None  # we seed it nothing
    small, large = RevealedFile(16384, 4 * 16384), RevealedFile(16384, 12 * 16384)
    session.reveals[b"s"], session.reveals[b"l"] = PeerReveal(small), PeerReveal(large)
    assert session.seed_progress() == 0.0
    session.reveals[b"s"].peer_bitfield(bytes([0b1111_0000]))  # all 4 of the small file
    session.reveals[b"l"].peer_has(0)
    assert session.seed_progress() == 5 / 16


def test_haves_before_the_metadata_are_kept_in_order_until_taken() -> None:
    session = unchoked_at(0.0)
    first, second = Have(b"a" * 32, 16384, (3,)), Have(b"a" * 32, 16384, (7, 9))
    session.keep_early(first)
    session.keep_early(second)
    session.keep_early(Have(b"b" * 32, 16384, (1,)))
    assert session.early_pieces == 4
    assert session.take_early(b"a" * 32) == [first, second]
    assert session.take_early(b"a" * 32) == []
    assert session.early_pieces == 1


def test_a_bitfield_or_have_all_replaces_what_was_kept_of_the_file() -> None:
    session = unchoked_at(0.0)
    session.keep_early(Have(b"a" * 32, 16384, (3, 4)))
    bitfield = Bitfield(b"a" * 32, 16384, b"\xff")
    session.keep_early(bitfield)
    assert session.early_pieces == 0
    later = Have(b"a" * 32, 16384, (9,))
    session.keep_early(later)
    session.keep_early(HaveAll(b"a" * 32))
    assert session.take_early(b"a" * 32) == [HaveAll(b"a" * 32)]
    assert session.early_pieces == 0


def test_what_is_kept_before_the_metadata_is_bounded() -> None:
    session = unchoked_at(0.0)
    kept = [session.keep_early(HaveAll(n.to_bytes(32, "big"))) for n in range(EARLY_ROOTS + 5)]
    assert kept == [True] * EARLY_ROOTS + [False] * 5  # files beyond the bound are not kept
    assert len(session.early) == EARLY_ROOTS
    crowded = unchoked_at(0.0)
    pieces = tuple(range(4096))
    for _ in range(EARLY_PIECES // 4096):
        crowded.keep_early(Have(b"a" * 32, 16384, pieces))
    assert not crowded.keep_early(Have(b"a" * 32, 16384, (5000,)))  # one beyond the bound
    assert crowded.early_pieces == EARLY_PIECES
    assert len(crowded.take_early(b"a" * 32)) == EARLY_PIECES // 4096
