"""The omniscient reference schedule: exact where the answer is known by hand, never faster than
the fluid bound, every piece delivered once, and each of its rules costing what it should."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.reference import ReferenceResult, reference_schedule
from simulations.scenarios.flash_crowd import kumar_ross_bound

PIECE = 16 * 1024


def play(
    leechers: Sequence[float],
    *,
    pieces: int = 8,
    seed_rate: float = 100_000,
    one_way: float = 0.0,
    download_factor: float = 4,
    **options: Any,
) -> ReferenceResult:
    return reference_schedule(
        piece_sizes=[PIECE] * pieces,
        seed_rate=seed_rate,
        leecher_rates=leechers,
        leecher_downloads=[rate * download_factor for rate in leechers],
        one_way_s=lambda a, b: one_way,
        **options,
    )


def test_one_leecher_gets_every_piece_from_the_seed_back_to_back() -> None:
    result = play([50_000], pieces=8, pull=False, setup_round_trips=0, marks=(0.25, 0.5, 1))
    assert result.last_s == pytest.approx(8 * PIECE / 100_000)
    assert result.transfers == 8
    quarter, half, whole = result.held_s
    assert quarter == pytest.approx((2 * PIECE / 100_000,))
    assert half == pytest.approx((4 * PIECE / 100_000,))
    assert whole == (result.last_s,)


def test_setup_and_delay_add_their_round_trips_once() -> None:
    # Three round trips of setup before the first byte, one way for the last piece to land;
    # the seed's own pieces need no Have (the leecher knows it holds them all).
    result = play([50_000], pieces=8, one_way=0.01, setup_round_trips=3)
    assert result.last_s == pytest.approx(3 * 0.02 + 8 * PIECE / 100_000 + 0.01)


def test_a_downlink_slower_than_the_seed_sets_the_pace() -> None:
    result = play([10_000], pieces=4, download_factor=2, pull=False, setup_round_trips=0)
    assert result.last_s == pytest.approx(4 * PIECE / 20_000)


def test_two_leechers_trade_what_the_seed_gave_each() -> None:
    # Equal rates, no delay: the seed sends piece after piece, alternating receivers, and each
    # leecher passes its pieces on to the other; the last arrives one piece time after the
    # seed's last upload, M + 1 piece times in all (Mundinger et al.: M + log2 N).
    result = play([100_000, 100_000], pieces=8, pull=False, setup_round_trips=0)
    assert result.last_s == pytest.approx(9 * PIECE / 100_000)
    assert result.transfers == 16


@pytest.mark.parametrize("pull", [False, True])
def test_no_crowd_beats_the_fluid_bound_and_every_leecher_gets_each_piece_once(pull: bool) -> None:
    draw = random.Random(3)
    leechers = [draw.choice((125_000, 250_000, 500_000)) for _ in range(60)]
    pieces = 64
    result = play(leechers, pieces=pieces, seed_rate=500_000, one_way=0.03, pull=pull, slots=2)
    bound = kumar_ross_bound(pieces * PIECE, 500_000, leechers, [rate * 4 for rate in leechers])
    assert result.last_s >= bound
    assert result.transfers == 60 * pieces
    assert result.median_s <= result.last_s
    assert len(result.done_s) == 60


@settings(max_examples=60, deadline=None)
@given(
    leechers=st.lists(st.sampled_from([20_000.0, 50_000.0, 200_000.0]), min_size=1, max_size=8),
    pieces=st.integers(1, 12),
    one_way=st.sampled_from([0.0, 0.01, 0.07]),
    slots=st.integers(1, 3),
    pull=st.booleans(),
    factor=st.sampled_from([0.5, 1.0, 4.0]),
)
def test_any_small_crowd_is_served_whole_and_no_sooner_than_its_links_allow(
    leechers: list[float], pieces: int, one_way: float, slots: int, pull: bool, factor: float
) -> None:
    result = play(
        leechers,
        pieces=pieces,
        one_way=one_way,
        slots=slots,
        pull=pull,
        download_factor=factor,
        marks=(0.5, 1.0),
    )
    assert result.transfers == len(leechers) * pieces
    file_bytes = pieces * PIECE
    downloads = [rate * factor for rate in leechers]
    assert result.last_s >= kumar_ross_bound(file_bytes, 100_000, leechers, downloads) - 1e-9
    setup = 3 * 2 * one_way
    for done, download, half in zip(result.done_s, downloads, result.held_s[0], strict=True):
        # No leecher gets the file faster than its downlink, nor before setup and a delay.
        assert done >= setup + file_bytes / min(download, 100_000 + sum(leechers)) + one_way - 1e-9
        assert half <= done
    assert result.held_s[1] == result.done_s


def test_each_rule_a_swarm_cannot_escape_costs_time() -> None:
    draw = random.Random(5)
    leechers = [draw.choice((125_000, 250_000, 500_000)) for _ in range(40)]
    common: dict[str, Any] = {"pieces": 64, "seed_rate": 500_000, "one_way": 0.04}
    ideal = play(leechers, pull=False, setup_round_trips=0, **common).last_s
    pulled = play(leechers, pull=True, setup_round_trips=0, **common).last_s
    set_up = play(leechers, pull=True, setup_round_trips=3, **common).last_s
    split = play(leechers, pull=True, setup_round_trips=3, slots=4, **common).last_s
    assert ideal < pulled < set_up < split


def test_neighbours_limit_whom_a_node_sends_to() -> None:
    # Leecher 2 may hear only from leecher 1, which alone hears from the seed: everything
    # reaches 2 through 1, a piece time after it reached 1 at the earliest.
    result = play(
        [100_000, 100_000],
        pieces=4,
        pull=False,
        setup_round_trips=0,
        neighbours=[[1], [2], []],
    )
    first, second = result.done_s
    assert first == pytest.approx(4 * PIECE / 100_000)
    assert second == pytest.approx(5 * PIECE / 100_000)


def test_the_same_crowd_gives_the_same_schedule() -> None:
    draw = random.Random(9)
    leechers = [draw.choice((125_000, 500_000)) for _ in range(30)]
    runs = [play(leechers, pieces=32, one_way=0.02) for _ in range(2)]
    assert runs[0] == runs[1]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        play([], pieces=4)
    with pytest.raises(ValueError):
        play([0.0], pieces=4)
    with pytest.raises(ValueError):
        play([1000.0], pieces=4, slots=0)
    with pytest.raises(ValueError):
        play([1000.0], pieces=4, neighbours=[[1]])
    with pytest.raises(ValueError):
        play([1000.0], pieces=4, marks=(0.0,))
