"""The upload pacer (`node.swarm.pacer`): waits that hold a rate, in the order asked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.swarm.pacer import UploadPacer


def test_a_burst_goes_at_once_and_the_rest_waits_its_turn() -> None:
    pacer = UploadPacer(rate=100_000, burst=64 * 1024)
    assert pacer.reserve(64 * 1024, now=0.0) == 0.0
    assert pacer.reserve(50_000, now=0.0) == pytest.approx(0.5)
    # A second sender asking at the same instant waits behind the first.
    assert pacer.reserve(50_000, now=0.0) == pytest.approx(1.0)
    # Half a second later, half a second less to wait.
    assert pacer.reserve(0, now=0.5) == pytest.approx(0.5)


def test_waiting_first_and_taking_last_holds_the_same_rate() -> None:
    pacer = UploadPacer(rate=100_000, burst=64 * 1024)
    assert pacer.ready_in(0.0) == 0.0
    pacer.take(64 * 1024 + 50_000, 0.0)  # the burst and half a second's worth: in debt
    assert pacer.ready_in(0.0) == pytest.approx(0.5)
    assert pacer.ready_in(0.2) == pytest.approx(0.3)
    # A sender that waited its turn and then dropped its data took nothing: no hole.
    assert pacer.ready_in(0.5) == 0.0
    pacer.take(10_000, 0.5)
    assert pacer.ready_in(0.5) == pytest.approx(0.1)


def test_an_idle_pacer_saves_up_no_more_than_its_burst() -> None:
    pacer = UploadPacer(rate=1000, burst=2000)
    pacer.reserve(2000, now=0.0)
    assert pacer.reserve(2000, now=100.0) == 0.0  # refilled, but only to the burst
    assert pacer.reserve(1000, now=100.0) == pytest.approx(1.0)


def test_time_running_backwards_counts_as_no_time() -> None:
    pacer = UploadPacer(rate=1000, burst=1000)
    pacer.reserve(1000, now=10.0)
    assert pacer.reserve(1000, now=5.0) == pytest.approx(1.0)
    assert pacer.reserve(0, now=10.5) == pytest.approx(0.5)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        UploadPacer(rate=0)
    with pytest.raises(ValueError):
        UploadPacer(rate=1, burst=0)


@given(
    rate=st.floats(min_value=1.0, max_value=1e9),
    sizes=st.lists(st.integers(min_value=0, max_value=1 << 20), min_size=1, max_size=50),
)
def test_sending_when_told_never_beats_the_rate(rate: float, sizes: list[int]) -> None:
    """Whatever is asked, bytes sent by time t never exceed burst + rate * t."""
    pacer = UploadPacer(rate=rate, burst=64 * 1024)
    now = 0.0
    sent = 0
    for size in sizes:
        now += pacer.reserve(size, now)  # a sender that sleeps as told, then sends
        sent += size
        assert sent <= pacer.burst + rate * now + 1e-6 * max(1.0, rate * now)
