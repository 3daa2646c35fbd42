"""A reachable reference for a flash crowd: what a scheduler that knows everything achieves.

The Kumar-Ross bound is fluid: every uplink busy from the first instant, data passed on the
moment it arrives. No swarm gets there: a piece is passed on only once it is whole, it
crosses each link with a delay, a peer must first hear of it and ask, and nodes pace their
uploads below their line rate. How far a swarm can get, given all that, decides whether a
goal such as "the last finish within 1.15 of the bound" asks for better scheduling or for
the impossible.

`reference_schedule` answers with a schedule, not a formula: an omniscient greedy scheduler
plays the same crowd (the same capacities, pieces, pacing and per-pair latencies) and we time
its last finish. Each node's uplink runs `slots` transfers at a time (one by default: serial
uploads spread a piece fastest, each copy passed on as early as it can be). Whenever a slot is
free it sends the rarest piece it can to the receiver with the fewest pieces (held or on the
way) among those that lack one of its pieces and could have asked for it by now; so near peers
come first, as in a swarm, where their requests arrive first. A receiver takes at most its
download capacity. Every node may send to every other, or only to its `neighbours`. The rules
no swarm escapes stay: a node sends a piece only once it holds it whole; in `pull` mode only a
round trip after that (its Have out, the request back); and to a node only `setup_round_trips`
round trips after the start (connecting, the handshake, the want). Every schedule it builds is
one a swarm could follow, so its last finish bounds the best possible from above: a reference
that meets a goal shows the goal reachable; one that misses it shows only that this greedy
does.

What it showed for `flash-crowd` (4 MiB in 16 KiB pieces, 95 % pacing, 20-150 ms round trips):
1.125 / 1.120 of the fluid bound at 1,000 leechers (seeds 1 / 2), 1.095-1.104 at 100 (seeds
4-8), where the engine reached 1.255 / 1.264 and 1.204-1.216. So 1.15 at 1,000 is reachable,
with 0.03 to spare. Against 1.104 at 100 leechers (seed 4): unpaced 1.050 (pacing costs 0.05);
64 KiB pieces 1.203; each piece offered 0.1 s later than a round trip after it arrived 1.122
(0.25 s: 1.141, 1 s: 1.232); receivers in random order instead of fewest first 1.246 (the
median at 0.94 of the bound: some finish early, the last late); 20 neighbours each instead of
everyone 1.104. At 1,000 leechers (seed 1), two transfers at a time per uplink 1.141, four
1.173: how soon a piece is passed on decides most.

Pure and deterministic (no Trio, no randomness): the same inputs give the same schedule.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

import attrs

SCAN_RECEIVERS: Final = 32
"""A free uploader takes the first receiver (fewest pieces first) it can send to now; when the
first this many cannot start yet (setup, or not yet told of our pieces), it waits for the
soonest of them rather than scan the whole crowd on every decision."""
RETRY_SECONDS: Final = 0.002
"""An uploader whose every receiver is at its download capacity looks again this much later."""

_FREE, _ARRIVE, _RELEASE = 0, 1, 2


@attrs.frozen
class ReferenceResult:
    last_s: float
    """When the last leecher held the whole file (seconds from the start)."""
    median_s: float
    """The median finish (nearest rank, as `simulations.harness.percentile`)."""
    done_s: tuple[float, ...]
    """Each leecher's finish, in the order given."""
    held_s: tuple[tuple[float, ...], ...]
    """For each of the `marks` asked for: when each leecher held that share of the pieces."""
    transfers: int

    @property
    def held_p50_s(self) -> list[float]:
        """For each mark, when the median leecher held that share (nearest rank)."""
        return [_median(times) for times in self.held_s]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(len(ordered) / 2) - 1]


@attrs.define
class _Node:
    rate: float
    """Paced upload of one transfer slot, bytes per second."""
    download: float
    held: int = 0
    """Bit mask of the pieces held whole."""
    coming: int = 0
    """Bit mask of the pieces on their way to it."""
    count: int = 0
    """Held and coming, as the receiver order sees it."""
    download_used: float = 0.0
    arrivals: list[float] = attrs.Factory(list)
    """When each piece held arrived, in order (for the pull rule)."""
    arrived_masks: list[int] = attrs.Factory(lambda: [0])
    """arrived_masks[k]: the pieces among its first k arrivals."""
    idle_slots: int = 0
    """Slots that found nothing to send and wait for a piece to arrive."""
    done_at: float | None = None


def reference_schedule(
    *,
    piece_sizes: Sequence[int],
    seed_rate: float,
    leecher_rates: Sequence[float],
    leecher_downloads: Sequence[float],
    one_way_s: Callable[[int, int], float],
    pull: bool = True,
    setup_round_trips: float = 3.0,
    slots: int = 1,
    neighbours: Sequence[Sequence[int]] | None = None,
    marks: Sequence[float] = (),
) -> ReferenceResult:
    """Play a crowd: node 0 is the seed (holds every piece), nodes 1..N the leechers.

    Rates are what each node sends per second in all (after pacing), split evenly among its
    `slots`. `one_way_s(a, b)` is the one-way delay between nodes a and b (symmetric).
    `neighbours[a]`, if given, lists the nodes a may send to. `marks` are shares of the
    file (0 < mark <= 1) whose times to reach the result reports (`held_s`)."""
    if not piece_sizes or not leecher_rates or len(leecher_rates) != len(leecher_downloads):
        raise ValueError("one piece and one leecher at least, a download per leecher")
    if seed_rate <= 0 or min(leecher_rates) <= 0 or min(leecher_downloads) <= 0:
        raise ValueError("rates must be positive")
    if slots < 1:
        raise ValueError("one upload slot at least")
    if neighbours is not None and len(neighbours) != len(leecher_rates) + 1:
        raise ValueError("a neighbour list per node, the seed's first")
    if not all(0 < mark <= 1 for mark in marks):
        raise ValueError("marks are shares of the file, above 0 and at most 1")
    schedule = _Schedule(
        piece_sizes, seed_rate, leecher_rates, leecher_downloads, one_way_s, pull,
        setup_round_trips, slots, neighbours,
    )  # fmt: skip
    return schedule.run(marks)


class _Schedule:
    """The greedy's state: nodes, the pieces' rarity, receivers bucketed by count, events."""

    def __init__(
        self,
        piece_sizes: Sequence[int],
        seed_rate: float,
        leecher_rates: Sequence[float],
        leecher_downloads: Sequence[float],
        one_way_s: Callable[[int, int], float],
        pull: bool,
        setup_round_trips: float,
        slots: int,
        neighbours: Sequence[Sequence[int]] | None,
    ) -> None:
        self.piece_sizes = piece_sizes
        self.pieces = len(piece_sizes)
        self.full = (1 << self.pieces) - 1
        self.one_way_s = one_way_s
        self.pull = pull
        self.setup_round_trips = setup_round_trips
        self.slots = slots
        self.neighbours = neighbours
        self.nodes = [_Node(seed_rate / slots, 0.0, held=self.full, count=self.pieces)]
        self.nodes += [
            _Node(rate / slots, download)
            for rate, download in zip(leecher_rates, leecher_downloads, strict=True)
        ]
        self.holders = [1] * self.pieces  # held or coming, per piece
        self.by_count: list[dict[int, None]] = [{} for _ in range(self.pieces + 1)]
        self.by_count[0] = dict.fromkeys(range(1, len(self.nodes)))
        self.lowest = 0  # no receiver holds fewer than this
        self.events: list[tuple[float, int, int, int, int]] = []  # (at, seq, kind, node, arg)
        self.seq = 0
        self.transfers = 0
        self.release_rates: dict[int, float] = {}  # what each transfer takes of its downlink

    def run(self, marks: Sequence[float]) -> ReferenceResult:
        for index in range(len(self.nodes)):
            for _ in range(self.slots):
                self._push(0.0, _FREE, index)
        remaining = len(self.nodes) - 1
        while self.events and remaining:
            now, _, kind, index, arg = heapq.heappop(self.events)
            node = self.nodes[index]
            if kind == _FREE:
                self._decide(index, now)
            elif kind == _RELEASE:
                node.download_used -= self.release_rates.pop(arg)
            else:
                node.coming &= ~(1 << arg)
                node.held |= 1 << arg
                node.arrivals.append(now)
                node.arrived_masks.append(node.held)
                if node.held == self.full:
                    node.done_at = now
                    remaining -= 1
                waking, node.idle_slots = node.idle_slots, 0
                for _ in range(waking):
                    self._decide(index, now)
        done = [node.done_at for node in self.nodes[1:]]
        if any(at is None for at in done):
            raise RuntimeError("the reference schedule stalled before every leecher finished")
        finished = tuple(at for at in done if at is not None)
        leechers = self.nodes[1:]
        return ReferenceResult(
            last_s=max(finished),
            median_s=_median(finished),
            done_s=finished,
            held_s=tuple(
                tuple(node.arrivals[math.ceil(mark * self.pieces) - 1] for node in leechers)
                for mark in marks
            ),
            transfers=self.transfers,
        )

    def _push(self, at: float, kind: int, node: int, arg: int = -1) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, node, arg))

    def _receivers(self, index: int) -> Iterable[int]:
        """Who the sender may send to, fewest pieces first."""
        if self.neighbours is not None:
            nodes = self.nodes
            return sorted(
                (n for n in self.neighbours[index] if n and nodes[n].count < self.pieces),
                key=lambda n: nodes[n].count,
            )
        while self.lowest < self.pieces and not self.by_count[self.lowest]:
            self.lowest += 1
        return _Buckets(self.by_count, self.lowest, self.pieces)

    def _decide(self, index: int, now: float) -> None:
        """A slot of `index` is free: start a transfer, or say when to look again."""
        sender = self.nodes[index]
        if not sender.held:
            sender.idle_slots += 1
            return
        later = float("inf")
        capped = False
        weighed = 0
        for receiver in self._receivers(index):
            if receiver == index:
                continue
            other = self.nodes[receiver]
            lacking = sender.held & ~(other.held | other.coming)
            if not lacking:
                continue
            if other.download_used and other.download_used + sender.rate > other.download:
                capped = True  # a lone transfer may exceed the downlink: it goes at its pace
                continue
            weighed += 1
            start = self._earliest_start(index, receiver, lacking, now)
            if start <= now:
                self._send(index, receiver, self._ready(index, receiver, now) & lacking, now)
                return
            later = min(later, start)
            if weighed >= SCAN_RECEIVERS:
                break
        if later < float("inf"):
            self._push(later, _FREE, index)
        elif capped:
            self._push(now + RETRY_SECONDS, _FREE, index)
        else:
            sender.idle_slots += 1

    def _ready(self, index: int, receiver: int, now: float) -> int:
        """The pieces the receiver could have asked `index` for by now."""
        sender = self.nodes[index]
        if index == 0 or not self.pull:
            return sender.held
        rtt = 2 * self.one_way_s(index, receiver)
        return sender.arrived_masks[bisect_right(sender.arrivals, now - rtt)]

    def _earliest_start(self, index: int, receiver: int, lacking: int, now: float) -> float:
        rtt = 2 * self.one_way_s(index, receiver)
        start = max(now, self.setup_round_trips * rtt)
        if self._ready(index, receiver, start) & lacking:
            return start
        sender = self.nodes[index]  # pull: the receiver has not heard of those pieces yet
        heard = next(
            at
            for at, mask in zip(sender.arrivals, sender.arrived_masks[1:], strict=True)
            if mask & lacking
        )
        return max(start, heard + rtt, now + 1e-9)  # never "now" by rounding

    def _send(self, index: int, receiver: int, ready: int, now: float) -> None:
        piece = self._rarest(ready)
        sender, other = self.nodes[index], self.nodes[receiver]
        if self.neighbours is None:
            del self.by_count[other.count][receiver]
        other.count += 1
        if self.neighbours is None and other.count < self.pieces:
            self.by_count[other.count][receiver] = None
        other.coming |= 1 << piece
        rate = min(sender.rate, other.download)
        other.download_used += rate
        self.holders[piece] += 1
        self.transfers += 1
        sent = now + self.piece_sizes[piece] / rate
        # The piece fills the receiver's downlink as long as our uplink, a delay later; the
        # downlink is free again before any sender that is free at that instant looks.
        self.release_rates[self.transfers] = rate
        self._push(sent, _RELEASE, receiver, self.transfers)
        self._push(sent, _FREE, index)
        self._push(sent + self.one_way_s(index, receiver), _ARRIVE, receiver, piece)

    def _rarest(self, mask: int) -> int:
        best, fewest = -1, 1 << 62
        holders = self.holders
        while mask:
            low = mask & -mask
            piece = low.bit_length() - 1
            if holders[piece] < fewest:
                best, fewest = piece, holders[piece]
            mask ^= low
        return best


class _Buckets:
    """Iterate the receivers bucketed by count, fewest first, without copying the buckets."""

    __slots__ = ("buckets", "high", "low")

    def __init__(self, buckets: list[dict[int, None]], low: int, high: int) -> None:
        self.buckets, self.low, self.high = buckets, low, high

    def __iter__(self) -> Iterator[int]:
        for count in range(self.low, self.high):
            yield from self.buckets[count]
