"""Seeding a window of pieces at a time (`node.swarm.reveal`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.swarm.reveal import (
    MIN_WINDOW_PIECES,
    RATE_WINDOW_SECONDS,
    STALE_SECONDS,
    STALE_WINDOW_TIMES,
    PeerReveal,
    RevealedFile,
)
from wire.merkle import BLOCK_SIZE

PIECE = 4 * BLOCK_SIZE


def seeded(
    pieces: int, peers: int, piece_length: int = PIECE
) -> tuple[RevealedFile, list[PeerReveal]]:
    file = RevealedFile(piece_length, pieces * piece_length - 100)  # a short last piece
    reveals = [PeerReveal(file) for _ in range(peers)]
    file.peers = peers
    return file, reveals


def test_the_window_starts_at_two_pieces_whoever_else_is_there() -> None:
    """A crowd's first peer is not shown the whole file: it would ask for all of it, and
    the peers after it be shown the same pieces while they wait in its queue."""
    for peers in (1, 100):
        _, reveals = seeded(1000, peers)
        assert len(reveals[0].top_up(now=0.0)) == MIN_WINDOW_PIECES == 2
    _, (big_pieces,) = seeded(100, 1, piece_length=64 * BLOCK_SIZE)
    assert len(big_pieces.top_up(now=0.0)) == 2


def test_peers_are_shown_pieces_nobody_was_shown_before_any_twice() -> None:
    file, reveals = seeded(16, 8)  # a window of two pieces each
    shown = [reveal.top_up(now=0.0) for reveal in reveals]
    assert all(len(pieces) == 2 for pieces in shown)
    assert sorted(p for pieces in shown for p in pieces) == list(range(16))
    assert list(file.counts) == [1] * 16
    file.peers += 1
    late = PeerReveal(file).top_up(now=0.0)
    assert len(late) == 2 and list(file.counts).count(2) == 2


def test_a_consumed_piece_makes_room_and_pieces_the_peer_has_are_never_shown() -> None:
    _, (reveal,) = seeded(40, 1)
    reveal.peer_bitfield(bytes([0b1100_0000, 0, 0, 0, 0]))  # it has pieces 0 and 1
    rate = 16 * PIECE / RATE_WINDOW_SECONDS  # a window of 16 pieces
    first = reveal.top_up(now=0.0, upload_rate=rate)
    assert len(first) == 16 and not {0, 1} & set(first)
    assert reveal.top_up(now=0.1, upload_rate=rate) == []  # the window is full
    piece = first[0]
    consumed = [reveal.block_served(piece * 4 + block) for block in range(4)]
    assert consumed == [False, False, False, True]
    more = reveal.top_up(now=0.2, upload_rate=rate)
    assert len(more) == 1 and more[0] not in {0, 1, *first}


def test_the_last_short_piece_is_consumed_by_its_own_block_count() -> None:
    file, (reveal,) = seeded(3, 1)
    reveal.peer_bitfield(bytes([0b1100_0000]))
    assert reveal.top_up(now=0.0) == [2]
    assert file.blocks_in(2) == 4  # 64 KiB - 100 bytes still spans four blocks
    assert [reveal.block_served(8 + b) for b in range(4)][-1] is True
    assert reveal.done


def test_a_stale_window_is_topped_up_so_a_peer_never_waits_forever() -> None:
    _, (reveal,) = seeded(50, 1)
    first = reveal.top_up(now=0.0)
    assert reveal.top_up(now=STALE_SECONDS - 0.1) == []
    later = reveal.top_up(now=STALE_SECONDS + 0.1)
    assert len(later) == len(first) and not set(later) & set(first)


def test_a_window_sent_slowly_stays_live_for_twice_its_sending_time() -> None:
    """A seed spreading its slots sends each peer 16 KiB/s: a window of two 64 KiB pieces
    takes 8 s to go out, and its requests wait their turn meanwhile. Shown anew after a flat
    second, its pieces would go round to other peers before this one had them."""
    _, (slow,) = seeded(50, 1)
    rate = 16 * 1024
    first = slow.top_up(now=0.0, upload_rate=rate)
    live_for = STALE_WINDOW_TIMES * len(first) * PIECE / rate
    assert live_for == 16.0
    assert slow.top_up(now=live_for - 0.1, upload_rate=rate) == []
    assert len(slow.top_up(now=live_for + 0.1, upload_rate=rate)) == len(first)
    _, (new,) = seeded(50, 1)  # nothing sent yet: what a slot of ours gets says the same
    new.top_up(now=0.0, slot_rate=rate)
    assert new.top_up(now=live_for - 0.1, slot_rate=rate) == []
    assert new.top_up(now=live_for + 0.1, slot_rate=rate) != []
    _, (fast,) = seeded(50, 1)  # sent in well under a second: stale after STALE_SECONDS
    fast.top_up(now=0.0, upload_rate=1e6, slot_rate=rate)
    assert fast.top_up(now=STALE_SECONDS + 0.1, upload_rate=1e6, slot_rate=rate) != []


def test_a_fast_peer_is_shown_what_it_takes_in_a_fraction_of_a_second() -> None:
    """Two pieces would hold a 100 MB/s peer to one round trip of Haves per two pieces; the
    window grows to what we upload to it in `RATE_WINDOW_SECONDS` and a round trip."""
    _, (reveal,) = seeded(10_000, 1)
    rate = 100e6
    shown = reveal.top_up(now=0.0, upload_rate=rate)
    assert len(shown) == int(rate * RATE_WINDOW_SECONDS) // PIECE
    _, (far,) = seeded(10_000, 1)
    shown = far.top_up(now=0.0, upload_rate=rate, round_trip=0.25)
    assert len(shown) == int(rate * (RATE_WINDOW_SECONDS + 0.25)) // PIECE
    _, (slow,) = seeded(10_000, 1)
    assert len(slow.top_up(now=0.0, upload_rate=100e3)) == 2


def test_a_run_of_blocks_consumes_a_piece_at_once() -> None:
    _, (reveal,) = seeded(40, 1)
    first = reveal.top_up(now=0.0)
    assert reveal.run_served(first[0] * 4, 2) is False
    assert reveal.run_served(first[0] * 4 + 2, 2) is True
    assert reveal.run_served(first[1] * 4, 4) is True
    assert len(reveal.top_up(now=0.1)) == 2


def test_pieces_never_uploaded_come_before_pieces_only_shown_less() -> None:
    """Shows to peers that never ask (choked, or fetching elsewhere) do not hold a piece back:
    what the seed has not uploaded yet is shown first, so its first copy goes out whole
    before any piece goes twice."""
    file, reveals = seeded(6, 8)  # a window of two pieces each
    first, second, third, fourth = reveals[:4]
    assert sorted(first.top_up(now=0.0)) == [0, 1]
    assert sorted(second.top_up(now=0.0)) == [2, 3]
    assert first.run_served(0, 4) and first.run_served(4, 4)  # 0 and 1 went out
    assert sorted(third.top_up(now=0.0)) == [4, 5]  # shown never
    # 2 and 3 were shown (to a peer that never asked) but never uploaded: before 0 and 1,
    # which were shown as often and uploaded.
    assert sorted(fourth.top_up(now=0.0)) == [2, 3]
    assert list(file.uploads) == [1, 1, 0, 0, 0, 0]


def test_uploads_count_before_shows() -> None:
    """A piece shown twice and never uploaded comes before one shown once and uploaded."""
    file, reveals = seeded(4, 8)  # a window of two pieces each
    assert sorted(reveals[0].top_up(now=0.0)) == [0, 1]
    assert reveals[0].run_served(0, 4) and reveals[0].run_served(4, 4)
    assert sorted(reveals[1].top_up(now=0.0)) == [2, 3]
    assert sorted(reveals[2].top_up(now=0.0)) == [2, 3]
    assert [(file.uploads[p], file.counts[p]) for p in range(4)] == [(1, 1)] * 2 + [(0, 2)] * 2
    assert sorted(reveals[3].top_up(now=0.0)) == [2, 3]


@given(
    steps=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["show", "serve", "has"])), max_size=40
    )
)
def test_each_top_up_shows_the_least_uploaded_then_least_shown(
    steps: list[tuple[int, str]],
) -> None:
    """Whatever the history, a top-up picks pieces the peer lacks and was not shown, and none
    left out has fewer uploads, or as many and fewer shows, than one picked."""
    file, reveals = seeded(12, 6)
    for who, action in steps:
        reveal = reveals[who]
        if action == "serve" and reveal.pending:
            piece = next(iter(reveal.pending))
            reveal.run_served(piece * 4, 4)
        elif action == "has":
            reveal.peer_has((who * 5) % file.piece_count)
        else:
            eligible = [
                p for p in range(file.piece_count) if not reveal.has[p] and p not in reveal.pending
            ]
            keys = {p: (file.uploads[p], file.counts[p]) for p in eligible}
            picked = reveal.top_up(now=0.0)
            assert set(picked) <= set(eligible)
            if picked:
                worst = max(keys[p] for p in picked)
                assert all(keys[p] >= worst for p in eligible if p not in picked) or len(
                    picked
                ) == len(eligible)


def test_the_search_among_equals_begins_where_the_caller_says() -> None:
    """The engine draws where each top-up begins, so two seeds of a file do not walk
    through it in step, showing a peer the same pieces."""
    _, (one,) = seeded(100, 1)
    _, (other,) = seeded(100, 1)
    assert one.top_up(now=0.0, from_piece=37) == [37, 38]
    assert other.top_up(now=0.0, from_piece=237) == [37, 38]  # modulo the piece count
    assert one.top_up(now=STALE_SECONDS + 1, from_piece=99) == [99, 0]


def test_a_piece_shown_long_ago_and_never_taken_is_shown_again() -> None:
    """Our Have may have been of no use to the peer (it arrived before the peer had the
    file's metadata, with no room to keep it): shown once and never again, the piece would
    never be asked for. Shown again once the peer has been busy with the file since (so it
    has the metadata); not again and again to a peer that may still lack it."""
    _, (reveal,) = seeded(4, 1)
    reveal.peer_bitfield(bytes([0b0110_0000]))  # it has pieces 1 and 2
    assert reveal.top_up(now=0.0) == [0, 3]
    assert reveal.top_up(now=STALE_SECONDS + 0.1) == []  # no sign it has the metadata
    assert reveal.run_served(3 * 4, 4) is True  # it fetched piece 3 from us
    assert reveal.top_up(now=STALE_SECONDS + 0.2) == [0]
    assert reveal.top_up(now=STALE_SECONDS + 0.3) == []
