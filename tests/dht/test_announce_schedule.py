"""Announces of many keys are spread over the interval, never sent in a burst."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from dht.service import DhtService
from wire.identity import LocalIdentity


class Clockless:
    """Just enough of a network for DhtService's pure scheduling method."""

    random = random.Random(1)

    def crypto_random(self, size: int) -> bytes:
        return bytes(size)

    def now(self) -> float:
        return 0.0

    async def open_datagram_endpoint(self, address: Any) -> Any:
        raise AssertionError("not used")


def test_a_hundred_thousand_keys_are_announced_evenly() -> None:
    keys = [hashlib.sha256(str(i).encode()).digest() for i in range(100_000)]
    service = DhtService(
        network=Clockless(),
        identity=LocalIdentity(bytes(32)),
        bind=("127.0.0.1", 0),
        provided_keys=lambda: keys,
        announce_port=7420,
        announce_interval=1800.0,
    )
    start = 10_000.0
    service._due_announces(start)
    counts = []
    for step in range(1, 31):  # one whole interval, looked at every 60 s
        counts.append(len(service._due_announces(start + 60.0 * step)))
    assert sum(counts) == len(keys)  # each key exactly once per interval
    expected = len(keys) / 30
    assert max(counts) < 1.5 * expected, "no burst"
    assert min(counts) > 0.5 * expected
