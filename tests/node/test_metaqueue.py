"""The metadata request queue (`node.swarm.metaqueue`): first come, first served, stale
requests dropped, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.swarm.metaqueue import STALE_SECONDS, MetadataQueue


def test_requests_are_answered_in_the_order_they_came() -> None:
    queue: MetadataQueue[str] = MetadataQueue()
    for index, peer in enumerate((b"a", b"b", b"c")):
        assert queue.push(peer, f"ask {index}", now=0.1 * index)
    now = STALE_SECONDS  # all still fresh
    assert queue.pop(now) == (b"a", "ask 0")
    assert queue.pop(now) == (b"b", "ask 1")
    assert queue.pop(now) == (b"c", "ask 2")
    assert queue.pop(now) is None


def test_a_request_that_waited_too_long_is_dropped() -> None:
    queue: MetadataQueue[str] = MetadataQueue(stale_after=1.0)
    queue.push(b"old", "early", now=0.0)
    queue.push(b"new", "late", now=0.8)
    assert queue.pop(now=1.5) == (b"new", "late")  # the asker of "early" has moved on
    assert len(queue) == 0


def test_a_full_queue_refuses_more() -> None:
    queue: MetadataQueue[int] = MetadataQueue(limit=2)
    assert queue.push(b"a", 1, now=0.0) and queue.push(b"b", 2, now=0.0)
    assert not queue.push(b"c", 3, now=0.0)
    assert len(queue) == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        MetadataQueue(limit=0)
    with pytest.raises(ValueError):
        MetadataQueue(stale_after=0)


@given(
    arrivals=st.lists(st.floats(min_value=0, max_value=100), max_size=60),
    pops=st.lists(st.floats(min_value=0, max_value=100), max_size=60),
)
def test_what_comes_out_is_fresh_in_order_and_never_twice(
    arrivals: list[float], pops: list[float]
) -> None:
    queue: MetadataQueue[int] = MetadataQueue(limit=50, stale_after=1.0)
    accepted = [
        (at, index) for index, at in enumerate(sorted(arrivals)) if queue.push(b"p", index, now=at)
    ]
    assert len(accepted) == min(len(arrivals), 50)
    served = []
    for now in sorted(pops):
        item = queue.pop(now)
        if item is not None:
            asked_at = next(at for at, index in accepted if index == item[1])
            assert asked_at + 1.0 >= now  # never stale
            served.append(item[1])
    assert served == sorted(set(served))  # in order, each once
