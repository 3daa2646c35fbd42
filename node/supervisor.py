"""Keep long-lived services running: log a crash, wait, restart.

A node runs many services (listeners, the DHT, the swarm engine...). One of them crashing on a
bug or a transient error must not take the node down, and must not spin either: the supervisor
restarts it after an exponential backoff (0.5 s doubling to 30 s; reset after a service ran
for a while). Cancellation is never caught: when the node shuts down its nursery is cancelled
and every supervised service stops with it.

Services follow Trio's `nursery.start` convention: `async def service(*, task_status)` calls
`task_status.started(value)` once it is ready (a listener, once bound). A failure *before* the
first `started()` is a startup failure (say, the port is taken): it propagates to whoever
started the supervisor, because restarting cannot fix a configuration error. A crash after that
is logged and restarted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar

import trio

log = logging.getLogger("kinswarm.supervisor")

T = TypeVar("T")

INITIAL_BACKOFF_SECONDS: Final = 0.5
MAX_BACKOFF_SECONDS: Final = 30.0
HEALTHY_AFTER_SECONDS: Final = 60.0
"""A service that ran this long before crashing restarts with the initial backoff again."""

Service = Callable[..., Awaitable[None]]
"""`async def service(*, task_status: trio.TaskStatus[T]) -> None`"""


class _FirstStartRelay(Generic[T]):
    """Passes the first `started()` of the first run on to the supervisor's starter."""

    def __init__(self, outer: trio.TaskStatus[T]) -> None:
        self._outer = outer
        self.started_once = False

    def started(self, value: Any = None) -> None:
        if not self.started_once:
            self.started_once = True
            self._outer.started(value)


async def supervise(
    name: str,
    service: Service,
    *,
    on_crash: Callable[[str, BaseException], None] | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `service` until it returns, restarting it after crashes (see module docstring)."""
    relay: _FirstStartRelay[Any] = _FirstStartRelay(task_status)
    backoff = INITIAL_BACKOFF_SECONDS
    while True:
        started_at = trio.current_time()
        try:
            await service(task_status=relay)
            return
        except Exception as exc:  # a crash: log and restart; Cancelled is not an Exception
            if not relay.started_once:
                raise
            if on_crash is not None:
                on_crash(name, exc)
            if trio.current_time() - started_at >= HEALTHY_AFTER_SECONDS:
                backoff = INITIAL_BACKOFF_SECONDS
            log.error("service %s crashed; restarting in %.1f s", name, backoff, exc_info=exc)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
