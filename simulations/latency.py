"""One-way link latencies for the virtual network, drawn from a distribution per host pair.

A pair's latency is a pure function of (seed, host a, host b), so it needs no storage (a
10,000-host world has 50 million pairs) and does not depend on the order in which pairs first
talk. The function mixes its inputs with SplitMix64 and maps the result through the inverse
CDF of the chosen distribution. Links are symmetric.
"""

from __future__ import annotations

import math
import statistics
from typing import Final, Literal

import attrs

_MASK: Final = (1 << 64) - 1
_STANDARD_NORMAL: Final = statistics.NormalDist()


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def pair_uniform(seed: int, a: int, b: int) -> float:
    """A number in [0, 1) fixed for the unordered pair (a, b) under `seed`."""
    low, high = (a, b) if a <= b else (b, a)
    mixed = _splitmix64(_splitmix64(_splitmix64(seed & _MASK) ^ low) ^ high)
    return (mixed >> 11) / float(1 << 53)


@attrs.frozen
class LatencyModel:
    """Round-trip times between `min_rtt_ms` and `max_rtt_ms`.

    `uniform` spreads them evenly; `lognormal` puts most pairs near the low end with a long
    tail, as measured internet RTTs look (clipped to the range).
    """

    min_rtt_ms: float = 20.0
    max_rtt_ms: float = 300.0
    shape: Literal["uniform", "lognormal", "fixed"] = "uniform"

    def one_way_us(self, seed: int, a: int, b: int) -> int:
        if self.shape == "fixed" or self.max_rtt_ms <= self.min_rtt_ms:
            return round(self.min_rtt_ms * 500)
        u = pair_uniform(seed, a, b)
        span = self.max_rtt_ms - self.min_rtt_ms
        if self.shape == "uniform":
            rtt = self.min_rtt_ms + u * span
        else:
            # Median at a fifth of the span above the minimum, spread sigma = 1.
            z = _STANDARD_NORMAL.inv_cdf(min(max(u, 1e-12), 1 - 1e-12))
            rtt = min(self.max_rtt_ms, self.min_rtt_ms + span * 0.2 * math.exp(z))
        return round(rtt * 500)  # one way, in microseconds
