"""Who we upload to: tit-for-tat unchoking with a share for the peers behind, one decision per
connection.

We cannot upload to everyone at once (each stream would be too slow to matter), so a few peers
are *unchoked* at a time. The rules are BitTorrent's, as refined by mainline and libtorrent:

* **Reciprocation** (while we download): every `rechoke_interval_s` (3 s) the regular slots
  not given by need (below) go to the interested peers that upload to us fastest, by their
  rate over the last 20 s. Peers who give get.
* **Need slots** (while we download): every regular slot but `rate_slots` (one) goes first
  to the interested peers that told us they hold the fewest pieces. Reciprocation alone
  gives each peer back about what it uploads; the fluid bound needs every peer to download at
  the same rate, the fast uploaders' surplus going to the slow ones, so that all finish
  together. By rate alone a flash crowd's 125 KB/s uploaders, served by one or two partners
  after the first rechokes, finished 2-3 s after the 500 KB/s ones and set the last finish.
  Each node ranks its own peers (~50 in a crowd), so the need slots spread over the laggards
  rather than crowd one. Progress changes quickly, hence a rechoke every 3 s rather than
  BitTorrent's 10 s; by rate alone the 3 s period did not help (the last finish as late or
  later). A node with one slot (a 125 KB/s uplink) keeps it for reciprocation (3 slots: 2 by
  need, 7: 6): with that slot by need too, the last finish was no better and the median
  0.2 s later (measured before the Haves change below; after it, every slot by need gave
  1.250 of the bound on average over the five seeds below, but no slot rewarded giving).
  History, 100 leechers, 16 KiB pieces, seeds 4 / 5 / 6, before the scarce request floor
  (`node.swarm.pipeline`): last finish 1.49 / 1.58 / 1.48 of the bound by rate alone,
  1.37 / 1.36 / 1.38 with half the slots by need. With that floor: half 1.313 / 1.337 /
  1.334, three quarters (rounded down) 1.304 / 1.313 / 1.310, every slot 1.303 / 1.296 /
  1.321; 1,000 leechers, seed 1: 1.53 by rate alone, 1.36 with three quarters and the scarce
  request floor. Once Haves to choked peers stopped crowding the 125 KB/s uplinks
  (`SwarmEngine._have_loop`), all but one slot by need beat three quarters: seeds 4-8
  1.289 / 1.262 / 1.268 / 1.275 / 1.221 (mean 1.263) against 1.273 / 1.307 / 1.274 / 1.304 /
  1.233 (1.278); 1,000 leechers, seed 1: 1.319 against 1.341. It changes only the nodes
  with 5 slots or more (7 of a 500 KB/s uplink: 6 by need instead of 5).
  The cost: a peer that under-reports what it holds draws need slots; kinswarm's swarms are
  federations of people who know each other, and the slots by rate still reward giving.
  Measured (`kinswarm sim flash-crowd-liars`: three of 100 leechers say nothing of what they
  hold until done): the three finished first, 2.6 s before the honest median (13.0-13.2 s
  against 15.7 s, seed 4; 2.2 s at seed 5). A floor under each count of what we sent the
  peer whole changed nothing: each uploader gave a liar only its own share of what it held.
  **Silent peers come last**: a peer that told us nothing of what it holds (no Have,
  Bitfield or HaveAll) for `SILENT_SECONDS` (3 s, `node.swarm.session`) gets a need slot
  only after every peer that spoke. An honest downloader tells us within about a second of
  getting a piece we lack, and the honest crowd ran the same (seeds 4-8 of 100 leechers:
  the same figures but seed 8's, 1.204 against 1.200; 1,000 leechers, seed 1: 1.255 against
  1.261). The liars then finished 1.5 / 2.4 s *after* the honest median (seeds 4
  / 5). A liar that trickles a Have now and then is not caught (`flash-crowd-tricklers`: one
  Have of one piece to each peer every 2 s; 2.5 / 1.5 s ahead of the median, seeds 4 / 5);
  the slots by rate still reward only giving.
  **Concentrated on purpose**: each node gives its need slots to the few peers at the very
  bottom of its ~50. Mid-download (a quarter to nine tenths held) a leecher is unchoked by
  3 / 5 / 9 peers and downloads 164 / 295 / 426 KB/s (p10 / p50 / p90 of half-second
  samples; `kinswarm sim flash-crowd-probed --nodes 100 --seed 4`); the three last to
  finish, 500 KB/s uploaders, were unchoked by 1-5 peers at a median 164-262 KB/s from 7 s
  to 15 s. The tenth leecher in ten reaches half of the file 2.4 s before the ninetieth,
  where the omniscient reference (`simulations.reference`, fewest first at every transfer)
  keeps them 0.12-0.15 s apart (`held_spread_s`, seeds 4 / 5). Smoothing that was worse:
  need slots drawn at random among the bottom third of the candidates gave 1.266 / 1.242 /
  1.220 / 1.228 / 1.226 of the bound (seeds 4-8, mean 1.236; the last finisher 1.2-1.5 s
  behind the median at seeds 4 / 5) against 1.218 / 1.222 / 1.206 / 1.231 / 1.201 (1.216);
  need slots only to peers that hold fewer pieces than we do, 1.234 / 1.226 / 1.217 /
  1.209 / 1.205 (1.218).
  **Counts as told, not as held**: a peer's count is what it told us, and it tells us only
  of the pieces it gets while we lack them (`SwarmEngine._announce_piece` skips a Have to a
  peer that has the piece). A leecher that was ahead told everyone much; once it falls
  behind, what it gets its peers already hold, and its counts freeze: a last finisher truly
  at the 2nd-12th percentile of its peers' candidates at 10-12 s was ranked at the
  20th-45th, and drew no need slots. Over the crowd the told counts are 0.4-0.8 of the true
  ones, rank-correlated 0.67-0.75 (Spearman), the six lowest by count the six truly lowest
  in under half of the cases (a tracer outside the repository, 100 leechers, seed 4). Yet
  the partial count is the better guide. With the counts the peers really held (read from
  the simulator, outside the repository): 1.285 / 1.274 of the bound (seeds 4 / 5, the 125
  KB/s uploaders last, the leechers 3.1-3.7 s apart at half of the file) against 1.218 /
  1.222; true counts only for peers that told us nothing for a second (those whose counts
  froze), 1.242 / 1.220; the peers lacking most of our pieces first, 1.399 / 1.278; a Have
  of every piece to every peer (true counts, but each Have also read as a sign of
  interest), 1.277 / 1.289 at three times the run time. What the told count measures is
  how often the peer got a piece before we did; why that ranks better is not established,
  but on this evidence a message making the counts exact would make the need slots worse.
* **Behind, weighed by capacity**: the need ranking is not the bare count but the count plus
  one times the fourth root of the upload capacity the peer told us (`wire.swarm.Capacity`;
  a peer that did not say counts as the median of those that did, and a claim is held within
  `NEED_CAPACITY_SPREAD` of that median, so a lie buys at most a factor of 2). The
  reciprocation slot repays a 125 KB/s uploader a quarter of what it repays a 500 KB/s one,
  so at the same count the slow one is further from finishing with the crowd. 100 leechers,
  seeds 4-8: 1.232 / 1.222 / 1.232 / 1.247 / 1.215 of the bound (mean 1.230), against the
  bare count's 1.238 / 1.229 / 1.292 / 1.278 / 1.226 (1.253), the last finisher 0.89-0.97 s
  behind the median instead of 0.91-1.64 s; 1,000 leechers, seed 1: 1.281 against 1.318
  (last finish 18.38 s against 18.92). Exponents tried: with the square root 1.233 (100) and
  1.281 (1,000), the median finish sooner but the 500 KB/s uploaders then the last to finish
  (medians by uplink 16.55 / 17.36 / 17.81 s at 1,000, against 16.97 / 17.40 / 17.63 with the
  fourth root); with the capacities read from the simulator, 0.75 gave 1.241 at 100 and the
  full capacity 1.269 / 1.246 (seeds 4 / 5): the fast uploaders became the stragglers.
* **Optimistic unchoke**: one more interested, choked peer, chosen at random and kept for
  `optimistic_interval_s` (30 s). It is how a newcomer with nothing to trade gets its first
  pieces and how we discover peers faster than our current partners. Newly connected peers are
  `new_peer_weight` (3) times as likely to be chosen, as in BitTorrent, because they are the
  ones with nothing to offer yet.
* **The optimistic peer is one that lags**: of `optimistic_choices` (3) peers drawn as above,
  the one that told us it holds the fewest pieces. Reciprocation gives a slow uploader little
  (one or two slots earn one or two partners): in a flash crowd such a peer fell behind, had
  then little that others lacked, was unchoked by none of its 54 peers for seconds, and
  finished last, seconds after the median. The fluid bound needs every peer to finish
  together, so the altruistic share of each uplink goes where it evens progress out. Best of
  three, not the least of all, or every peer would crowd the same laggard. At 100 leechers
  with 16 KiB pieces the last finish went from 1.61 to 1.52 of the bound (mean of three
  seeds; the median 0.5 s later); with 64 KiB pieces, whose tail was short, 1.55 to 1.54.
* **Seeding** (we only upload): download rates mean nothing, so slots go to the peers we upload
  to fastest (they use the bandwidth best) — but a peer that has held a slot for
  `seed_rotation_s` yields it to the peer that has waited longest, so every interested peer is
  served in turn and pieces spread through the swarm rather than to one fast peer.
* **Spreading** (seeding to peers that are early on): while the median interested peer holds less
  than `SPREAD_PROGRESS` (half) of what we seed to it, each slot gets `spread_per_slot_rate` (16
  KiB/s), not 64: four times the slots. Then we are the source of most of what the peers lack, a
  crowd's only one at its start, and each piece we send is one the receiver must pass on. A 500
  KB/s seed's seven slots give each receiver four pieces a second, which a 125 KB/s uplink (about
  seven pieces a second) cannot pass on even twice; its 29 spreading slots give each one, and the
  relaying is shared by four times the peers. 100 leechers, seeds 4-8: 1.216 / 1.210 / 1.205 /
  1.213 / 1.200 of the bound (mean 1.209) against 1.232 / 1.222 / 1.232 / 1.247 / 1.215 (1.230),
  the median leecher 0.24-0.54 s sooner at a quarter of the file; the seed sent 1.00-1.06 copies
  before the crowd held one (`node.swarm.reveal` keeps a slow window live longer). 1,000 leechers,
  seeds 1 / 2: 1.261 / 1.263 against 1.281 / 1.317, a quarter 0.29 / 0.58 s sooner, the seed's
  first copy 1.00 copies in both. Before that last change, 8 KiB/s per slot gave 1.211 and 32
  KiB/s 1.216; 16 KiB/s for every seed, also the leechers that finish and seed the last pieces to
  peers past half, gave 1.236 (the median leecher's last tenth took 0.1-0.5 s longer: the laggards
  each got a thinner share); and for leechers, wider slots until they held a quarter were worse
  (1.268 with 16 KiB/s, 1.256 with 32).

A decision covers a whole connection (every container it carries): reciprocation is between
peers, not per file.

**Slots.** With our upload capacity known, `slots = clamp(1, upload_capacity // per_slot_rate,
50)`, so that each unchoked peer gets about `per_slot_rate` (64 KiB/s: a 64 KiB piece a second;
`spread_per_slot_rate` while spreading, above).
Fewer, faster slots move each piece on sooner, and a piece is only worth something to the swarm
once it is whole: in the flash-crowd simulation, 64 KiB/s per slot instead of BitTorrent's
fixed four (256 KiB/s each) cut the 30-leecher completion time by 14 % (mean of three seeds).
Beyond 50 slots per-connection overhead dominates and rate estimates get noisy. With the
capacity unknown, four slots, BitTorrent's figure. The engine sets the capacity from
`--upload-limit`, or learns it from its own uploads (`node.swarm.capacity`).

Between rechokes `update` only fills vacancies (an unchoked peer left or lost interest),
replaces an optimistic peer that went away and hands idle peers' slots on (below); it chokes
no one else, so decisions stay stable.

**Idle slots.** An unchoked peer that stays interested but asks us for nothing (what we have
that it lacks is on its way from others) holds a slot that uploads nothing. The engine marks
it `idle`; if another interested peer waits, the idle one is choked and the waiting one takes
its slot at once, not at the next rechoke (it is interested, so it queues again). With nobody
waiting it keeps its slot. In a flash crowd a seed's slots sat idle while hundreds of peers
waited.

Never: no I/O, no clock, no global random. The caller passes `now` and a `random.Random`; the
same inputs and generator state give the same decision. Iteration is over the caller's list
(its order is part of the input) and dicts, never sets.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Final

import attrs

__all__ = [
    "DEFAULT_NEW_PEER_S",
    "DEFAULT_OPTIMISTIC_CHOICES",
    "DEFAULT_OPTIMISTIC_INTERVAL_S",
    "DEFAULT_PER_SLOT_RATE",
    "DEFAULT_RATE_SLOTS",
    "DEFAULT_RATE_WINDOW_S",
    "DEFAULT_RECHOKE_INTERVAL_S",
    "DEFAULT_SEED_ROTATION_S",
    "DEFAULT_SPREAD_PER_SLOT_RATE",
    "MAX_SLOTS",
    "MIN_SLOTS",
    "SPREAD_PROGRESS",
    "UNKNOWN_CAPACITY_SLOTS",
    "ChokeDecision",
    "Choker",
    "PeerRecord",
    "RateMeter",
]

DEFAULT_RECHOKE_INTERVAL_S: Final = 3.0
"""BitTorrent rechokes every 10 s. The need slots follow progress, which changes by tens of
pieces in 10 s; rates are averaged over 20 s whatever the period, so the slots given by rate
stay as stable as before (see the module docstring)."""
DEFAULT_OPTIMISTIC_INTERVAL_S: Final = 30.0
"""BitTorrent's 30 s: the optimistic peer gets time to prove itself."""
DEFAULT_SEED_ROTATION_S: Final = 30.0
"""While seeding, a slot is held at most this long while others wait."""
DEFAULT_NEW_PEER_S: Final = 60.0
"""A peer connected this recently counts as new for the optimistic draw."""
DEFAULT_NEW_PEER_WEIGHT: Final = 3
MIN_SLOTS: Final = 1
UNKNOWN_CAPACITY_SLOTS: Final = 4
MAX_SLOTS: Final = 50
DEFAULT_PER_SLOT_RATE: Final = 64 * 1024
"""Bytes/s of our upload each regular slot should get (see the module docstring)."""
DEFAULT_SPREAD_PER_SLOT_RATE: Final = 16 * 1024
"""The same while spreading: seeding to peers most of whom hold under `SPREAD_PROGRESS`."""
SPREAD_PROGRESS: Final = 0.5
"""A seed spreads while the median interested peer holds less than this share of what we
seed to it."""
DEFAULT_OPTIMISTIC_CHOICES: Final = 3
"""Peers drawn for an optimistic unchoke; the one furthest behind (fewest pieces) wins."""
DEFAULT_RATE_SLOTS: Final = 1
"""Regular slots that go by rate (reciprocation) while we download; the rest go by need."""
NEED_CAPACITY_SPREAD: Final = 16.0
"""A told upload capacity counts as at most this many times the median told, or that median
divided by it: a peer that claims a tiny uplink to draw need slots gains a factor of
16 ** NEED_CAPACITY_EXPONENT = 2 at most, what a 125 KB/s uploader honestly has over a
2 MB/s one."""
NEED_CAPACITY_EXPONENT: Final = 0.25
"""The need ranking multiplies a peer's count by its told capacity to this power (see the
module docstring: 0.25 and 0.5 tied at 1,000 leechers; 0.25 kept the uplinks' finishes
closer together)."""
DEFAULT_RATE_WINDOW_S: Final = 20
"""Rates are averaged over 20 s (BitTorrent's two rechoke periods), so one burst does not win a
slot."""


@attrs.frozen
class PeerRecord:
    """What the choker needs to know about one connection, as plain values."""

    node_id: bytes
    interested: bool
    """They want data from us."""
    choked: bool = True
    """We currently choke them."""
    download_rate_from_them: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    """Bytes/s they sent us over the last 20 s (a RateMeter)."""
    upload_rate_to_them: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    last_unchoked: float | None = None
    """When their current (or, if choked, most recent) unchoke began; None if never."""
    connected_at: float = 0.0
    idle: bool = False
    """Unchoked, and has asked us for nothing for a while: its slot may go to another peer."""
    pieces_held: int = 0
    """Pieces the peer told us it holds of the files we share with it: how far along it is."""
    silent: bool = False
    """It has told us nothing of what it holds for a while (`node.swarm.session.SILENT_SECONDS`):
    its count may be a lie, so the need slots reach it only after every peer that spoke."""
    upload_capacity: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    """Bytes/s the peer told us its uplink carries (`wire.swarm.Capacity`); None if it did
    not say. Weighs its count for the need slots."""
    progress: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([attrs.validators.ge(0), attrs.validators.le(1)]),
    )
    """The share of the files we seed to it that the peer holds, 0 to 1 (None: we seed it
    nothing, or do not know): whether a seed spreads."""


@attrs.frozen
class ChokeDecision:
    unchoke: tuple[bytes, ...]
    """Currently choked peers to unchoke now."""
    choke: tuple[bytes, ...]
    """Currently unchoked peers to choke now."""
    regular: tuple[bytes, ...]
    """Peers holding regular slots after this decision, best first."""
    optimistic: bytes | None
    next_update: float
    """Call `update` again no later than this (the next rechoke)."""


class Choker:
    """Sans-IO choker. Call `update` at least at `next_deadline()` and whenever a peer connects,
    disconnects or changes interest; apply the decision's unchoke/choke lists."""

    def __init__(
        self,
        *,
        upload_capacity: float | None = None,
        seeding: bool = False,
        per_slot_rate: float = DEFAULT_PER_SLOT_RATE,
        spread_per_slot_rate: float = DEFAULT_SPREAD_PER_SLOT_RATE,
        rechoke_interval_s: float = DEFAULT_RECHOKE_INTERVAL_S,
        optimistic_interval_s: float = DEFAULT_OPTIMISTIC_INTERVAL_S,
        seed_rotation_s: float = DEFAULT_SEED_ROTATION_S,
        new_peer_s: float = DEFAULT_NEW_PEER_S,
        new_peer_weight: int = DEFAULT_NEW_PEER_WEIGHT,
        optimistic_choices: int = DEFAULT_OPTIMISTIC_CHOICES,
        rate_slots: int = DEFAULT_RATE_SLOTS,
    ) -> None:
        if min(per_slot_rate, spread_per_slot_rate, rechoke_interval_s, optimistic_interval_s) <= 0:
            raise ValueError("rates and intervals must be positive")
        if new_peer_weight < 1 or optimistic_choices < 1:
            raise ValueError("new_peer_weight and optimistic_choices must be at least 1")
        if rate_slots < 0:
            raise ValueError("rate_slots cannot be negative")
        self.upload_capacity = upload_capacity
        self.seeding = seeding
        """Set when every download is complete: slots then rotate among the peers we serve."""
        self.per_slot_rate = per_slot_rate
        self.spread_per_slot_rate = spread_per_slot_rate
        self.spreading = False
        """Seeding to peers most of whom are early on (set by each `update`): more slots."""
        self.rechoke_interval_s = rechoke_interval_s
        self.optimistic_interval_s = optimistic_interval_s
        self.seed_rotation_s = seed_rotation_s
        self.new_peer_s = new_peer_s
        self.new_peer_weight = new_peer_weight
        self.optimistic_choices = optimistic_choices
        self.rate_slots = rate_slots
        self._next_rechoke: float | None = None
        self._regular: list[bytes] = []
        self._optimistic: bytes | None = None
        self._optimistic_until = -math.inf

    @property
    def slots(self) -> int:
        """Regular unchoke slots (the optimistic one comes on top)."""
        if self.upload_capacity is None:
            return UNKNOWN_CAPACITY_SLOTS
        per_slot = self.spread_per_slot_rate if self.spreading else self.per_slot_rate
        wanted = int(self.upload_capacity // per_slot)
        return max(MIN_SLOTS, min(wanted, MAX_SLOTS))

    @property
    def need_slots(self) -> int:
        """Regular slots that go to the peers furthest behind, not the fastest: all but
        `rate_slots` (a one-slot node keeps its slot for reciprocation)."""
        return max(0, self.slots - self.rate_slots)

    def next_deadline(self) -> float | None:
        """When the next rechoke is due (None before the first update)."""
        return self._next_rechoke

    def update(self, peers: Sequence[PeerRecord], now: float, rng: random.Random) -> ChokeDecision:
        """Decide who is unchoked. A full rechoke when one is due (O(p log p) for p peers),
        otherwise only vacancies are filled."""
        by_id: dict[bytes, PeerRecord] = {}
        for record in peers:
            if record.node_id in by_id:
                raise ValueError("a peer appears twice")
            by_id[record.node_id] = record
        self.spreading = self.seeding and _peers_early_on(peers)
        if self._next_rechoke is None or now >= self._next_rechoke:
            target = self._rechoke(peers, by_id, now, rng)
            self._next_rechoke = now + self.rechoke_interval_s
            choke = tuple(r.node_id for r in peers if not r.choked and r.node_id not in target)
        else:
            target, choke = self._fill(peers, by_id, now, rng)
        unchoke = tuple(r.node_id for r in peers if r.choked and r.node_id in target)
        return ChokeDecision(
            unchoke=unchoke,
            choke=choke,
            regular=tuple(self._regular),
            optimistic=self._optimistic,
            next_update=self._next_rechoke,
        )

    def _rechoke(
        self,
        peers: Sequence[PeerRecord],
        by_id: dict[bytes, PeerRecord],
        now: float,
        rng: random.Random,
    ) -> dict[bytes, None]:
        keep = self._optimistic
        if keep is not None:
            record = by_id.get(keep)
            if record is None or not record.interested or now >= self._optimistic_until:
                keep = None
        if keep is not None and by_id[keep].idle:
            keep = None
        candidates = [r for r in peers if r.interested and r.node_id != keep]
        ranked = self._rank([r for r in candidates if not r.idle], now, rng)
        ranked += self._rank([r for r in candidates if r.idle], now, rng)  # if slots are left
        self._regular = [r.node_id for r in ranked[: self.slots]]
        if keep is None:
            self._choose_optimistic(peers, now, rng)
        return self._target()

    def _fill(
        self,
        peers: Sequence[PeerRecord],
        by_id: dict[bytes, PeerRecord],
        now: float,
        rng: random.Random,
    ) -> tuple[dict[bytes, None], tuple[bytes, ...]]:
        """Fill vacancies, and hand idle peers' slots to peers waiting for one: the target
        and the idle peers to choke."""
        self._regular = [node for node in self._regular if node in by_id and by_id[node].interested]
        optimistic = self._optimistic
        if optimistic is not None and (optimistic not in by_id or not by_id[optimistic].interested):
            self._optimistic = None
        vacancies = max(0, self.slots - len(self._regular))
        waiting: list[PeerRecord] = []
        optimistic_idle = self._optimistic is not None and by_id[self._optimistic].idle
        if vacancies or optimistic_idle or any(by_id[node].idle for node in self._regular):
            taken = self._target()
            waiting = [r for r in peers if r.interested and r.choked and r.node_id not in taken]
            waiting = self._rank(waiting, now, rng)
        self._regular.extend(record.node_id for record in waiting[:vacancies])
        del waiting[:vacancies]
        choke: list[bytes] = []
        for index, node in enumerate(self._regular):
            if not waiting:
                break
            if by_id[node].idle:
                self._regular[index] = waiting.pop(0).node_id
                choke.append(node)
        if self._optimistic is None or (optimistic_idle and waiting):
            if self._optimistic is not None:
                choke.append(self._optimistic)
            self._choose_optimistic(peers, now, rng, exclude=choke)
        return self._target(), tuple(choke)

    def _target(self) -> dict[bytes, None]:
        target = dict.fromkeys(self._regular)
        if self._optimistic is not None:
            target[self._optimistic] = None
        return target

    def _rank(
        self, candidates: list[PeerRecord], now: float, rng: random.Random
    ) -> list[PeerRecord]:
        """Best first: while we download, the `need_slots` peers furthest behind (silent
        peers after those that spoke), then the others by rate. One random draw per
        candidate breaks ties (at start every rate is 0, and ordering by node id would
        favour the same peers forever)."""
        keyed: list[tuple[tuple[float, ...], float, PeerRecord]]
        if self.seeding:
            keyed = [(self._seed_key(r, now), rng.random(), r) for r in candidates]
            keyed.sort(key=lambda item: (item[0], item[1]))
            return [record for _, _, record in keyed]
        draws = {r.node_id: rng.random() for r in candidates}
        by_rate = sorted(candidates, key=lambda r: (-r.download_rate_from_them, draws[r.node_id]))
        if not self.need_slots:
            return by_rate
        weight = _need_weights(candidates)
        needy = sorted(
            candidates,
            key=lambda r: (r.silent, (r.pieces_held + 1) * weight[r.node_id], draws[r.node_id]),
        )
        needy = needy[: self.need_slots]
        first = {r.node_id for r in needy}
        return needy + [r for r in by_rate if r.node_id not in first]

    def _seed_key(self, record: PeerRecord, now: float) -> tuple[float, ...]:
        """Seeding order: fast peers whose turn is not over, then those waiting longest (never
        unchoked first), then peers whose turn is over."""
        if not record.choked:
            since = record.last_unchoked if record.last_unchoked is not None else now
            if now - since < self.seed_rotation_s:
                return (0, -record.upload_rate_to_them)
            return (2, -record.upload_rate_to_them)
        waited_since = record.last_unchoked if record.last_unchoked is not None else -math.inf
        return (1, waited_since)

    def _choose_optimistic(
        self,
        peers: Sequence[PeerRecord],
        now: float,
        rng: random.Random,
        exclude: Sequence[bytes] = (),
    ) -> None:
        """Among choked interested peers without a regular slot: `optimistic_choices` weighted
        draws, and the drawn peer with the fewest pieces wins (the first drawn on a tie)."""
        regular = dict.fromkeys([*self._regular, *exclude])
        candidates = [r for r in peers if r.interested and r.choked and r.node_id not in regular]
        self._optimistic = None
        if not candidates:
            return
        weights = [
            self.new_peer_weight if now - r.connected_at < self.new_peer_s else 1
            for r in candidates
        ]
        total = sum(weights)
        best: PeerRecord | None = None
        for _ in range(self.optimistic_choices):
            draw = rng.randrange(total)
            for record, weight in zip(candidates, weights, strict=True):
                if draw < weight:
                    if best is None or record.pieces_held < best.pieces_held:
                        best = record
                    break
                draw -= weight
        if best is not None:
            self._optimistic = best.node_id
        self._optimistic_until = now + self.optimistic_interval_s


def _peers_early_on(peers: Sequence[PeerRecord]) -> bool:
    """Does the median interested peer that told us its progress hold less than
    SPREAD_PROGRESS? False when none did."""
    shares = sorted(r.progress for r in peers if r.interested and r.progress is not None)
    return bool(shares) and shares[len(shares) // 2] < SPREAD_PROGRESS


def _need_weights(candidates: Sequence[PeerRecord]) -> dict[bytes, float]:
    """Each candidate's factor on its piece count for the need slots: the upload capacity it
    told us, held within NEED_CAPACITY_SPREAD of the median of those told, to the power
    NEED_CAPACITY_EXPONENT. A peer that did not say counts as that median; with none told,
    every factor is 1 (the plain count)."""
    told = sorted(r.upload_capacity for r in candidates if r.upload_capacity)
    if not told:
        return {r.node_id: 1.0 for r in candidates}
    middle = told[len(told) // 2]
    low, high = middle / NEED_CAPACITY_SPREAD, middle * NEED_CAPACITY_SPREAD
    return {
        r.node_id: min(high, max(low, r.upload_capacity or middle)) ** NEED_CAPACITY_EXPONENT
        for r in candidates
    }


class RateMeter:
    """Bytes per second over a sliding window, in one-second buckets.

    Memory is `window_s` integers whatever the traffic. The current second is partly filled, so
    the window holds between `window_s - 1` and `window_s` seconds of data; dividing by the full
    window under-reports by at most 1/window_s (5 %), which is the same for every peer and so
    does not change who wins a slot. A meter created with `start` divides by the time since then
    while that is shorter than the window, so a new connection's rate is not diluted.
    """

    __slots__ = ("_buckets", "_latest", "_start", "_sum", "_window", "total")

    def __init__(self, window_s: int = DEFAULT_RATE_WINDOW_S, *, start: float | None = None):
        if window_s < 1:
            raise ValueError("the window is at least one second")
        self._window = window_s
        self._buckets = [0] * window_s
        self._latest: int | None = None
        """The latest second seen: buckets hold that second and the `window_s - 1` before."""
        self._sum = 0
        """What the buckets hold together, so `rate` reads it rather than adding them up
        (the choke loop reads two meters per interested peer each round)."""
        self._start = start
        self.total = 0
        """Bytes ever added."""

    def add(self, nbytes: int, now: float) -> None:
        """O(1) (amortised: each second passed empties one bucket once)."""
        second = math.floor(now)
        self._advance(second)
        assert self._latest is not None
        if self._latest - second < self._window:  # an earlier second still in the window
            self._buckets[second % self._window] += nbytes
            self._sum += nbytes
        self.total += nbytes

    def rate(self, now: float) -> float:
        """Bytes/s over the window ending at `now`. O(1), amortised as `add`."""
        self._advance(math.floor(now))
        span = float(self._window)
        if self._start is not None:
            span = min(span, max(1.0, now - self._start))
        return self._sum / span

    def _advance(self, second: int) -> None:
        """Move the window's end to `second` (never back), emptying the seconds it leaves."""
        latest = self._latest
        if latest is not None and second <= latest:
            return
        if latest is None or second - latest >= self._window:
            self._buckets = [0] * self._window
            self._sum = 0
        else:
            buckets, window = self._buckets, self._window
            for passed in range(latest + 1, second + 1):
                index = passed % window
                self._sum -= buckets[index]
                buckets[index] = 0
        self._latest = second
