"""How many blocks a peer is asked for at a time (`node.swarm.pipeline`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.swarm.pipeline import (
    MAX_DEPTH,
    MIN_DEPTH,
    ROUND_TRIP_FLOOR,
    SCARCE_MIN_DEPTH,
    SLACK_SECONDS,
    request_depth,
)
from wire.merkle import BLOCK_SIZE

FAST = 2_000_000.0
"""Bytes/s: a peer that fills 43 blocks in a 0.1 s round trip plus the slack."""
SLOW = 40_000.0
"""Bytes/s: one block per round trip and slack."""


def test_a_peer_gets_what_its_rate_fills_across_a_round_trip() -> None:
    expected = -(-int(FAST * (0.5 + SLACK_SECONDS)) // BLOCK_SIZE)
    assert request_depth(FAST, 0.5, scarce=False) == expected == 92
    assert request_depth(FAST, 0.5, scarce=True) == expected  # scarcity lowers only the floor


def test_a_short_round_trip_counts_as_the_floor() -> None:
    floored = -(-int(FAST * (ROUND_TRIP_FLOOR + SLACK_SECONDS)) // BLOCK_SIZE)
    assert request_depth(FAST, 0.02, scarce=False) == floored == 55
    assert request_depth(FAST, 0.0, scarce=False) == request_depth(
        FAST, ROUND_TRIP_FLOOR, scarce=False
    )


def test_while_blocks_are_plentiful_every_peer_gets_the_floor() -> None:
    assert request_depth(0.0, 0.1, scarce=False) == MIN_DEPTH  # a peer that sent nothing yet
    assert request_depth(SLOW, 0.1, scarce=False) == MIN_DEPTH


def test_when_blocks_are_scarce_a_slow_peer_holds_only_what_it_delivers() -> None:
    assert request_depth(0.0, 0.1, scarce=True) == SCARCE_MIN_DEPTH
    assert request_depth(SLOW, 0.1, scarce=True) == SCARCE_MIN_DEPTH
    assert request_depth(100_000.0, 0.15, scarce=True) == 3  # 45 KB in 0.45 s


def test_depth_is_capped() -> None:
    assert request_depth(1e12, 1.0, scarce=False) == MAX_DEPTH


def test_negative_measurements_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        request_depth(-1.0, 0.1, scarce=False)
    with pytest.raises(ValueError, match="negative"):
        request_depth(1.0, -0.1, scarce=True)


@given(
    rate=st.floats(0, 1e10),
    more_rate=st.floats(0, 1e10),
    round_trip=st.floats(0, 10),
    scarce=st.booleans(),
)
def test_depth_grows_with_the_rate_and_never_leaves_its_bounds(
    rate: float, more_rate: float, round_trip: float, scarce: bool
) -> None:
    depth = request_depth(rate, round_trip, scarce=scarce)
    assert (SCARCE_MIN_DEPTH if scarce else MIN_DEPTH) <= depth <= MAX_DEPTH
    assert request_depth(rate + more_rate, round_trip, scarce=scarce) >= depth
    assert request_depth(rate, round_trip, scarce=True) <= request_depth(
        rate, round_trip, scarce=False
    )
