"""The choker: reciprocation, optimistic rotation, seeding rotation, determinism; the rate meter.

Swarms are written as strings: `swarm("9i 5i 7- 3i")` is four peers p0..p3 with download rates
9, 5, 7, 3 (KiB/s from them), `i` for interested and `-` for not. `run` replays rechokes every
rechoke interval and applies each decision to the records, as a connection would. The tests of
reciprocation use `tit_for_tat()`, BitTorrent's choker (every slot by rate, a rechoke every
10 s); the need slots have tests of their own.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.choker import (
    DEFAULT_PER_SLOT_RATE,
    DEFAULT_SPREAD_PER_SLOT_RATE,
    MAX_SLOTS,
    NEED_CAPACITY_EXPONENT,
    ChokeDecision,
    Choker,
    PeerRecord,
    RateMeter,
)


def tit_for_tat(**options: Any) -> Choker:
    """BitTorrent's choker: no slot by need, a rechoke every 10 s."""
    return Choker(rate_slots=MAX_SLOTS, rechoke_interval_s=10.0, **options)


def swarm(spec: str, *, connected_at: float = -1000.0) -> list[PeerRecord]:
    peers = []
    for i, word in enumerate(spec.split()):
        rate = float(word[:-1]) * 1024
        peers.append(
            PeerRecord(
                node_id=b"p%d" % i,
                interested=word[-1] == "i",
                download_rate_from_them=rate,
                upload_rate_to_them=rate,
                connected_at=connected_at,
            )
        )
    return peers


def apply(peers: list[PeerRecord], decision: ChokeDecision, now: float) -> list[PeerRecord]:
    out = []
    for record in peers:
        if record.node_id in decision.unchoke:
            record = attrs.evolve(record, choked=False, last_unchoked=now)
        elif record.node_id in decision.choke:
            record = attrs.evolve(record, choked=True)
        out.append(record)
    return out


def run(
    choker: Choker, peers: list[PeerRecord], seconds: float, seed: int = 0
) -> list[ChokeDecision]:
    rng = random.Random(seed)
    decisions = []
    now = 0.0
    while now <= seconds:
        decision = choker.update(peers, now, rng)
        peers[:] = apply(peers, decision, now)
        decisions.append(decision)
        now += choker.rechoke_interval_s
    return decisions


def unchoked(peers: list[PeerRecord]) -> set[bytes]:
    return {r.node_id for r in peers if not r.choked}


def test_regular_slots_go_to_the_four_fastest_interested_peers() -> None:
    peers = swarm("9i 5i 7- 3i 8i 1i 6i 2i")
    decision = tit_for_tat().update(peers, 0.0, random.Random(1))
    assert decision.regular == (b"p0", b"p4", b"p6", b"p1")  # 9, 8, 6, 5; p2 is not interested
    assert decision.optimistic in {b"p3", b"p5", b"p7"}
    assert set(decision.unchoke) == {*decision.regular, decision.optimistic}
    assert decision.choke == ()
    assert decision.next_update == 10.0


def test_a_peer_that_stops_giving_loses_its_slot_at_the_next_rechoke() -> None:
    choker = tit_for_tat()
    rng = random.Random(0)
    peers = swarm("9i 5i 7i 3i 8i 4i")
    peers = apply(peers, choker.update(peers, 0.0, rng), 0.0)
    peers[0] = attrs.evolve(peers[0], download_rate_from_them=0.0)
    assert choker.update(peers, 5.0, rng).choke == ()  # no choking between rechokes
    decision = choker.update(peers, 10.0, rng)
    assert b"p0" not in decision.regular
    assert b"p0" in decision.choke


def test_uninterested_peers_are_never_unchoked() -> None:
    decisions = run(tit_for_tat(), swarm("9- 5- 7i"), 120.0)
    for decision in decisions:
        assert set(decision.unchoke) <= {b"p2"}
        assert decision.optimistic != b"p0" and decision.optimistic != b"p1"


def test_optimistic_unchoke_rotates_every_30_seconds() -> None:
    peers = swarm("9i 8i 7i 6i " + "1i " * 8)
    decisions = run(tit_for_tat(), peers, 300.0, seed=3)
    optimistic = [d.optimistic for d in decisions]  # one entry per 10 s
    for start in range(0, len(optimistic) - 2, 3):
        assert optimistic[start] == optimistic[start + 1] == optimistic[start + 2]
    changes = sum(a != b for a, b in zip(optimistic[::3], optimistic[3::3], strict=False))
    assert changes == len(optimistic[::3]) - 1  # a choked peer is chosen: never the same twice
    assert len(set(optimistic)) > 4
    assert all(o not in d.regular for o, d in zip(optimistic, decisions, strict=True))


def test_new_peers_are_three_times_as_likely_to_be_optimistic() -> None:
    wins: Counter[bytes] = Counter()
    for seed in range(3000):
        peers = swarm("9i 8i 7i 6i 0i 0i 0i")  # p4..p6 compete for the optimistic slot
        peers[4] = attrs.evolve(peers[4], connected_at=-5.0)  # connected 5 s ago
        wins[tit_for_tat().update(peers, 0.0, random.Random(seed)).optimistic or b""] += 1
    assert 0.52 < wins[b"p4"] / 3000 < 0.68  # 3 / (3 + 1 + 1) = 0.6


def test_the_optimistic_peer_is_most_often_one_that_lags() -> None:
    wins: Counter[bytes] = Counter()
    for seed in range(2000):
        peers = swarm("9i 8i 7i 6i " + "0i " * 10)  # p4..p13 compete for the optimistic slot
        for index in range(4, 14):
            peers[index] = attrs.evolve(peers[index], pieces_held=(index - 4) * 10)
        wins[tit_for_tat().update(peers, 0.0, random.Random(seed)).optimistic or b""] += 1
    # Best of three draws among ten: the one furthest behind wins 1 - 0.9^3 = 27 % of the time,
    # the one furthest ahead 0.1 %.
    assert 0.23 < wins[b"p4"] / 2000 < 0.31
    assert wins[b"p13"] < 10
    assert wins[b"p4"] > wins[b"p5"] > wins[b"p8"] > wins[b"p12"]
    # Peers ahead still get a turn now and then, and one draw alone is uniform.
    assert {b"p%d" % i for i in range(4, 12)} <= set(wins)
    single: Counter[bytes] = Counter()
    for seed in range(2000):
        peers = swarm("9i 8i 7i 6i " + "0i " * 10)
        for index in range(4, 14):
            peers[index] = attrs.evolve(peers[index], pieces_held=(index - 4) * 10)
        choker = tit_for_tat(optimistic_choices=1)
        single[choker.update(peers, 0.0, random.Random(seed)).optimistic or b""] += 1
    assert max(single.values()) < 1.3 * min(single.values())


def with_pieces(peers: list[PeerRecord], *held: int) -> list[PeerRecord]:
    return [attrs.evolve(r, pieces_held=n) for r, n in zip(peers, held, strict=True)]


def test_all_slots_but_one_go_to_the_peers_furthest_behind() -> None:
    choker = Choker(upload_capacity=8 * DEFAULT_PER_SLOT_RATE)
    assert (choker.slots, choker.need_slots) == (8, 7)
    peers = swarm("9i 8i 7i 6i 5i 4i 3i 2i 1i 1i 1i 1i 1-")
    peers = with_pieces(peers, 90, 80, 70, 60, 50, 40, 30, 20, 5, 9, 7, 11, 0)
    decision = choker.update(peers, 0.0, random.Random(0))
    fewest = (b"p8", b"p10", b"p9", b"p11", b"p7", b"p6", b"p5")
    assert decision.regular[:7] == fewest  # fewest pieces first
    assert decision.regular[7:] == (b"p0",)  # then the fastest of the rest
    assert b"p12" not in decision.unchoke  # behind, but wants nothing from us


def test_need_slots_weigh_each_count_by_the_told_capacity() -> None:
    """A 125 kB/s uploader earns a quarter of what a 500 kB/s one earns by reciprocation:
    among the needy it counts as further behind (its pieces plus one, times the fourth root
    of its capacity, rank it)."""
    assert NEED_CAPACITY_EXPONENT == 0.25
    choker = Choker(upload_capacity=3 * DEFAULT_PER_SLOT_RATE)  # two slots by need
    slow, fast = 125_000.0, 500_000.0
    peers = with_pieces(swarm("1i 1i 1i 1i 9i"), 40, 30, 10, 50, 60)
    told = [slow, fast, fast, slow, fast]
    peers = [attrs.evolve(r, upload_capacity=c) for r, c in zip(peers, told, strict=True)]
    # keys (in units of 125,000 ** 0.25; 4 ** 0.25 = 1.41): p2 11 x 1.41 = 15.6, p0 41,
    # p1 31 x 1.41 = 43.8, p3 51, p4 61 x 1.41 = 86
    decision = choker.update(peers, 0.0, random.Random(0))
    assert decision.regular == (b"p2", b"p0", b"p4")  # then the fastest of the rest
    # A peer that did not say counts as the median of those that did (here: fast).
    peers[0] = attrs.evolve(peers[0], upload_capacity=None)
    decision = Choker(upload_capacity=3 * DEFAULT_PER_SLOT_RATE).update(
        peers, 0.0, random.Random(0)
    )
    assert decision.regular[:2] == (b"p2", b"p1")  # p0's 41 x 1.41 = 58 > p1's 43.8


def test_a_peer_claiming_a_tiny_uplink_gains_a_factor_of_two_at_most() -> None:
    choker = Choker(upload_capacity=2 * DEFAULT_PER_SLOT_RATE)  # one slot by need
    honest = [attrs.evolve(r, upload_capacity=250_000.0) for r in swarm("1i 1i 1i")]
    liar = attrs.evolve(swarm("1i")[0], node_id=b"liar", upload_capacity=1.0)
    # Counted as 250,000 / 16: a factor of 16 ** 0.25 = 2 below an honest peer's.
    peers = [*with_pieces(honest, 10, 60, 60), attrs.evolve(liar, pieces_held=30)]
    assert choker.update(peers, 0.0, random.Random(0)).regular[0] == b"p0"  # 11 x 2 < 31
    peers[-1] = attrs.evolve(peers[-1], pieces_held=20)
    assert (
        Choker(upload_capacity=2 * DEFAULT_PER_SLOT_RATE)
        .update(peers, 0.0, random.Random(0))
        .regular[0]
        == b"liar"
    )  # 21 < 11 x 2


def test_a_one_slot_node_keeps_its_slot_for_reciprocation() -> None:
    peers = with_pieces(swarm("9i 1i 5i 2i"), 50, 10, 30, 40)
    one = Choker(upload_capacity=125_000)
    assert (one.slots, one.need_slots) == (1, 0)
    assert one.update(peers, 0.0, random.Random(0)).regular == (b"p0",)  # the fastest
    three = Choker(upload_capacity=3 * DEFAULT_PER_SLOT_RATE)
    assert (three.slots, three.need_slots) == (3, 2)
    assert three.update(peers, 0.0, random.Random(0)).regular == (b"p1", b"p2", b"p0")


def test_a_silent_peer_gets_a_need_slot_only_after_every_peer_that_spoke() -> None:
    """A peer that tells us nothing of what it holds looks furthest behind (no count) and
    would draw every need slot; silent, it comes after the peers that spoke, whatever its
    count, and gets a slot only if one is left for it."""
    choker = Choker(upload_capacity=3 * DEFAULT_PER_SLOT_RATE)  # two slots by need, one by rate
    peers = with_pieces(swarm("1i 1i 1i 1i"), 0, 30, 10, 20)
    assert choker.update(peers, 0.0, random.Random(0)).regular[:2] == (b"p0", b"p2")
    peers[0] = attrs.evolve(peers[0], silent=True)
    decision = Choker(upload_capacity=3 * DEFAULT_PER_SLOT_RATE).update(
        peers, 0.0, random.Random(0)
    )
    assert decision.regular[:2] == (b"p2", b"p3")  # the two furthest behind that spoke
    alone = Choker(upload_capacity=3 * DEFAULT_PER_SLOT_RATE).update(
        [peers[0]], 0.0, random.Random(0)
    )
    assert alone.regular == (b"p0",)  # nobody else wants the slot


def test_a_need_slot_follows_progress_at_the_next_rechoke() -> None:
    choker = Choker(upload_capacity=2 * DEFAULT_PER_SLOT_RATE)  # one slot by need, one by rate
    assert choker.rechoke_interval_s == 3.0
    rng = random.Random(0)
    peers = with_pieces(swarm("9i 1i 1i 1i 1i"), 50, 10, 20, 30, 35)
    first = choker.update(peers, 0.0, rng)
    assert first.regular == (b"p1", b"p0")
    peers = apply(peers, first, 0.0)
    peers[1] = attrs.evolve(peers[1], pieces_held=45)  # p1 caught up
    assert choker.update(peers, 2.0, rng).choke == ()  # no choking between rechokes
    decision = choker.update(peers, 3.0, rng)
    assert decision.choke == (b"p1",)
    assert decision.regular[1] == b"p0"  # the slot given by rate stays
    assert decision.regular[0] in (b"p2", b"p3") and decision.regular[0] != decision.optimistic


@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=30),
    st.integers(min_value=1, max_value=12),
)
def test_need_picks_are_furthest_behind_and_the_rest_go_by_rate(
    rates_and_pieces: list[tuple[int, int]], slots: int
) -> None:
    peers = [
        PeerRecord(
            node_id=b"p%d" % i,
            interested=True,
            download_rate_from_them=float(rate),
            pieces_held=held,
        )
        for i, (rate, held) in enumerate(rates_and_pieces)
    ]
    by_id = {r.node_id: r for r in peers}
    choker = Choker(upload_capacity=slots * DEFAULT_PER_SLOT_RATE)
    decision = choker.update(peers, 0.0, random.Random(0))
    assert len(decision.regular) == min(slots, len(peers))
    needy = decision.regular[: choker.need_slots]
    others = [r for r in peers if r.node_id not in needy]
    if needy and others:
        assert max(by_id[n].pieces_held for n in needy) <= min(r.pieces_held for r in others)
    by_rate = [by_id[n].download_rate_from_them for n in decision.regular[choker.need_slots :]]
    assert by_rate == sorted(by_rate, reverse=True)
    left_out = [r for r in others if r.node_id not in decision.regular]
    if by_rate:
        assert all(r.download_rate_from_them <= by_rate[-1] for r in left_out)


def test_the_slots_by_rate_set_those_by_need_and_are_checked() -> None:
    assert tit_for_tat(upload_capacity=8 * DEFAULT_PER_SLOT_RATE).need_slots == 0
    assert Choker(upload_capacity=3 * DEFAULT_PER_SLOT_RATE, rate_slots=0).need_slots == 3
    assert Choker(upload_capacity=3 * DEFAULT_PER_SLOT_RATE, rate_slots=2).need_slots == 1
    with pytest.raises(ValueError, match="rate_slots"):
        Choker(rate_slots=-1)


def test_vacancies_are_filled_between_rechokes() -> None:
    choker = tit_for_tat()
    rng = random.Random(0)
    peers = swarm("9i 8i 7i 6i 5i 4i")
    peers = apply(peers, choker.update(peers, 0.0, rng), 0.0)
    gone = peers.pop(0)
    decision = choker.update(peers, 3.0, rng)
    assert gone.node_id not in decision.regular and len(decision.regular) == 4
    assert decision.choke == ()
    assert len(decision.unchoke) == 1
    assert decision.next_update == 10.0


def idle(peers: list[PeerRecord], *ids: bytes) -> list[PeerRecord]:
    return [attrs.evolve(r, idle=r.node_id in ids) for r in peers]


def after_first_rechoke(spec: str) -> tuple[Choker, random.Random, list[PeerRecord]]:
    """A default choker that made its first decision at 0 s, applied to `swarm(spec)`."""
    choker, rng = tit_for_tat(), random.Random(0)
    peers = swarm(spec)
    return choker, rng, apply(peers, choker.update(peers, 0.0, rng), 0.0)


def test_an_idle_peer_is_choked_for_a_waiting_peer() -> None:
    choker, rng, peers = after_first_rechoke("9i 8i 7i 6i 5i 4i 3i 2i")
    decision = choker.update(idle(peers, b"p0"), 3.0, rng)  # between rechokes
    assert decision.choke == (b"p0",)
    assert b"p0" not in decision.regular and len(decision.regular) == 4
    assert len(decision.unchoke) == 1 and decision.unchoke[0] not in unchoked(peers)
    assert decision.next_update == 10.0


def test_a_peer_choked_for_being_idle_that_asks_again_wins_back_its_slot() -> None:
    choker, rng, peers = after_first_rechoke("9i 8i 7i 6i 5i 4i 3i 2i")
    peers = apply(peers, choker.update(idle(peers, b"p0"), 3.0, rng), 3.0)
    rechoke = choker.update(peers, 10.0, rng)  # p0 is interested, and gives fastest
    assert rechoke.regular[0] == b"p0" and b"p0" in rechoke.unchoke


def test_an_idle_optimistic_peer_is_replaced() -> None:
    choker, rng, peers = after_first_rechoke("9i 8i 7i 6i 5i 4i 3i 2i")
    optimistic = next(r.node_id for r in peers[4:] if not r.choked)  # p0-p3 are the regulars
    decision = choker.update(idle(peers, optimistic), 3.0, rng)
    assert decision.choke == (optimistic,)
    assert decision.optimistic not in (None, optimistic)


def test_an_idle_peer_keeps_its_slot_while_nobody_waits() -> None:
    choker, rng, peers = after_first_rechoke("9i 8i 7i 6i 5- 4-")
    decision = choker.update(idle(peers, b"p0"), 3.0, rng)
    assert decision.choke == () and b"p0" in decision.regular
    rechoke = choker.update(idle(peers, b"p0"), 10.0, rng)
    assert rechoke.choke == () and b"p0" in rechoke.regular  # ranked last, but a slot is free


def test_seeding_rotation_serves_every_peer() -> None:
    peers = swarm(" ".join(f"{rate}i" for rate in (50, 40, 30, 20, 10, 5, 4, 3, 2, 1, 1, 1)))
    peers = [attrs.evolve(r, download_rate_from_them=0.0) for r in peers]  # we only seed
    served: dict[bytes, int] = {}
    longest_wait = 0.0
    rng = random.Random(9)
    choker = tit_for_tat(seeding=True)
    now = 0.0
    while now <= 600.0:
        decision = choker.update(peers, now, rng)
        peers = apply(peers, decision, now)
        for record in peers:
            if not record.choked:
                served[record.node_id] = served.get(record.node_id, 0) + 1
            elif record.last_unchoked is not None:
                longest_wait = max(longest_wait, now - record.last_unchoked)
        now += 10.0
    assert set(served) == {r.node_id for r in peers}
    assert longest_wait <= 120.0
    assert max(served.values()) - min(served.values()) <= 10  # roughly even turns


def test_seeding_prefers_fast_peers_within_their_turn() -> None:
    choker = tit_for_tat(seeding=True)
    rng = random.Random(2)
    peers = swarm("1i 1i 1i 1i 1i 1i")
    first = choker.update(peers, 0.0, rng)
    peers = apply(peers, first, 0.0)
    peers = [attrs.evolve(r, upload_rate_to_them=float(i)) for i, r in enumerate(peers)]
    again = choker.update(peers, 10.0, rng).regular
    assert set(again) == set(first.regular)  # nobody's turn is over yet
    assert list(again) == sorted(first.regular, reverse=True)  # fastest upload first


def with_progress(peers: list[PeerRecord], *shares: float | None) -> list[PeerRecord]:
    return [attrs.evolve(r, progress=p) for r, p in zip(peers, shares, strict=True)]


def test_a_seed_spreads_over_more_slots_while_most_peers_are_early_on() -> None:
    capacity = 475_000  # a 500 KB/s uplink paced at 95 %
    early, base = capacity // DEFAULT_SPREAD_PER_SLOT_RATE, capacity // DEFAULT_PER_SLOT_RATE
    assert (early, base) == (28, 7)
    rng = random.Random(3)
    peers = with_progress(swarm(" ".join(["1i"] * 40)), *([0.1] * 21 + [0.9] * 19))
    seed = Choker(upload_capacity=capacity, seeding=True)
    first = seed.update(peers, 0.0, rng)
    assert seed.spreading and len(first.regular) == early
    # Past the median, the slots are the usual ones again at the next rechoke.
    later = with_progress(apply(peers, first, 0.0), *([0.1] * 19 + [0.9] * 21))
    decision = seed.update(later, seed.rechoke_interval_s, rng)
    assert not seed.spreading and len(decision.regular) == base
    assert len(decision.choke) == early - base
    # A leecher never spreads, and neither does a seed that knows no peer's progress.
    leecher = Choker(upload_capacity=capacity)
    assert len(leecher.update(peers, 0.0, rng).regular) == base
    unknown = Choker(upload_capacity=capacity, seeding=True)
    assert len(unknown.update(swarm(" ".join(["1i"] * 40)), 0.0, rng).regular) == base


def test_only_interested_peers_count_for_spreading() -> None:
    peers = with_progress(swarm("1i 1i 1i 1- 1- 1- 1-"), 0.9, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0)
    seed = Choker(upload_capacity=475_000, seeding=True)
    seed.update(peers, 0.0, random.Random(0))
    assert not seed.spreading


def test_decisions_are_deterministic_for_a_seed() -> None:
    spec = "9i 5i 7- 3i 8i 1i 6i 2i 0i 0i 4i"
    first = run(tit_for_tat(), swarm(spec), 200.0, seed=42)
    again = run(tit_for_tat(), swarm(spec), 200.0, seed=42)
    other = run(tit_for_tat(), swarm(spec), 200.0, seed=43)
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    ("capacity", "slots"),
    [
        (None, 4),
        (10 * 1024, 1),
        (125_000, 1),
        (500_000, 7),
        (2 * 1024 * 1024, 32),
        (1e9, 50),
    ],
)
def test_slots_scale_with_upload_capacity(capacity: float | None, slots: int) -> None:
    choker = Choker(upload_capacity=capacity)
    assert choker.slots == slots
    peers = swarm(" ".join(["5i"] * 60))
    decision = choker.update(peers, 0.0, random.Random(0))
    assert len(decision.regular) == slots and decision.optimistic is not None


def test_rate_meter_averages_over_twenty_seconds() -> None:
    meter = RateMeter()
    for second in range(40):
        meter.add(1000, second + 0.5)
    assert meter.rate(39.9) == pytest.approx(1000.0)
    assert meter.rate(45.0) == pytest.approx(700.0)  # seconds 26-45: 14 had traffic
    assert meter.rate(100.0) == 0.0
    assert meter.total == 40_000


def test_rate_meter_does_not_dilute_a_new_connection() -> None:
    meter = RateMeter(start=100.0)
    meter.add(5000, 100.2)
    meter.add(5000, 101.5)
    assert meter.rate(102.0) == pytest.approx(5000.0)


@given(
    events=st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.integers(0, 10_000), st.booleans()),
        max_size=60,
    ),
    window=st.integers(1, 25),
)
def test_rate_meter_matches_a_sum_over_its_window(
    events: list[tuple[float, int, bool]], window: int
) -> None:
    """Whatever the pattern of adds and reads (time moving forward by gaps of up to 5 s),
    the rate is what was added in the seconds of the window ending now, over the window."""
    meter = RateMeter(window)
    now = 0.0
    added: list[tuple[int, int]] = []
    for gap, nbytes, read in events:
        now += gap
        if read:
            second = math.floor(now)
            expected = sum(b for s, b in added if second - window < s <= second)
            assert meter.rate(now) == pytest.approx(expected / window)
        else:
            meter.add(nbytes, now)
            added.append((math.floor(now), nbytes))
    assert meter.total == sum(b for _, b in added)
