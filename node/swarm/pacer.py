"""Keeping our upload under a rate: a token bucket that hands out waits, not refusals.

A node that uploads at its link's full rate fills the queue in front of that link (the
modem's, or the simulator's), and its own small messages, Requests above all, wait behind
seconds of Block data: its downloads stall while its uploads run. Pacing the Block data a
little below the link rate keeps that queue short. This is what BitTorrent users do by hand
with an upload limit, and why `kinswarm run --upload-limit` exists.

Sans-IO: the caller passes the time and sleeps for the answer. A sender waits (`ready_in`)
until the bucket is out of debt, then `take`s what it sends, which may put the bucket into
debt: the next sender waits until that is paid back. Waiting first and committing last lets
a sender that queues for its turn (the engine's uploaders, one at a time) drop what it meant
to send, a request cancelled or a peer choked while it waited, without leaving a hole in the
rate.
"""

from __future__ import annotations

from typing import Final

BURST_SECONDS: Final = 0.05
"""What may go at once after a pause: this long of the rate. Our own Requests, Haves and
Unchokes wait behind it in the link's queue, so it is the latency our pacing still adds to
them. A flat 64 KiB was half a second of a 125 KB/s uplink: a 100-leecher flash crowd of
125-500 KB/s uplinks finished 0.04-0.6 s later at the median (five seeds of the scenario),
its last finish 1.305 of the fluid bound on average against 1.279 now."""
MIN_BURST_BYTES: Final = 16 * 1024
"""At least one block, whatever the rate."""


class UploadPacer:
    """`rate` bytes per second on average; ahead of it by at most `burst` plus the one
    message that took the bucket into debt."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        """`burst` None: `BURST_SECONDS` of the rate, at least `MIN_BURST_BYTES`."""
        if burst is None:
            burst = max(MIN_BURST_BYTES, rate * BURST_SECONDS)
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def ready_in(self, now: float) -> float:
        """Seconds until the bucket is out of debt: the next sender may `take` then."""
        self._refill(now)
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def take(self, size: int, now: float) -> None:
        """`size` bytes go now (the bucket may go into debt: the next sender waits)."""
        self._refill(now)
        self._tokens -= size

    def _refill(self, now: float) -> None:
        """Time running backwards counts as none."""
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now if self._last is None else max(self._last, now)
