"""The upload capacity estimate (`node.swarm.capacity`): the fastest rate seen, fading."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.swarm.capacity import UploadCapacityEstimate


def test_nothing_is_said_before_a_slot_s_worth_was_sent() -> None:
    estimate = UploadCapacityEstimate(window_s=5, floor=64 * 1024)
    assert estimate.estimate(0.0) is None
    estimate.add(100_000, 0.0)  # 20 kB/s over the window: below the floor
    assert estimate.estimate(6.0) is None


def test_the_fastest_window_is_the_estimate() -> None:
    estimate = UploadCapacityEstimate(window_s=5, half_life_s=1e9, floor=0)
    for second in range(5):
        estimate.add(1_000_000, float(second))  # 1 MB/s for five seconds
    for second in range(5, 10):
        estimate.add(200_000, float(second))  # then slower: the link is still as fast
    assert estimate.estimate(20.0) == pytest.approx(1_000_000)


def test_a_window_under_way_counts_for_what_it_has_so_far() -> None:
    estimate = UploadCapacityEstimate(window_s=5, floor=0)
    estimate.add(3_000_000, 0.0)  # a burst into the socket: over the whole window
    assert estimate.estimate(0.5) == pytest.approx(600_000)


def test_the_peak_fades_by_half_each_half_life() -> None:
    estimate = UploadCapacityEstimate(window_s=1, half_life_s=100, floor=0)
    estimate.add(500_000, 0.0)
    assert estimate.estimate(1.0) == pytest.approx(500_000)
    assert estimate.estimate(101.0) == pytest.approx(250_000)
    estimate.add(400_000, 101.0)  # a new peak above the faded one replaces it
    assert estimate.estimate(102.0) == pytest.approx(400_000)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        UploadCapacityEstimate(window_s=0)
    with pytest.raises(ValueError):
        UploadCapacityEstimate(half_life_s=0)
    with pytest.raises(ValueError):
        UploadCapacityEstimate(floor=-1)


@given(
    sends=st.lists(
        st.tuples(st.floats(min_value=0, max_value=1000), st.integers(0, 10**8)), max_size=80
    )
)
def test_never_above_the_fastest_any_window_could_have_been(sends: list[tuple[float, int]]) -> None:
    """Whatever the sends, the estimate is at most all bytes over one window."""
    estimate = UploadCapacityEstimate(window_s=5, floor=0)
    total = 0
    for at, size in sorted(sends):
        estimate.add(size, at)
        total += size
        value = estimate.estimate(at)
        assert value is None or 0 < value <= total / 5 + 1e-6
