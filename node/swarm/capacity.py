"""How fast can we upload? An estimate from what we did upload, for the choker.

The choker sizes its unchoke slots from our upload capacity (`node.choker`: about 64 KiB/s
per slot). A user who sets `kinswarm run --upload-limit` tells us; otherwise we learn it.
The best sign of a link's capacity is the fastest we have sent: when peers want data our
uploads fill the link (TCP does that on its own), and when they do not, the number of slots
hardly matters. So the estimate is the highest rate seen over any `window_s` seconds, fading
by half every `half_life_s`, so that a link that became slower (a shared home line at a busy
hour) is followed down, slowly. Below `floor` bytes/s (a node that has barely uploaded) it
says nothing, and the choker keeps BitTorrent's four slots.

Sans-IO: fed byte counts and the time; never reads a clock.
"""

from __future__ import annotations

import math
from typing import Final

DEFAULT_WINDOW_S: Final = 5.0
"""Long enough to average out bursts into the socket buffer, short enough to catch a peak."""
DEFAULT_HALF_LIFE_S: Final = 600.0
DEFAULT_FLOOR: Final = 64 * 1024
"""One slot's worth (`node.choker.DEFAULT_PER_SLOT_RATE`): below it, no estimate."""


class UploadCapacityEstimate:
    """The fastest upload rate seen (per `window_s`), fading with `half_life_s`."""

    __slots__ = (
        "_peak",
        "_peak_at",
        "_window_bytes",
        "_window_start",
        "floor",
        "half_life_s",
        "window_s",
    )

    def __init__(
        self,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        half_life_s: float = DEFAULT_HALF_LIFE_S,
        floor: float = DEFAULT_FLOOR,
    ) -> None:
        if window_s <= 0 or half_life_s <= 0 or floor < 0:
            raise ValueError("window and half-life must be positive, the floor not negative")
        self.window_s = window_s
        self.half_life_s = half_life_s
        self.floor = floor
        self._window_start: float | None = None
        self._window_bytes = 0
        self._peak = 0.0
        self._peak_at = 0.0

    def add(self, nbytes: int, now: float) -> None:
        """`nbytes` went out at `now`."""
        self._roll(now)
        if self._window_start is None:
            self._window_start = now
        self._window_bytes += nbytes

    def estimate(self, now: float) -> float | None:
        """Bytes per second we can upload, or None while we know too little."""
        self._roll(now)
        # The window under way counts for what it has so far (over its whole length: no
        # overestimate from a burst into the socket buffer).
        peak = max(self._faded(now), self._window_bytes / self.window_s)
        return peak if peak >= self.floor and peak > 0 else None

    def _faded(self, now: float) -> float:
        elapsed = max(0.0, now - self._peak_at)
        return self._peak * math.pow(0.5, elapsed / self.half_life_s)

    def _roll(self, now: float) -> None:
        """Close the current window once it is `window_s` old: its rate may be a new peak."""
        start = self._window_start
        if start is None or now < start + self.window_s:
            return
        rate = self._window_bytes / self.window_s
        faded = self._faded(start + self.window_s)
        if rate >= faded:
            self._peak, self._peak_at = rate, start + self.window_s
        self._window_start = None
        self._window_bytes = 0
