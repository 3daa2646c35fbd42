"""The piece picker: rarest first, partial pieces first, priorities, endgame, hash failures.

Cases are built from short strings, one character per piece (libtorrent's `setup_picker` idea):
`availability="3121"` means pieces 0-3 are held by 3, 1, 2 and 1 connected peers, counting the
peer `X` we pick for; `have` says which pieces X has (default: every available one); `held`
marks pieces we verified already. A hypothesis state machine then drives random sequences of
events against a brute-force model.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from node.picker import (
    BlockOutcome,
    BlockRequest,
    BlockStatus,
    PickerError,
    PiecePicker,
    piece_layout,
)

ROOT = b"\x01" * 32
OTHER = b"\x02" * 32
X = b"X"
OTHERS = [b"P%d" % i for i in range(1, 10)]


def pack(flags: str) -> bytes:
    """'1011' -> a BitTorrent bitfield (piece 0 is the high bit of byte 0)."""
    out = bytearray(-(-len(flags) // 8))
    for i, flag in enumerate(flags):
        if flag == "1":
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def setup_picker(
    availability: str,
    *,
    have: str | None = None,
    held: str = "",
    blocks: int = 1,
    priority: int = 4,
    root: bytes = ROOT,
    picker: PiecePicker | None = None,
    random_first: int = 0,
    sparse: int = 0,
    walk_budget: int = 1024,
) -> PiecePicker:
    if have is None:
        have = "".join("1" if digit != "0" else "0" for digit in availability)
    if picker is None:
        picker = PiecePicker(
            random_first_pieces=random_first, sparse_peer_pieces=sparse, walk_budget=walk_budget
        )
    picker.add_file(
        root,
        len(availability),
        blocks,
        priority,
        have=pack(held.ljust(len(availability), "0")),
    )
    for piece, digit in enumerate(availability):
        x_has = have[piece] == "1"
        others = int(digit) - x_has
        assert others >= 0, "X has a piece nobody has"
        if x_has:
            picker.peer_has(X, root, piece)
        for peer in OTHERS[:others]:
            picker.peer_has(peer, root, piece)
    picker.check_invariants()
    return picker


def pieces(requests: list[BlockRequest]) -> list[int]:
    return list(dict.fromkeys(r.piece for r in requests))


def pick(picker: PiecePicker, count: int = 1, peer: bytes = X, seed: int = 0) -> list[BlockRequest]:
    return picker.pick(peer, count, 0.0, random.Random(seed))


def request_all(picker: PiecePicker, peer: bytes, requests: list[BlockRequest]) -> None:
    for request in requests:
        picker.mark_requested(peer, request, 0.0)


# ------------------------------------------------------------------ rarest first


@pytest.mark.parametrize(
    ("sparse", "walk_budget"),
    [(0, 1024), (0, 0), (256, 1024)],
    ids=["bucket-walk", "bitsets", "sparse-list"],
)
@pytest.mark.parametrize(
    ("availability", "have", "order"),
    [
        ("3212", None, [2, 1, 3, 0]),
        ("4132", None, [1, 3, 2, 0]),
        ("1999", "0111", [1, 2, 3]),  # the rarest piece is X's only if X has it
        ("2020", None, [0, 2]),  # unavailable pieces are never picked
    ],
)
def test_rarest_first(
    availability: str, have: str | None, order: list[int], sparse: int, walk_budget: int
) -> None:
    picker = setup_picker(availability, have=have, sparse=sparse, walk_budget=walk_budget)
    got = pieces(pick(picker, count=len(availability)))
    # Equal availabilities come in random order: compare the availability sequence.
    assert [availability[p] for p in got] == [availability[p] for p in order]
    assert sorted(got) == sorted(order)


@pytest.mark.parametrize("walk_budget", [1024, 0], ids=["bucket-walk", "bitsets"])
def test_ties_are_broken_at_random(walk_budget: int) -> None:
    picker = setup_picker("21112", walk_budget=walk_budget)
    firsts = {pick(picker, seed=seed)[0].piece for seed in range(60)}
    assert firsts == {1, 2, 3}


def test_pick_is_deterministic_for_a_seed() -> None:
    picker = setup_picker("3111211", blocks=3)
    assert pick(picker, 6, seed=7) == pick(picker, 6, seed=7)


def test_random_first_pieces_ignores_rarity_until_enough_are_held() -> None:
    picker = setup_picker("1999999999"[:9], random_first=2)
    firsts = {pick(picker, seed=seed)[0].piece for seed in range(40)}
    assert len(firsts) > 3  # not always the rarest piece 0
    for piece in (5, 6):
        picker.piece_verified(ROOT, piece)
    assert {pick(picker, seed=seed)[0].piece for seed in range(20)} == {0}


def test_held_pieces_are_never_picked() -> None:
    picker = setup_picker("1122", held="1010")
    assert pieces(pick(picker, count=4)) == [1, 3]
    assert picker.completed_pieces(ROOT) == 2


@pytest.mark.parametrize("held", ["1010", "0000000001", "111111111", "1" * 16])
def test_held_bits_is_the_bitfield_of_verified_pieces(held: str) -> None:
    picker = setup_picker("1" * len(held), held=held)
    assert picker.held_bits(ROOT) == pack(held)


def test_peer_has_piece_follows_haves_bitfields_and_seeds() -> None:
    picker = setup_picker("1100", have="1000")
    assert picker.peer_has_piece(X, ROOT, 0) and not picker.peer_has_piece(X, ROOT, 1)
    picker.peer_has(X, ROOT, 2)
    assert picker.peer_has_piece(X, ROOT, 2)
    assert not picker.peer_has_piece(b"stranger", ROOT, 0)
    picker.peer_has_all(b"seed", ROOT)
    assert all(picker.peer_has_piece(b"seed", ROOT, piece) for piece in range(4))
    picker.peer_left(X)
    assert not picker.peer_has_piece(X, ROOT, 0)


# ---------------------------------------------------------------- partial pieces


def test_partial_pieces_come_before_rarer_ones() -> None:
    picker = setup_picker("1333", blocks=3)
    picker.mark_requested(OTHERS[0], BlockRequest(ROOT, 2, 0), 0.0)
    got = pick(picker, count=4)
    assert [(r.piece, r.block) for r in got] == [(2, 1), (2, 2), (0, 0), (0, 1)]


def test_partial_pieces_are_ranked_by_priority_then_rarity() -> None:
    picker = setup_picker("3322", blocks=2, priority=2)
    setup_picker("33", blocks=2, priority=6, root=OTHER, picker=picker)
    for root, piece in ((ROOT, 0), (ROOT, 3), (OTHER, 1), (ROOT, 2)):
        picker.mark_requested(OTHERS[0], BlockRequest(root, piece, 0), 0.0)
    got = pick(picker, count=4)
    assert [(r.root, r.piece) for r in got] == [(OTHER, 1), (ROOT, 3), (ROOT, 2), (ROOT, 0)]


def test_a_started_piece_is_not_started_twice() -> None:
    picker = setup_picker("12", blocks=2)
    first = pick(picker, count=2)
    request_all(picker, X, first)
    assert pieces(first) == [0]
    assert pieces(pick(picker, count=2)) == [1]
    assert picker.partial_pieces() == [(ROOT, 0)]


# -------------------------------------------------------------------- priorities


def test_priority_beats_rarity_and_zero_is_never_picked() -> None:
    picker = setup_picker("1", priority=1)
    setup_picker("33", priority=7, root=OTHER, picker=picker)
    assert [r.root for r in pick(picker, count=3)] == [OTHER, OTHER, ROOT]
    picker.set_priority(OTHER, 0)
    assert [r.root for r in pick(picker, count=3)] == [ROOT]
    picker.set_priority(ROOT, 0)
    assert pick(picker, count=3) == []
    assert picker.remaining_blocks() == 0
    picker.check_invariants()
    picker.set_priority(ROOT, 2)
    assert [r.root for r in pick(picker, count=3)] == [ROOT]
    picker.check_invariants()


def test_partial_pieces_of_a_skipped_file_are_not_picked() -> None:
    picker = setup_picker("22", blocks=2)
    picker.mark_requested(OTHERS[0], BlockRequest(ROOT, 0, 0), 0.0)
    picker.set_priority(ROOT, 0)
    assert pick(picker, count=4) == []
    assert picker.block_received(OTHERS[0], BlockRequest(ROOT, 0, 0)).status is BlockStatus.ACCEPTED


# ----------------------------------------------------------------------- endgame


def test_endgame_duplicates_then_cancels_on_arrival() -> None:
    picker = setup_picker("3", blocks=2)
    slow, third = OTHERS[0], OTHERS[1]
    request_all(picker, slow, pick(picker, count=2, peer=slow))
    assert picker.in_endgame()
    duplicates = pick(picker, count=5)
    assert [(r.piece, r.block) for r in duplicates] == [(0, 0), (0, 1)]
    request_all(picker, X, duplicates)
    assert pick(picker, count=5, peer=third) == []  # two requests per block at most
    with pytest.raises(PickerError):
        picker.mark_requested(third, duplicates[0], 0.0)

    outcome = picker.block_received(X, duplicates[0])
    assert outcome == BlockOutcome(BlockStatus.ACCEPTED, (slow,), requested=True)
    assert picker.outstanding(slow) == [duplicates[1]]
    late = picker.block_received(slow, duplicates[0])
    assert late.status is BlockStatus.DUPLICATE
    done = picker.block_received(slow, duplicates[1])
    assert done.cancel == (X,) and done.piece_complete
    picker.piece_verified(ROOT, 0)
    assert picker.is_complete(ROOT) and not picker.in_endgame()
    picker.check_invariants()


def test_endgame_duplicates_the_longest_waiting_block_first() -> None:
    picker = setup_picker("3", blocks=3)
    slow = OTHERS[0]
    for block, when in ((0, 5.0), (1, 1.0), (2, 3.0)):
        picker.mark_requested(slow, BlockRequest(ROOT, 0, block), when)
    got = picker.pick(X, 3, 10.0, random.Random(0))
    assert [r.block for r in got] == [1, 2, 0]


def test_endgame_waits_while_many_blocks_are_awaited_unless_one_is_late() -> None:
    """Doubling every request in flight the moment endgame begins sends most data twice:
    only once few blocks are awaited, or for a block awaited too long."""
    picker = setup_picker("3", blocks=6)  # one piece of six blocks, all asked of a slow peer
    slow = OTHERS[0]
    for block in range(6):
        picker.mark_requested(slow, BlockRequest(ROOT, 0, block), 0.0)
    assert picker.in_endgame() and picker.endgame_outstanding == 3
    assert picker.pick(X, 6, 1.0, random.Random(0)) == []  # six awaited, none for long
    late = picker.pick(X, 6, picker.endgame_patience_s, random.Random(0))
    assert len(late) == 6  # all awaited that long: the slow peer holds up the end
    for block in range(3):  # three of them arrive: few left, no patience needed
        picker.block_received(slow, BlockRequest(ROOT, 0, block))
    assert [r.block for r in picker.pick(X, 6, 1.0, random.Random(0))] == [3, 4, 5]
    picker.check_invariants()


def test_early_on_few_blocks_in_flight_are_not_doubled_at_once() -> None:
    """Every block peers can send is requested, and few are awaited, but pieces nobody has
    yet are missing too: that is a start starved of pieces, not the end. A block is asked of
    a second peer only once it is late (a flash crowd's first seconds doubled 7 % of their
    blocks when few awaited meant the end)."""
    picker = setup_picker("2000", blocks=1)  # X and another have piece 0; 1-3: nobody yet
    other = OTHERS[0]
    picker.mark_requested(other, BlockRequest(ROOT, 0, 0), 0.0)
    assert picker.in_endgame()  # nothing else any peer could send
    assert picker.pick(X, 4, 1.0, random.Random(0)) == []
    late = picker.pick(X, 4, picker.endgame_patience_s, random.Random(0))
    assert [(r.piece, r.block) for r in late] == [(0, 0)]
    picker.check_invariants()


@pytest.mark.parametrize(
    "settings",
    [
        {"max_requests_per_block": 0},
        {"endgame_outstanding": -1},
        {"endgame_patience_s": -1.0},
        {"random_first_pieces": -1},
    ],
)
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(PickerError):
        PiecePicker(**settings)  # type: ignore[arg-type]


def test_no_endgame_while_free_blocks_remain_elsewhere() -> None:
    picker = setup_picker("21", have="10", blocks=1)
    request_all(picker, OTHERS[0], [BlockRequest(ROOT, 0, 0)])
    assert not picker.in_endgame()
    assert pick(picker, count=2) == []  # X only has piece 0, already in flight


def test_requestable_blocks_count_what_peers_have_and_no_request_covers() -> None:
    """The engine asks slow peers for less once this runs low (`node.swarm.pipeline`)."""
    picker = setup_picker("2201", held="0001", blocks=2)  # piece 2: nobody has it
    assert picker.requestable_blocks == 4  # pieces 0 and 1, two blocks each
    request_all(picker, OTHERS[0], [BlockRequest(ROOT, 0, 0)])
    assert picker.requestable_blocks == 3
    picker.peer_has(OTHERS[1], ROOT, 2)
    assert picker.requestable_blocks == 5
    request_all(picker, X, [BlockRequest(ROOT, 0, 0)])  # an endgame duplicate: no change
    assert picker.requestable_blocks == 5
    picker.set_priority(ROOT, 0)
    assert picker.requestable_blocks == 0  # nothing wanted
    picker.check_invariants()


def test_fresh_blocks_then_duplicates_in_one_pick() -> None:
    picker = setup_picker("22", blocks=1)
    request_all(picker, OTHERS[0], [BlockRequest(ROOT, 0, 0)])
    got = pick(picker, count=2)
    assert [(r.piece, r.block) for r in got] == [(1, 0), (0, 0)]


# ------------------------------------------------------------ failures and leaves


def test_hash_failure_returns_blocks_and_names_senders() -> None:
    picker = setup_picker("3", blocks=3)
    a, b = OTHERS[0], OTHERS[1]
    for peer, block in ((a, 0), (b, 1), (a, 2)):
        picker.mark_requested(peer, BlockRequest(ROOT, 0, block), 0.0)
        outcome = picker.block_received(peer, BlockRequest(ROOT, 0, block))
    assert outcome.piece_complete
    assert picker.remaining_blocks(ROOT) == 0
    assert picker.piece_failed(ROOT, 0) == [a, b]
    assert picker.remaining_blocks(ROOT) == 3
    assert [(r.piece, r.block) for r in pick(picker, count=3)] == [(0, 0), (0, 1), (0, 2)]
    picker.check_invariants()


def test_failed_and_timed_out_requests_come_back_and_late_blocks_count() -> None:
    picker = setup_picker("2", blocks=2)
    peer = OTHERS[0]
    request_all(picker, peer, pick(picker, count=2, peer=peer))
    assert picker.request_failed(peer, BlockRequest(ROOT, 0, 0))
    assert not picker.request_failed(peer, BlockRequest(ROOT, 0, 0))
    assert picker.request_timed_out(peer, BlockRequest(ROOT, 0, 1))
    assert picker.partial_pieces() == []  # no progress left: back in the buckets
    assert len(pick(picker, count=2)) == 2
    late = picker.block_received(peer, BlockRequest(ROOT, 0, 1))
    assert late.status is BlockStatus.ACCEPTED and not late.requested
    assert [r.block for r in pick(picker, count=2)] == [0]
    picker.check_invariants()


def test_peer_left_releases_requests_and_availability() -> None:
    picker = setup_picker("21", blocks=2)
    request_all(picker, X, pick(picker, count=4))
    released = picker.peer_left(X)
    assert len(released) == 4
    assert [picker.availability(ROOT, p) for p in (0, 1)] == [1, 0]
    assert picker.partial_pieces() == []
    assert picker.bucket_counts() == [1, 0, 1]
    picker.check_invariants()


def test_blocks_for_unknown_or_held_pieces_are_not_wanted() -> None:
    picker = setup_picker("1", held="1")
    assert picker.block_received(X, BlockRequest(ROOT, 0, 0)).status is BlockStatus.NOT_WANTED
    assert picker.block_received(X, BlockRequest(OTHER, 0, 0)).status is BlockStatus.NOT_WANTED
    assert picker.block_received(X, BlockRequest(ROOT, 5, 0)).status is BlockStatus.NOT_WANTED


# ----------------------------------------------------------------- availability


def test_bucket_counts_follow_availability() -> None:
    picker = setup_picker("3110")
    # rank = 2 x availability (no seeds here)
    assert picker.bucket_counts() == [1, 0, 2, 0, 0, 0, 1]
    picker.peer_has(b"new", ROOT, 3)
    assert picker.bucket_counts() == [0, 0, 3, 0, 0, 0, 1]
    picker.peer_left(OTHERS[0])
    assert picker.bucket_counts() == [0, 0, 3, 0, 1]


def test_seeds_are_counted_once_per_file() -> None:
    picker = setup_picker("0000000001", blocks=1)  # piece 9 has 1 peer
    picker.peer_bitfield(b"full", ROOT, pack("1" * 10))
    picker.peer_has_all(b"seed", ROOT)
    assert [picker.availability(ROOT, p) for p in (0, 9)] == [2, 3]
    # rank = 2 x announced + (1 if seeded): pieces 0-8 only seeds have, piece 9 also X.
    assert picker.bucket_counts() == [0, 9, 0, 1]
    for piece in range(10):
        picker.peer_has(b"grows", ROOT, piece)  # completes: becomes a seed
    assert picker.availability(ROOT, 0) == 3
    assert picker.bucket_counts() == [0, 9, 0, 1]
    picker.check_invariants()
    for peer in (b"full", b"seed", b"grows"):
        picker.peer_left(peer)
    assert picker.bucket_counts() == [9, 0, 1]
    picker.check_invariants()


def test_a_seed_is_picked_from_the_rarest_first() -> None:
    picker = setup_picker("2211", have="0000")
    picker.peer_has_all(b"seed", ROOT)
    assert sorted(pieces(pick(picker, count=2, peer=b"seed"))) == [2, 3]


def test_bitfield_replaces_what_the_peer_said() -> None:
    picker = setup_picker("0000")
    picker.peer_bitfield(b"p", ROOT, pack("1100"))
    picker.peer_bitfield(b"p", ROOT, pack("0110"))
    assert [picker.availability(ROOT, p) for p in range(4)] == [0, 1, 1, 0]
    with pytest.raises(PickerError):
        picker.peer_bitfield(b"p", ROOT, b"\x0f")  # spare bits set
    picker.check_invariants()


def test_announcements_for_unknown_files_are_ignored() -> None:
    picker = PiecePicker()
    picker.peer_has(X, ROOT, 3)
    picker.peer_has_all(X, ROOT)
    assert pick(picker) == []


# ------------------------------------------------------------------------- files


def test_piece_layout_and_short_last_piece() -> None:
    count, per_piece, last = piece_layout(5 * 65536 + 100, 65536)
    assert (count, per_piece, last) == (6, 4, 1)
    picker = PiecePicker(random_first_pieces=0)
    picker.add_file(ROOT, count, per_piece, last_piece_blocks=last)
    picker.peer_has_all(X, ROOT)
    assert picker.remaining_blocks(ROOT) == 5 * 4 + 1
    got = pick(picker, count=100)
    assert len(got) == 21 and len(set(got)) == 21
    assert [r.block for r in got if r.piece == 5] == [0]


def test_block_counts_from_a_function() -> None:
    picker = PiecePicker()
    picker.add_file(ROOT, 3, lambda piece: piece + 1)
    assert picker.remaining_blocks(ROOT) == 6


def test_large_files_move_between_levels_in_bulk() -> None:
    rng = random.Random(5)
    picker = setup_picker("".join(rng.choice("0123") for _ in range(300)))
    setup_picker("".join(rng.choice("0123") for _ in range(100)), root=OTHER, picker=picker)
    request_all(picker, X, pick(picker, count=5))
    for priority in (7, 0, 4, 1):
        picker.set_priority(ROOT, priority)
        picker.check_invariants()
    assert pick(picker, count=1)[0].root == OTHER
    picker.remove_file(OTHER)
    picker.check_invariants()
    assert pick(picker, count=1)[0].root == ROOT


def test_remove_file_returns_requests_to_cancel() -> None:
    picker = setup_picker("22", blocks=2)
    setup_picker("3", root=OTHER, picker=picker)
    request_all(picker, X, pick(picker, count=2))
    cancels = picker.remove_file(ROOT)
    assert sorted((peer, r.block) for peer, r in cancels) == [(X, 0), (X, 1)]
    assert picker.outstanding(X) == []
    assert [r.root for r in pick(picker, count=4)] == [OTHER]
    picker.check_invariants()
    setup_picker("3", root=ROOT, picker=picker)  # the slot is reused cleanly
    picker.check_invariants()


# -------------------------------------------------------------- state machine

PEERS = [b"A", b"B", b"C", b"D"]


class PickerMachine(RuleBasedStateMachine):
    """Random events against a brute-force model of what the picker must know."""

    @initialize(
        layouts=st.lists(
            st.tuples(st.integers(1, 9), st.integers(1, 3), st.integers(1, 3), st.integers(0, 7)),
            min_size=1,
            max_size=3,
        ),
        sparse=st.sampled_from([0, 3, 256]),
        max_requests=st.integers(1, 3),
        random_first=st.sampled_from([0, 2]),
        walk_budget=st.sampled_from([0, 2, 1024]),
        seed=st.integers(0, 2**32 - 1),
    )
    def setup(
        self,
        layouts: list[tuple[int, int, int, int]],
        sparse: int,
        max_requests: int,
        random_first: int,
        walk_budget: int,
        seed: int,
    ) -> None:
        self.picker = PiecePicker(
            max_requests_per_block=max_requests,
            random_first_pieces=random_first,
            sparse_peer_pieces=sparse,
            walk_budget=walk_budget,
            seed=seed,
        )
        self.rng = random.Random(seed)
        self.now = 0.0
        self.blocks: dict[bytes, list[int]] = {}
        self.priority: dict[bytes, int] = {}
        for i, (count, full, last, priority) in enumerate(layouts):
            root = bytes([i + 1]) * 32
            last = min(last, full)
            self.picker.add_file(root, count, full, priority, last_piece_blocks=last)
            self.blocks[root] = [full] * (count - 1) + [last]
            self.priority[root] = priority
        self.roots = list(self.blocks)
        self.has: dict[bytes, dict[bytes, set[int]]] = {p: {} for p in PEERS}
        self.held: set[tuple[bytes, int]] = set()
        self.received: dict[tuple[bytes, int, int], bytes] = {}
        self.requests: dict[tuple[bytes, int, int], dict[bytes, None]] = {}
        for peer in PEERS[:3]:  # start with some of the swarm known
            for root, counts in self.blocks.items():
                flags = "".join(self.rng.choice("0001") for _ in counts)
                self.picker.peer_bitfield(peer, root, pack(flags))
                self.has[peer][root] = {i for i, flag in enumerate(flags) if flag == "1"}

    # --- model helpers

    def peer_has(self, peer: bytes, root: bytes, piece: int) -> bool:
        return piece in self.has[peer].get(root, set())

    def is_seed(self, peer: bytes, root: bytes) -> bool:
        return len(self.has[peer].get(root, set())) == len(self.blocks[root])

    def availability(self, root: bytes, piece: int) -> int:
        return sum(self.peer_has(p, root, piece) for p in PEERS)

    def rank(self, root: bytes, piece: int) -> int:
        seeds = [p for p in PEERS if self.is_seed(p, root)]
        others = sum(self.peer_has(p, root, piece) for p in PEERS if p not in seeds)
        return 2 * others + (1 if seeds else 0)

    def started(self, root: bytes, piece: int) -> bool:
        return any(
            (root, piece, b) in self.received or self.requests.get((root, piece, b))
            for b in range(self.blocks[root][piece])
        )

    def free_blocks(self) -> set[tuple[bytes, int, int]]:
        """Wanted blocks some peer has, neither requested nor received."""
        out = set()
        for root, counts in self.blocks.items():
            if not self.priority[root]:
                continue
            for piece, count in enumerate(counts):
                if (root, piece) in self.held or not self.availability(root, piece):
                    continue
                for block in range(count):
                    key = (root, piece, block)
                    if key not in self.received and not self.requests.get(key):
                        out.add(key)
        return out

    def outstanding(self) -> list[tuple[bytes, tuple[bytes, int, int]]]:
        return [(peer, key) for key, peers in self.requests.items() for peer in peers]

    # --- rules

    @rule(peer=st.sampled_from(PEERS), which=st.integers(0, 2), piece=st.integers(0, 8))
    def have(self, peer: bytes, which: int, piece: int) -> None:
        root = self.roots[which % len(self.roots)]
        piece %= len(self.blocks[root])
        self.picker.peer_has(peer, root, piece)
        self.has[peer].setdefault(root, set()).add(piece)

    @rule(peer=st.sampled_from(PEERS), which=st.integers(0, 2))
    def have_all(self, peer: bytes, which: int) -> None:
        root = self.roots[which % len(self.roots)]
        self.picker.peer_has_all(peer, root)
        self.has[peer][root] = set(range(len(self.blocks[root])))

    @rule(peer=st.sampled_from(PEERS), which=st.integers(0, 2), data=st.data())
    def bitfield(self, peer: bytes, which: int, data: st.DataObject) -> None:
        root = self.roots[which % len(self.roots)]
        count = len(self.blocks[root])
        flags = data.draw(st.lists(st.booleans(), min_size=count, max_size=count))
        new = {i for i, flag in enumerate(flags) if flag}
        self.picker.peer_bitfield(peer, root, pack("".join("01"[f] for f in flags)))
        self.has[peer][root] = new

    @rule(peer=st.sampled_from(PEERS))
    def left(self, peer: bytes) -> None:
        released = self.picker.peer_left(peer)
        expected = [key for p, key in self.outstanding() if p == peer]
        assert sorted((r.root, r.piece, r.block) for r in released) == sorted(expected)
        for key in expected:
            del self.requests[key][peer]
        self.has[peer] = {}

    @rule(peer=st.sampled_from(PEERS), count=st.integers(1, 6))
    def pick_and_request(self, peer: bytes, count: int) -> None:
        free_before = self.free_blocks()
        held_before = len(self.held)
        got = self.picker.pick(peer, count, self.now, self.rng)
        keys = [(r.root, r.piece, r.block) for r in got]
        assert len(set(keys)) == len(keys) <= count
        fresh = [k for k in keys if k in free_before]
        duplicates = [k for k in keys if k not in free_before]
        assert keys[: len(fresh)] == fresh, "fresh blocks come before endgame duplicates"
        if duplicates:
            assert len(fresh) == len(free_before), "duplicates only in endgame"
        for root, piece, block in keys:
            assert (root, piece) not in self.held
            assert (root, piece, block) not in self.received
            assert self.priority[root] > 0
            assert self.peer_has(peer, root, piece), "picked a piece the peer lacks"
            requesters = self.requests.get((root, piece, block), {})
            assert peer not in requesters
            assert len(requesters) < self.picker.max_requests_per_block
        mine = {k for k in free_before if self.peer_has(peer, k[0], k[1])}
        if len(got) < count:
            assert mine <= set(keys), "left out a free block the peer has"
        if got:
            self.check_first_choice(peer, keys[0], held_before)
        for request, key in zip(got, keys, strict=True):
            self.picker.mark_requested(peer, request, self.now)
            self.requests.setdefault(key, {})[peer] = None
        self.now += 1.0

    def check_first_choice(self, peer: bytes, key: tuple[bytes, int, int], held: int) -> None:
        """Partial pieces first, then priority, then rarity (outside random-first)."""
        root, piece, _ = key
        if key not in self.free_blocks():
            return  # an endgame duplicate
        partial = [
            (r, p)
            for r, p, _ in self.free_blocks()
            if self.started(r, p) and self.peer_has(peer, r, p)
        ]
        if partial:
            assert self.started(root, piece)
            assert self.priority[root] == max(self.priority[r] for r, _ in partial)
            return
        fresh = [(r, p) for r, p, _ in self.free_blocks() if self.peer_has(peer, r, p)]
        best = max(self.priority[r] for r, _ in fresh)
        assert self.priority[root] == best
        if held >= self.picker.random_first_pieces:
            assert self.rank(root, piece) == min(
                self.rank(r, p) for r, p in fresh if self.priority[r] == best
            ), "not the rarest"

    @precondition(lambda self: bool(self.outstanding()))
    @rule(data=st.data())
    def receive(self, data: st.DataObject) -> None:
        peer, key = data.draw(st.sampled_from(self.outstanding()))
        outcome = self.picker.block_received(peer, BlockRequest(*key))
        assert outcome.status is BlockStatus.ACCEPTED and outcome.requested
        others = [p for p in self.requests.pop(key) if p != peer]
        assert list(outcome.cancel) == others
        self.received[key] = peer
        root, piece, _ = key
        complete = all((root, piece, b) in self.received for b in range(self.blocks[root][piece]))
        assert outcome.piece_complete == complete

    @precondition(lambda self: bool(self.outstanding()))
    @rule()
    def deliver_everything(self) -> None:
        for peer, key in self.outstanding():
            if self.requests.get(key) and next(iter(self.requests[key])) == peer:
                outcome = self.picker.block_received(peer, BlockRequest(*key))
                assert list(outcome.cancel) == [p for p in self.requests.pop(key) if p != peer]
                self.received[key] = peer

    @precondition(lambda self: bool(self.outstanding()))
    @rule(data=st.data(), timed_out=st.booleans())
    def fail(self, data: st.DataObject, timed_out: bool) -> None:
        peer, key = data.draw(st.sampled_from(self.outstanding()))
        request = BlockRequest(*key)
        report = self.picker.request_timed_out if timed_out else self.picker.request_failed
        assert report(peer, request)
        del self.requests[key][peer]

    @rule(data=st.data(), good=st.booleans())
    def verify(self, data: st.DataObject, good: bool) -> None:
        complete = [
            (root, piece)
            for root, counts in self.blocks.items()
            for piece, count in enumerate(counts)
            if (root, piece) not in self.held
            and all((root, piece, b) in self.received for b in range(count))
        ]
        if not complete:
            return
        root, piece = data.draw(st.sampled_from(complete))
        blocks = range(self.blocks[root][piece])
        if good:
            assert self.picker.piece_verified(root, piece) == []
            self.held.add((root, piece))
        else:
            senders = list(dict.fromkeys(self.received[(root, piece, b)] for b in blocks))
            assert self.picker.piece_failed(root, piece) == senders
        for block in blocks:
            del self.received[(root, piece, block)]

    @rule(which=st.integers(0, 2), priority=st.integers(0, 7))
    def set_priority(self, which: int, priority: int) -> None:
        root = self.roots[which % len(self.roots)]
        self.picker.set_priority(root, priority)
        self.priority[root] = priority

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "picker"):
            return
        self.picker.check_invariants()
        for root, counts in self.blocks.items():
            for piece in range(len(counts)):
                assert self.picker.availability(root, piece) == self.availability(root, piece)
            remaining = sum(
                1
                for piece, count in enumerate(counts)
                if (root, piece) not in self.held
                for block in range(count)
                if (root, piece, block) not in self.received
            )
            assert self.picker.remaining_blocks(root) == remaining
            assert self.picker.completed_pieces(root) == sum(r == root for r, _ in self.held)


TestPickerMachine = PickerMachine.TestCase
TestPickerMachine.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------- completion


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    blocks=st.integers(1, 4),
    peers=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_download_completes_when_every_piece_is_available(
    counts: list[int], blocks: int, peers: int, seed: int
) -> None:
    rng = random.Random(seed)
    picker = PiecePicker()
    roots = [bytes([i + 1]) * 32 for i in range(len(counts))]
    names = [b"p%d" % i for i in range(peers)]
    for root, count in zip(roots, counts, strict=True):
        picker.add_file(root, count, blocks, rng.randint(1, 7))
        for piece in range(count):  # every piece somewhere, some in many places
            for name in rng.sample(names, rng.randint(1, peers)):
                picker.peer_has(name, root, piece)
    failed_once: set[tuple[bytes, int]] = set()
    in_flight: list[tuple[bytes, BlockRequest]] = []
    for step in range(5000):
        if all(picker.is_complete(root) for root in roots):
            break
        peer = rng.choice(names)
        for request in picker.pick(peer, rng.randint(1, 5), float(step), rng):
            picker.mark_requested(peer, request, float(step))
            in_flight.append((peer, request))
        rng.shuffle(in_flight)
        for _ in range(rng.randint(0, len(in_flight))):
            sender, request = in_flight.pop()
            if rng.random() < 0.1 and picker.request_failed(sender, request):
                continue
            outcome = picker.block_received(sender, request)
            if outcome.piece_complete:
                key = (request.root, request.piece)
                if key not in failed_once and rng.random() < 0.2:
                    failed_once.add(key)
                    picker.piece_failed(*key)
                else:
                    picker.piece_verified(*key)
    picker.check_invariants()
    assert all(picker.is_complete(root) for root in roots)
    assert picker.remaining_blocks() == 0
