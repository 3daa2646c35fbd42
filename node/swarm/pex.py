"""Peer exchange, the choices: which connections get a Pex round now, and whom each is told of.

Sans-IO: the engine passes its sessions, the time and its random generator, and sends what
these return (`SwarmEngine._pex_loop`). Two rules keep PEX cheap for a node with many
connections, a seed above all:

* **Spread.** Every connection's first round falls due `PEX_FIRST_SECONDS` after it opened, so
  a seed that a thousand leechers reach at once owed a thousand Pex messages in the same
  second: ~1 MB through a 500 KB/s uplink, two seconds in which its Blocks queued behind them
  (the flash crowd at 1,000 leechers). At most `PEX_SESSIONS_PER_TICK` connections get a round
  per tick, the longest due first: ~20 KB/s.
* **A sample each.** A round adds at most `PEX_ADDED_PER_MESSAGE` contacts. Taking the first
  ones in connection order told every peer about the same few members, and a crowd's dials
  converged on them; each peer gets its own random sample of those it was not told of yet.
"""

from __future__ import annotations

import random
from collections.abc import Container, Iterable, Mapping
from typing import Final, TypeVar

from node.swarm.session import Session

PEX_SESSIONS_PER_TICK: Final = 20
"""Connections given a Pex round per PEX tick (a second) at most."""
PEX_ADDED_PER_MESSAGE: Final = 10
"""Contacts one Pex message adds (BEP 11 and our decoder allow 50): the rest follow in later
rounds. In a 100-leecher flash crowd (three seeds) 25 instead of 50 cut PEX bytes from 8.8 to
5.0 MB and the bound ratio from 1.68 to 1.63 on average. Later, with Haves to choked peers
batched, PEX was the largest control traffic left (4.5 KB/s per node, whatever its uplink);
10 instead of 25 halved it: 1,000 leechers (seed 1) 1.341 -> 1.322 of the bound, median
17.46 -> 17.40 s, 100 leechers (seeds 4-8) the same mean (1.280 against 1.278), the median
0.04-0.14 s sooner. A crowd's newcomer still learns plenty: ten per connection."""

Contact = TypeVar("Contact")


def due_for_pex(
    sessions: Iterable[Session], now: float, limit: int = PEX_SESSIONS_PER_TICK
) -> list[Session]:
    """Sessions whose Pex round is due at `now`: the longest due first, at most `limit`."""
    due = [session for session in sessions if session.next_pex_at() <= now]
    if len(due) > limit:
        due.sort(key=Session.next_pex_at)  # stable: equal times keep the caller's order
        del due[limit:]
    return due


def contacts_to_add(
    members: Mapping[bytes, Contact],
    told: Container[bytes],
    recipient: bytes,
    rng: random.Random,
    limit: int = PEX_ADDED_PER_MESSAGE,
) -> list[Contact]:
    """Members (node id → contact) the recipient was not told of, a random `limit` of them
    if there are more, in the order of `members`."""
    fresh = [
        contact
        for node_id, contact in members.items()
        if node_id != recipient and node_id not in told
    ]
    if len(fresh) <= limit:
        return fresh
    chosen = set(rng.sample(range(len(fresh)), limit))
    return [contact for index, contact in enumerate(fresh) if index in chosen]
