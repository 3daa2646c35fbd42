"""Rate limits and bans: token buckets over explicit time, ban windows, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.ratelimit import Penalties, RateLimiter


def host(index: int) -> str:
    return f"10.{index % 250}.{index // 250 % 250}.1"


# -- rate limiter ---------------------------------------------------------------------------


def test_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate_per_second=2.0, burst=5.0)
    assert [limiter.allow(host(0), 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert not limiter.allow(host(0), 0.4)  # 0.8 of a token
    assert limiter.allow(host(0), 0.5)  # 1.0
    assert not limiter.allow(host(0), 0.5)
    # A long rest refills only up to the burst.
    assert sum(limiter.allow(host(0), 1000.0) for _ in range(10)) == 5


def test_sources_are_independent() -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=1.0)
    assert limiter.allow(host(0), 0.0)
    assert not limiter.allow(host(0), 0.0)
    assert limiter.allow(host(1), 0.0)


def test_an_ipv6_slash_64_shares_one_bucket() -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=2.0)
    assert limiter.allow("2001:db8::1", 0.0)
    assert limiter.allow("2001:db8::2", 0.0)
    assert not limiter.allow("2001:db8::3", 0.0)
    assert limiter.allow("2001:db8:0:1::1", 0.0)


def test_memory_is_bounded_and_the_least_recently_seen_goes() -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=1.0, max_tracked=3)
    for index in range(3):
        assert limiter.allow(host(index), 0.0)
    assert not limiter.allow(host(0), 0.0)  # host(0) is now the most recently seen
    assert limiter.allow(host(3), 0.0)  # evicts host(1), the least recently seen
    assert len(limiter) == 3
    assert not limiter.allow(host(0), 0.0)  # still tracked: still empty
    assert limiter.allow(host(1), 0.0)  # forgotten: a fresh bucket (evicts host(2))
    assert len(limiter) == 3


def test_time_running_backwards_adds_nothing() -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=1.0)
    assert limiter.allow(host(0), 10.0)
    assert not limiter.allow(host(0), 5.0)
    assert not limiter.allow(host(0), 10.5)
    assert limiter.allow(host(0), 11.0)


def test_limiter_arguments() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate_per_second=0.0, burst=1.0)
    with pytest.raises(ValueError):
        RateLimiter(rate_per_second=1.0, burst=0.5)
    with pytest.raises(ValueError):
        RateLimiter(rate_per_second=1.0, burst=1.0, max_tracked=0)


@given(
    st.floats(0.1, 100.0),
    st.integers(1, 20),
    st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[float]
) -> None:
    limiter = RateLimiter(rate_per_second=rate, burst=float(burst))
    now = 0.0
    allowed = 0
    for step in steps:
        now += step
        allowed += limiter.allow(host(0), now)
        assert allowed <= burst + rate * now + 1e-9


@given(st.lists(st.integers(0, 50), max_size=300), st.integers(1, 10))
def test_tracked_sources_never_exceed_the_bound(sources: list[int], bound: int) -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=1.0, max_tracked=bound)
    for now, index in enumerate(sources):
        limiter.allow(host(index), float(now))
        assert len(limiter) <= bound


# -- penalties ------------------------------------------------------------------------------


def test_a_ban_after_the_threshold_within_the_window() -> None:
    penalties = Penalties(threshold=3, window=10.0, ban_duration=100.0)
    assert not penalties.punish(host(0), 0.0)
    assert not penalties.punish(host(0), 1.0)
    assert not penalties.is_banned(host(0), 1.0)
    assert penalties.punish(host(0), 2.0)  # newly banned
    assert penalties.is_banned(host(0), 2.0)
    assert not penalties.punish(host(0), 3.0)  # already banned: not newly
    assert not penalties.is_banned(host(1), 3.0)
    assert penalties.is_banned(host(0), 101.999)
    assert not penalties.is_banned(host(0), 102.0)  # the ban ended
    assert penalties.banned == 0
    # A fresh start after the ban.
    assert not penalties.punish(host(0), 103.0)


def test_offences_spread_beyond_the_window_do_not_ban() -> None:
    penalties = Penalties(threshold=3, window=10.0, ban_duration=100.0)
    for now in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0):  # never 3 within one window
        assert not penalties.punish(host(0), now)
    assert not penalties.is_banned(host(0), 25.0)


def test_bans_cover_an_ipv6_slash_64() -> None:
    penalties = Penalties(threshold=2, window=10.0, ban_duration=100.0)
    penalties.punish("2001:db8::1", 0.0)
    assert penalties.punish("2001:db8::2", 0.0)
    assert penalties.is_banned("2001:db8::ffff", 1.0)
    assert not penalties.is_banned("2001:db8:1::1", 1.0)


def test_penalty_memory_is_bounded() -> None:
    penalties = Penalties(threshold=2, window=100.0, ban_duration=1000.0, max_tracked=3)
    for index in range(10):  # first offences: only the 3 most recent are remembered
        penalties.punish(host(index), float(index))
    assert penalties.tracked == 3
    assert not penalties.punish(host(0), 10.0)  # forgotten, so this is a first offence again
    assert penalties.punish(host(9), 10.0)  # remembered: banned
    for index in range(20, 24):  # four more bans: the one closest to ending is dropped
        penalties.punish(host(index), 11.0)
        penalties.punish(host(index), 11.0)
    assert penalties.banned == 3
    assert not penalties.is_banned(host(9), 12.0)
    assert not penalties.is_banned(host(20), 12.0)
    assert all(penalties.is_banned(host(index), 12.0) for index in (21, 22, 23))


def test_penalty_arguments() -> None:
    with pytest.raises(ValueError):
        Penalties(threshold=0)
    with pytest.raises(ValueError):
        Penalties(ban_duration=0.0)


@given(
    st.lists(st.tuples(st.integers(0, 20), st.floats(0.0, 30.0, allow_nan=False)), max_size=300),
    st.integers(1, 5),
)
def test_penalty_bounds_and_ban_semantics(events: list[tuple[int, float]], bound: int) -> None:
    penalties = Penalties(threshold=3, window=20.0, ban_duration=50.0, max_tracked=bound)
    now = 0.0
    for index, step in events:
        now += step
        was_banned = penalties.is_banned(host(index), now)
        newly = penalties.punish(host(index), now)
        assert not (newly and was_banned)
        if newly:
            assert penalties.is_banned(host(index), now)
        assert penalties.tracked <= bound
        assert penalties.banned <= bound
