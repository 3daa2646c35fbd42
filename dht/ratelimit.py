"""Per-source rate limits and bans for the DHT's datagram endpoint, in bounded memory.

Anyone can send us datagrams, and every answer costs CPU (a signature check is ~40 µs) and
upload. `RateLimiter` gives each source a token bucket: `burst` requests at once, refilled at
`rate_per_second`. `Penalties` counts datagrams that were garbage or invalid (undecodable,
bad signatures, wrong tokens) and bans a source that sends `threshold` of them within `window`
seconds, for `ban_duration` seconds: the shell then drops its datagrams before decoding them.

A source is an IPv4 address or an IPv6 /64 (`dht.records.address_group`): one IPv6 subscriber
holds a whole /64, so limits per IPv6 address would limit nothing.

**Bounded memory.** Both track at most `max_tracked` sources, in dicts ordered by last use; past
the bound the least recently seen source is forgotten. For the rate limiter that is harmless:
an idle source's bucket has refilled anyway, and one sending hard is recently seen, so it stays
tracked. Bans are kept apart from offence counts (a flood of first offences cannot push a ban
out); when too many sources are banned, the ban closest to its end is dropped first, and every
new ban costs its offender `threshold` invalid datagrams.

Sans-IO and deterministic: time comes in as `now` (seconds); dict order (insertion/use), never
sets, decides what is evicted. Time running backwards is treated as no time passing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from dht.records import address_group

DEFAULT_RATE_PER_SECOND: Final = 20.0
DEFAULT_BURST: Final = 50.0
DEFAULT_MAX_TRACKED: Final = 10_000

DEFAULT_PENALTY_THRESHOLD: Final = 20
DEFAULT_PENALTY_WINDOW: Final = 60.0
DEFAULT_BAN_DURATION: Final = 10 * 60.0


class _Bucket:
    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last


class RateLimiter:
    """A token bucket per source, for at most `max_tracked` sources."""

    def __init__(
        self,
        rate_per_second: float = DEFAULT_RATE_PER_SECOND,
        burst: float = DEFAULT_BURST,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        if not (rate_per_second > 0 and burst >= 1 and max_tracked >= 1):
            raise ValueError("need rate_per_second > 0, burst >= 1 and max_tracked >= 1")
        self.rate_per_second = rate_per_second
        self.burst = burst
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, host: str, now: float, cost: float = 1.0) -> bool:
        """Whether a request from `host` at `now` is within its rate; if so it is counted."""
        source = address_group(host)
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_tracked:
                self._buckets.popitem(last=False)
            bucket = self._buckets[source] = _Bucket(self.burst, now)
        else:
            self._buckets.move_to_end(source)
            elapsed = now - bucket.last
            if elapsed > 0:
                bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate_per_second)
                bucket.last = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        return False

    def __len__(self) -> int:
        """How many sources are tracked."""
        return len(self._buckets)


class _Offences:
    __slots__ = ("count", "since")

    def __init__(self, since: float) -> None:
        self.count = 0
        self.since = since


class Penalties:
    """Counts a source's invalid datagrams and bans it when they come too thick."""

    def __init__(
        self,
        threshold: int = DEFAULT_PENALTY_THRESHOLD,
        window: float = DEFAULT_PENALTY_WINDOW,
        ban_duration: float = DEFAULT_BAN_DURATION,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        if not (threshold >= 1 and window > 0 and ban_duration > 0 and max_tracked >= 1):
            raise ValueError("need threshold >= 1, window > 0, ban_duration > 0, max_tracked >= 1")
        self.threshold = threshold
        self.window = window
        self.ban_duration = ban_duration
        self.max_tracked = max_tracked
        self._offences: OrderedDict[str, _Offences] = OrderedDict()
        # Ban end times, in the order the bans were made (= the order they end, as the
        # duration is fixed and time moves forwards).
        self._bans: OrderedDict[str, float] = OrderedDict()

    def _lift_ended_bans(self, now: float) -> None:
        while self._bans:
            source, until = next(iter(self._bans.items()))
            if until > now:
                break
            del self._bans[source]

    def punish(self, host: str, now: float) -> bool:
        """Count one invalid datagram from `host`; True if that got the source newly banned.

        Offences are counted in a fixed window that opens at the first offence: `threshold`
        of them before `window` seconds have passed make a ban. A banned source's further
        offences are not counted (its datagrams should not even be decoded).
        """
        source = address_group(host)
        self._lift_ended_bans(now)
        if source in self._bans:
            return False
        record = self._offences.get(source)
        if record is None or now - record.since >= self.window:
            if record is None and len(self._offences) >= self.max_tracked:
                self._offences.popitem(last=False)
            record = self._offences[source] = _Offences(now)
        self._offences.move_to_end(source)
        record.count += 1
        if record.count < self.threshold:
            return False
        del self._offences[source]
        if len(self._bans) >= self.max_tracked:
            self._bans.popitem(last=False)
        self._bans[source] = now + self.ban_duration
        return True

    def is_banned(self, host: str, now: float) -> bool:
        """Whether datagrams from `host` are to be dropped at `now`."""
        self._lift_ended_bans(now)
        until = self._bans.get(address_group(host))
        return until is not None and until > now

    @property
    def banned(self) -> int:
        """How many sources are banned (bans that ended are only dropped on the next call)."""
        return len(self._bans)

    @property
    def tracked(self) -> int:
        """How many sources have offences counted."""
        return len(self._offences)
