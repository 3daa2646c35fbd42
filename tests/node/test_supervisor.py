"""The supervisor restarts crashed services with backoff and never swallows cancellation."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from node.supervisor import supervise


async def test_crashing_service_is_restarted_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def flaky(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        starts.append(trio.current_time())
        if len(starts) < 4:
            raise RuntimeError("transient failure")

    await supervise("flaky", flaky)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert gaps == [0.5, 1.0, 2.0]


async def test_failure_before_started_propagates() -> None:
    async def broken(*, task_status: trio.TaskStatus[None]) -> None:
        raise OSError("address in use")

    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match="address in use"):
            await nursery.start(supervise, "broken", broken)


async def test_started_value_reaches_the_starter_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def service(*, task_status: trio.TaskStatus[int]) -> None:
        nonlocal runs
        runs += 1
        task_status.started(runs)
        if runs < 3:
            raise ValueError("crash after start")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        value = await nursery.start(supervise, "svc", service)
        await trio.sleep(10)
        assert value == 1
        assert runs == 3
        nursery.cancel_scope.cancel()


async def test_cancellation_stops_the_service() -> None:
    stopped = trio.Event()

    async def forever(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            stopped.set()

    with trio.move_on_after(0.05):
        await supervise("forever", forever)
    assert stopped.is_set()
