"""Everything random in a simulation comes from one seed; this module makes that true.

* `derive_seed(seed, *labels)` gives each component its own generator seed through SHA-256, so
  one extra draw in one node never reshuffles the rest of the world (TigerBeetle's VOPR does
  the same with its per-component PRNG seeds).
* Trio shuffles each batch of runnable tasks with a private `random.Random` (`trio._core._run._r`)
  and, only when hypothesis is imported, sorts the batch by task creation order first. We turn
  that deterministic mode on and seed `_r` from the scenario seed for the duration of a run
  (`deterministic_trio`), and put both back afterwards. With the batch sorted by creation order
  (`Task._counter`) the shuffle no longer depends on set or dict order inside Trio, which varies
  with object addresses and PYTHONHASHSEED.
* `run_simulated` runs an async function under `trio.testing.MockClock(autojump_threshold=0)`:
  simulated time advances only when every task is waiting, straight to the next deadline. The
  clock starts at a large, odd time so that code reading a real clock by mistake stands out.

These touch a private Trio attribute, on purpose and in this one place; the determinism tests
(`tests/sim/test_determinism.py`) fail if a Trio upgrade changes it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

import trio
from trio._core import _run as trio_run_internals

T = TypeVar("T")

CLOCK_START_SECONDS: Final = 1_000_003.0
"""Simulated time starts here, not at 0: a stray real clock reading is obviously wrong."""


def derive_seed(seed: int, *labels: object) -> int:
    """A 64-bit seed for one component, from the scenario seed and the component's labels."""
    text = "/".join([str(seed), *map(str, labels)]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big")


def derive_random(seed: int, *labels: object) -> random.Random:
    return random.Random(derive_seed(seed, *labels))


@contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    """Make Trio's scheduling order a function of `seed` (see the module docstring)."""
    saved_flag = trio_run_internals._ALLOW_DETERMINISTIC_SCHEDULING
    saved_random = trio_run_internals._r
    trio_run_internals._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    trio_run_internals._r = derive_random(seed, "trio-scheduler")
    try:
        yield
    finally:
        trio_run_internals._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        trio_run_internals._r = saved_random


def run_simulated(main: Callable[[], Awaitable[T]], *, seed: int) -> T:
    """Run `main()` in a fresh Trio run under a mock clock with seeded scheduling."""
    # Imported here: trio.testing imports pytest, a quarter second that every `kinswarm`
    # command would pay at start-up (the sim command's parser loads this module).
    from trio.testing import MockClock

    clock = MockClock(autojump_threshold=0)
    clock.jump(CLOCK_START_SECONDS)
    with deterministic_trio(seed):
        return trio.run(main, clock=clock)
