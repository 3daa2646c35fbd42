"""How many blocks to keep requested from one peer at a time.

Enough to keep the peer's upload busy across a round trip: its rate over the last seconds
times the measured round trip (at least `ROUND_TRIP_FLOOR`) plus `SLACK_SECONDS`, at least
`MIN_DEPTH` while there is plenty left to ask for. Too deep parks blocks at slow peers: a
block waits in a peer's queue for as long as the blocks in front of it take at that peer's
rate, while a faster peer could have sent it.

That matters when little is left to ask for. `PiecePicker.requestable_blocks` counts the
blocks some connected peer has that no request covers (in request units, as the engine sets
the picker up: a block with 16 KiB pieces); below `SCARCE_BLOCKS` the floor drops
to `SCARCE_MIN_DEPTH`, so each peer holds what its rate delivers in a round trip and no more.
This happens twice in a download: at the start, while the peers hold few pieces, and at the
end. A flash crowd (100 leechers, 16 KiB pieces, seeds 4 / 5 / 6) with the floor of 8
throughout finished at 1.347 / 1.342 / 1.381 of the Kumar-Ross bound, median 17.2-17.6 s;
with the floor at 2 below 64 requestable blocks 1.313 / 1.337 / 1.334, median 16.5-16.6 s
(below 32: 1.327 / 1.318 / 1.326). With the floor at 2 always, the median came sooner still
(16.3 s) but the last finish did not (1.369 / 1.346 / 1.366): fast downloaders pulled ahead
and the slow ones were left with the last pieces. A scarcity threshold relative to the peers
unchoking us (eight blocks each) gave 1.333 / 1.360 / 1.313. With three quarters of the
choker's slots by need besides (`node.choker`), 1,000 leechers (seed 1) finished at 1.359 of
the bound, median 18.2 s, against 1.467 and 19.3 s before both.

Pure functions, no state: the engine passes what it measured.
"""

from __future__ import annotations

import math
from typing import Final

from wire.merkle import BLOCK_SIZE

MIN_DEPTH: Final = 8
"""Blocks in flight to a peer at least while blocks are plentiful. More parks the last pieces
of a download at slow peers: with 16, a 100-leecher flash crowd of 64 KiB pieces had
stragglers at 1.4x the median (bound ratio 2.48 against 1.79 with 8)."""
SCARCE_MIN_DEPTH: Final = 2
"""The floor once fewer than `SCARCE_BLOCKS` can be requested: one block arriving while the
next is on its way."""
SCARCE_BLOCKS: Final = 64
"""Requestable request units below which the floor drops (see the module docstring): the
picker counts in units (`FileDownload.unit_blocks`), so 64 blocks (1 MiB) with 16 KiB pieces,
64 whole pieces with pieces of up to 1 MiB."""
MAX_DEPTH: Final = 256
SLACK_SECONDS: Final = 0.25
"""Added to the round trip: the time a request may wait for the peer's uploader."""
ROUND_TRIP_FLOOR: Final = 0.2
"""A shorter measured round trip counts as this. Until the round trip was measured
(`node.peer`: a Ping as the connection opens), 0.2 s stood in for every one; with the measured
20-150 ms instead, a flash crowd's pipes ran shallower and its tail longer: 100 leechers
finished at 1.234 / 1.234 / 1.219 / 1.210 / 1.205 of the bound (seeds 4-8, mean 1.220)
against 1.216 / 1.210 / 1.205 / 1.213 / 1.204 (1.210); with 0.1 s more slack instead of this
floor 1.213 at 100 but 1.268 at 1,000 leechers (seed 1) against 1.255, the last finisher
1.25 s behind the median instead of 1.05. With this floor: 1.218 / 1.222 / 1.206 / 1.231 /
1.201 (1.216) at 100 and 1.253 at 1,000 (seed 1). Links slower than this get the depth their
round trip needs."""


def request_depth(rate: float, round_trip: float, *, scarce: bool) -> int:
    """Blocks to keep in flight to a peer that sent us `rate` bytes/s lately, `round_trip`
    seconds away; `scarce` when fewer than `SCARCE_BLOCKS` units are left to request."""
    if rate < 0 or round_trip < 0:
        raise ValueError("rate and round trip cannot be negative")
    wanted = math.ceil(rate * (max(round_trip, ROUND_TRIP_FLOOR) + SLACK_SECONDS) / BLOCK_SIZE)
    floor = SCARCE_MIN_DEPTH if scarce else MIN_DEPTH
    return max(floor, min(MAX_DEPTH, wanted))
