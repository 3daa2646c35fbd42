"""The upload pacer (`node.swarm.pacer`): waits that hold a rate, in the order asked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.swarm.pacer import BURST_SECONDS, MIN_BURST_BYTES, UploadPacer


def test_a_burst_goes_at_once_and_the_next_waits_for_the_debt() -> None:
    pacer = UploadPacer(rate=100_000, burst=64 * 1024)
    assert pacer.ready_in(0.0) == 0.0
    pacer.take(64 * 1024, 0.0)  # the burst: the bucket is empty, not in debt
    assert pacer.ready_in(0.0) == 0.0
    pacer.take(50_000, 0.0)  # half a second's worth beyond it
    assert pacer.ready_in(0.0) == pytest.approx(0.5)
    assert pacer.ready_in(0.2) == pytest.approx(0.3)  # later, less to wait


def test_a_sender_that_waited_and_dropped_its_data_leaves_no_hole() -> None:
    pacer = UploadPacer(rate=100_000, burst=64 * 1024)
    pacer.take(64 * 1024 + 50_000, 0.0)
    assert pacer.ready_in(0.5) == 0.0  # its turn came; it took nothing
    pacer.take(10_000, 0.5)  # the next sender goes at once, not after a second debt
    assert pacer.ready_in(0.5) == pytest.approx(0.1)


def test_an_idle_pacer_saves_up_no_more_than_its_burst() -> None:
    pacer = UploadPacer(rate=1000, burst=2000)
    pacer.take(2000, 0.0)
    pacer.take(2000, 100.0)  # refilled, but only to the burst
    assert pacer.ready_in(100.0) == 0.0
    pacer.take(1000, 100.0)
    assert pacer.ready_in(100.0) == pytest.approx(1.0)


def test_time_running_backwards_counts_as_no_time() -> None:
    pacer = UploadPacer(rate=1000, burst=1000)
    pacer.take(2000, 10.0)
    assert pacer.ready_in(5.0) == pytest.approx(1.0)
    assert pacer.ready_in(10.5) == pytest.approx(0.5)


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
    """Whatever is sent, bytes sent by time t never exceed burst + rate * t plus the one
    message that went last."""
    pacer = UploadPacer(rate=rate, burst=64 * 1024)
    now = 0.0
    sent = 0
    for size in sizes:
        now += pacer.ready_in(now)  # a sender that sleeps as told, then sends
        pacer.take(size, now)
        sent += size
        assert sent <= pacer.burst + rate * now + size + 1e-6 * max(1.0, rate * now)


def test_the_default_burst_is_a_twentieth_of_a_second_and_at_least_a_block() -> None:
    """The burst is how long our own control messages may wait behind our Block data in
    the link's queue: a fixed 64 KiB was half a second of a 125 KB/s uplink."""
    assert UploadPacer(rate=125_000).burst == MIN_BURST_BYTES == 16 * 1024
    assert UploadPacer(rate=10_000_000).burst == 10_000_000 * BURST_SECONDS == 500_000
