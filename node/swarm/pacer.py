"""Keeping our upload under a rate: a token bucket that hands out waits, not refusals.

A node that uploads at its link's full rate fills the queue in front of that link (the
modem's, or the simulator's), and its own small messages, Requests above all, wait behind
seconds of Block data: its downloads stall while its uploads run. Pacing the Block data a
little below the link rate keeps that queue short. This is what BitTorrent users do by hand
with an upload limit, and why `kinswarm run --upload-limit` exists.

Sans-IO: the caller passes the time and sleeps for the answer. Reservations are never
refused: a sender that asks for more than the bucket holds takes the bucket below zero and
waits until it is paid back, so concurrent senders are paced in the order they asked.
"""

from __future__ import annotations

from typing import Final

DEFAULT_BURST_BYTES: Final = 64 * 1024
"""What may go at once after a pause: one 64 KiB piece, so the link's queue stays short."""


class UploadPacer:
    """`rate` bytes per second on average, at most `burst` bytes ahead of it."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float = DEFAULT_BURST_BYTES) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def reserve(self, size: int, now: float) -> float:
        """Take `size` bytes' worth of the rate; returns how many seconds to wait before
        sending them (0 when they may go now). Time running backwards counts as none."""
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now if self._last is None else max(self._last, now)
        self._tokens -= size
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
