"""The iterative Kademlia lookup, as a sans-IO state machine.

The caller asks `next_queries(now)` whom to query, sends the queries, and reports each
outcome with `on_response` (with the contacts the node returned) or `on_failure`; it calls
`tick(now)` at `next_deadline()`. The machine never sends anything or reads a clock.

* `alpha` queries are in flight at once. A query unanswered after `soft_timeout` stops holding
  its slot (its node is marked *slow*) so the lookup moves on without waiting for one lost
  datagram or one far peer; a late answer is still used. The RPC layer's hard timeout reports
  the query as failed.
* The lookup is done when the `k` closest candidates that have not failed have all answered
  (slow ones do not hold it up), when nothing is left to ask, or when `stop()` is called (a
  provider lookup that found enough providers).
* With `paths > 1` it runs S/Kademlia's disjoint paths: the first candidates are dealt out to
  the paths, a contact a path learns stays on that path, and no node is queried by two paths,
  so a few malicious nodes can capture at most the paths that meet them.
* Candidates are bounded (`MAX_CANDIDATES`, the closest kept), whatever the responses say.

Statistics for the evidence: `rpcs` sent, and `hops`: how many responses deep the closest
answering node was found (a node from our own table is at hop 1).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

import attrs

from dht.contacts import Contact
from dht.ids import id_to_int

ALPHA: Final = 3
K: Final = 20
SOFT_TIMEOUT_SECONDS: Final = 0.6
MAX_CANDIDATES: Final = 200


class State(enum.Enum):
    NEW = "new"
    WAITING = "waiting"
    SLOW = "slow"
    RESPONDED = "responded"
    FAILED = "failed"


@attrs.define(slots=True, eq=False)
class Candidate:
    contact: Contact
    distance: int
    path: int
    hop: int
    state: State = State.NEW
    sent_at: float = 0.0


class Lookup:
    def __init__(
        self,
        target: bytes,
        seeds: Iterable[Contact],
        *,
        now: float,
        own_id: bytes,
        k: int = K,
        alpha: int = ALPHA,
        paths: int = 1,
        soft_timeout: float = SOFT_TIMEOUT_SECONDS,
    ) -> None:
        if paths < 1 or alpha < 1 or k < 1:
            raise ValueError("k, alpha and paths must be positive")
        self.target = target
        self._goal = id_to_int(target)
        self.own_id = own_id
        self.k = k
        self.alpha = alpha
        self.paths = paths
        self.soft_timeout = soft_timeout
        self.started_at = now
        self.finished_at: float | None = None
        self.rpcs = 0
        self._stopped = False
        self._candidates: dict[bytes, Candidate] = {}
        ordered = sorted(
            {c.node_id: c for c in seeds if c.node_id != own_id}.values(),
            key=lambda c: id_to_int(c.node_id) ^ self._goal,
        )
        for index, contact in enumerate(ordered[:MAX_CANDIDATES]):
            self._add(contact, path=index % paths, hop=1)

    # -- driving --------------------------------------------------------------------------

    def next_queries(self, now: float) -> list[Contact]:
        """Contacts to query now (marks them in flight)."""
        if self.done:
            return []
        chosen: list[Contact] = []
        for path in range(self.paths):
            in_flight = sum(
                c.state is State.WAITING for c in self._candidates.values() if c.path == path
            )
            for candidate in self._active_closest(path):
                if in_flight >= self.alpha:
                    break
                if candidate.state is State.NEW:
                    candidate.state = State.WAITING
                    candidate.sent_at = now
                    self.rpcs += 1
                    in_flight += 1
                    chosen.append(candidate.contact)
        self._check_done(now)
        return chosen

    def on_response(self, node_id: bytes, contacts: Iterable[Contact], now: float) -> None:
        candidate = self._candidates.get(node_id)
        if candidate is None or candidate.state in (State.NEW, State.RESPONDED, State.FAILED):
            return
        candidate.state = State.RESPONDED
        for contact in contacts:
            if contact.node_id != self.own_id and contact.node_id not in self._candidates:
                self._add(contact, path=candidate.path, hop=candidate.hop + 1)
        self._prune()
        self._check_done(now)

    def on_failure(self, node_id: bytes, now: float) -> None:
        candidate = self._candidates.get(node_id)
        if candidate is not None and candidate.state in (State.WAITING, State.SLOW):
            candidate.state = State.FAILED
            self._check_done(now)

    def tick(self, now: float) -> None:
        """Mark queries older than the soft timeout slow (freeing their slots)."""
        for candidate in self._candidates.values():
            # The same expression as next_deadline(): `now - sent_at >= timeout` can be false
            # at the very deadline in floating point, and the caller would spin forever.
            if candidate.state is State.WAITING and candidate.sent_at + self.soft_timeout <= now:
                candidate.state = State.SLOW
        self._check_done(now)

    def next_deadline(self) -> float | None:
        waiting = [c.sent_at for c in self._candidates.values() if c.state is State.WAITING]
        return min(waiting) + self.soft_timeout if waiting else None

    def stop(self, now: float) -> None:
        """Finish early (the caller has what it came for)."""
        self._stopped = True
        self._check_done(now)

    # -- results --------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def results(self) -> list[Contact]:
        """The k closest nodes that answered, closest first."""
        answered = [c for c in self._candidates.values() if c.state is State.RESPONDED]
        answered.sort(key=lambda c: c.distance)
        return [c.contact for c in answered[: self.k]]

    @property
    def hops(self) -> int:
        answered = [c for c in self._candidates.values() if c.state is State.RESPONDED]
        return min(answered, key=lambda c: c.distance).hop if answered else 0

    @property
    def pending(self) -> list[Contact]:
        """Queries still out (waiting or slow): the caller may cancel them when done."""
        return [
            c.contact for c in self._candidates.values() if c.state in (State.WAITING, State.SLOW)
        ]

    # -- internals ------------------------------------------------------------------------

    def _add(self, contact: Contact, *, path: int, hop: int) -> None:
        self._candidates[contact.node_id] = Candidate(
            contact, id_to_int(contact.node_id) ^ self._goal, path, hop
        )

    def _active_closest(self, path: int) -> list[Candidate]:
        """The k closest candidates of `path` still in play: failed and slow nodes stand
        aside (a slow node that answers late comes back in)."""
        active = [
            c
            for c in self._candidates.values()
            if c.path == path and c.state not in (State.FAILED, State.SLOW)
        ]
        active.sort(key=lambda c: c.distance)
        return active[: self.k]

    def _prune(self) -> None:
        if len(self._candidates) <= MAX_CANDIDATES:
            return
        keep = sorted(self._candidates.values(), key=lambda c: c.distance)[:MAX_CANDIDATES]
        # Never forget a node we asked: its answer must still find its candidate.
        asked = [c for c in self._candidates.values() if c.state is not State.NEW]
        self._candidates = {c.contact.node_id: c for c in (*keep, *asked)}

    def _check_done(self, now: float) -> None:
        if self.finished_at is not None:
            return
        if self._stopped or all(self._path_done(path) for path in range(self.paths)):
            self.finished_at = now

    def _path_done(self, path: int) -> bool:
        """Done when every one of the k closest nodes in play has answered."""
        return all(c.state is State.RESPONDED for c in self._active_closest(path))
