"""The index exchange: telling a peer what we hold and want, at a cost proportional to changes.

Two nodes on one connection may share any of hundreds of thousands of containers. Listing every
held id on each connection (32 bytes each: 3.2 MB for 100,000) and again on every change does
not scale, so the exchange works like this (byte-exact rules in docs/protocol.md, 5.4):

* When a connection opens, each side sends one `Summary`: a Bloom filter (`wire.bloom`) of the
  container ids it holds, ~1.2 bytes per id at 1 % false positives (~120 KB for 100,000).
* Afterwards it sends only **increments**: `Holding(added, removed)`. A Bloom filter cannot
  delete, and the receiver keeps the increments in exact sets, so once they grow too large
  (removals beyond a quarter of the summarised count, or additions beyond the count itself;
  never fewer than 1,024 of either and never more than 65,536) the sender sends a fresh Summary
  instead, which resets them. Both sides compute the same limits (`added_limit`,
  `removed_limit`); a peer exceeding them is breaking the protocol. Increments cost ~34 bytes
  per change and a refresh comes only after changes worth more bytes than it, so the cost of
  a change stays proportional to the change.
* `Wants(added, removed)` lists the containers we are downloading, but only those the peer
  may hold (per its Summary and increments), and only once the peer's Summary has arrived:
  a want sent to a node that certainly does not hold the container is wasted bytes. When the
  peer's increments add a container we want, we send the want then. The exception: while we
  look for a container's metadata (at most MAX_EAGER_WANTS at a time) its want goes to every
  peer at once, so that whoever comes to hold it first answers without a round of
  increments and wants. The receiver keeps the wants (up to 65,536) even for containers it
  does not hold, and says so when it gets one.
* A want for a container the receiver holds is answered by the engine with `HaveContainer`;
  this module reports it as a `PeerWants` event (also later, when we come to hold something
  the peer wanted). A `HaveContainer` for something we want becomes a `PeerHolds` event.

`LocalIndex` is our side, one per node: held ids and wants, and the Summary for the current
version, built once and shared by every connection. `IndexExchange` is one connection's state
machine (sans-IO, like h11's `Connection`): feed it the peer's index messages with
`receive()`, collect what to send with `flush()` (call it after a batch of changes: that is
what batches increments), read `take_events()`, and ask `peer_may_hold()` /
`peer_wants_held()`. It never does I/O or reads a clock; ids are always iterated in insertion
order, never from a set, so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from wire.bloom import BloomFilter
from wire.errors import LocalProtocolError, ProtocolError
from wire.swarm import (
    ID_SIZE,
    MAX_IDS_PER_MESSAGE,
    MAX_SUMMARY_BLOOM_BYTES,
    HaveContainer,
    Holding,
    IndexMessage,
    Summary,
    Wants,
)

DEFAULT_FALSE_POSITIVE_RATE: Final = 0.01
REFRESH_FLOOR: Final = 1024
"""Increments tolerated since a Summary whatever its count, so a small set is not resent on
every change (1,024 increments ~ 35 KB)."""
MAX_INCREMENTS: Final = 65_536
"""Hard cap on each of the added/removed sets a receiver keeps per connection (~6 MB at
worst), whatever count the peer claims."""
MAX_WANTS_PER_PEER: Final = 65_536
"""Wants a receiver keeps per connection; a sender with more defers the rest."""
MAX_EAGER_WANTS: Final = 64
"""Wants sent to every peer, not only to those that may hold the container (rule 4's
exception, docs/protocol.md 5.4): containers whose metadata we are still looking for. More
are wanted the usual way."""


def added_limit(summary_count: int) -> int:
    """Most ids a peer may have added since its last Summary of `summary_count` ids."""
    return min(MAX_INCREMENTS, max(REFRESH_FLOOR, summary_count))


def removed_limit(summary_count: int) -> int:
    """Most ids a peer may have removed since its last Summary of `summary_count` ids."""
    return min(MAX_INCREMENTS, max(REFRESH_FLOOR, summary_count // 4))


@attrs.frozen
class PeerWants:
    """The peer wants these containers, which we hold: answer each with a HaveContainer."""

    container_ids: tuple[bytes, ...]


@attrs.frozen
class PeerHolds:
    """The peer confirmed it holds a container we want, and what of it."""

    container_id: bytes
    have: HaveContainer


IndexEvent = PeerWants | PeerHolds


def _checked_ids(ids: Iterable[bytes]) -> list[bytes]:
    result = list(ids)
    for item in result:
        if type(item) is not bytes or len(item) != ID_SIZE:
            raise ValueError(f"a container id is {ID_SIZE} bytes, got {item!r:.80}")
    return result


def _toggle(pending: dict[bytes, bool], item: bytes, added: bool) -> None:
    """Record a net change: an add and a remove of the same id since the last flush cancel."""
    if item in pending:
        del pending[item]
    else:
        pending[item] = added


class LocalIndex:
    """Our held containers and our wants, shared by every connection's `IndexExchange`.

    Changes made here reach every attached exchange at once, so the engine makes each change
    once, not once per connection, and 100,000 held ids live in memory once. The Summary
    (and its Bloom filter, the expensive part) is built at most once per version.
    """

    def __init__(
        self,
        held: Iterable[bytes] = (),
        wants: Iterable[bytes] = (),
        *,
        false_positive_rate: float = DEFAULT_FALSE_POSITIVE_RATE,
    ) -> None:
        if not 0.0 < false_positive_rate < 1.0:
            raise ValueError("the false-positive rate must be strictly between 0 and 1")
        self.false_positive_rate = false_positive_rate
        self._held: dict[bytes, None] = dict.fromkeys(_checked_ids(held))
        self._wants: dict[bytes, None] = dict.fromkeys(_checked_ids(wants))
        self._eager: dict[bytes, None] = {}
        """Wants that go to every peer (`want(everywhere=True)`), at most MAX_EAGER_WANTS."""
        self._version = 0
        self._summary: Summary | None = None
        self._exchanges: list[IndexExchange] = []

    @property
    def version(self) -> int:
        """Incremented by every change to the held set; a Summary carries it."""
        return self._version

    @property
    def held_count(self) -> int:
        return len(self._held)

    def holds(self, container_id: bytes) -> bool:
        return container_id in self._held

    def wants(self, container_id: bytes) -> bool:
        return container_id in self._wants

    def held_ids(self) -> tuple[bytes, ...]:
        return tuple(self._held)

    def wanted_ids(self) -> tuple[bytes, ...]:
        return tuple(self._wants)

    def wanted_everywhere(self, container_id: bytes) -> bool:
        return container_id in self._eager

    def eager_ids(self) -> tuple[bytes, ...]:
        return tuple(self._eager)

    def held_added(self, ids: Iterable[bytes]) -> None:
        """We now hold (some of) these containers: we can serve at least part of them."""
        new = []
        for item in _checked_ids(ids):
            if item not in self._held:
                self._held[item] = None
                new.append(item)
        if new:
            self._version += len(new)
            for exchange in self._exchanges:
                exchange._on_held_changed(new, added=True)

    def held_removed(self, ids: Iterable[bytes]) -> None:
        gone = []
        for item in _checked_ids(ids):
            if item in self._held:
                del self._held[item]
                gone.append(item)
        if gone:
            self._version += len(gone)
            for exchange in self._exchanges:
                exchange._on_held_changed(gone, added=False)

    def want(self, ids: Iterable[bytes], *, everywhere: bool = False) -> None:
        """We are downloading these containers. `everywhere`: we are still looking for their
        metadata, so the want goes to every peer, not only to those that may hold them: a peer
        that comes to hold one (a download of it got its metadata) answers at once, where
        otherwise its Holding increment would have to reach us and our want go back first,
        on every hop of the metadata through a starting crowd (until `settle`)."""
        new = []
        for item in _checked_ids(ids):
            fresh = item not in self._wants
            if fresh:
                self._wants[item] = None
            if everywhere and item not in self._eager and len(self._eager) < MAX_EAGER_WANTS:
                self._eager[item] = None
                fresh = True
            if fresh:
                new.append(item)
        for exchange in self._exchanges:
            exchange._on_want(new)

    def settle(self, ids: Iterable[bytes]) -> None:
        """The metadata of these containers is in: from now on their wants go only to peers
        that may hold them (those already sent stand: a peer answers when it holds one)."""
        for item in _checked_ids(ids):
            self._eager.pop(item, None)

    def unwant(self, ids: Iterable[bytes]) -> None:
        gone = []
        for item in _checked_ids(ids):
            self._eager.pop(item, None)
            if item in self._wants:
                del self._wants[item]
                gone.append(item)
        for exchange in self._exchanges:
            exchange._on_unwant(gone)

    def summary(self) -> Summary:
        """The Summary of what we hold now, sized for the current count (cached per version).
        The filter's tweak is the version's low 32 bits, so consecutive summaries use
        different hash functions and a false positive does not persist."""
        if self._summary is None or self._summary.version != self._version:
            bloom = BloomFilter.for_capacity(
                len(self._held),
                self.false_positive_rate,
                tweak=self._version & 0xFFFFFFFF,
                max_bytes=MAX_SUMMARY_BLOOM_BYTES,
            )
            bloom.update(self._held)
            self._summary = Summary(
                version=self._version,
                count=len(self._held),
                bloom=bloom.to_bytes(),
                hashes=bloom.hash_count,
                tweak=bloom.tweak,
            )
        return self._summary

    def _attach(self, exchange: IndexExchange) -> None:
        self._exchanges.append(exchange)

    def _detach(self, exchange: IndexExchange) -> None:
        self._exchanges = [other for other in self._exchanges if other is not exchange]


class IndexExchange:
    """One connection's index exchange (see the module docstring for the rules).

    Creating it attaches it to `local` and schedules our Summary; `close()` detaches it.
    Raises `ProtocolError` from `receive()` when the peer breaks the rules (close the
    connection), `LocalProtocolError` when used after `close()`.
    """

    def __init__(self, local: LocalIndex) -> None:
        self._local = local
        self._closed = False
        # What the peer knows of our held set: the last Summary's count plus the increments it
        # will have after the next flush (`_view_*`, mirroring its sets exactly), and the net
        # changes not yet sent.
        self._summary_due = True
        self._summary_count = 0
        self._view_added: set[bytes] = set()
        self._view_removed: set[bytes] = set()
        self._holding_pending: dict[bytes, bool] = {}
        # What the peer will believe we want after the next flush, and the net changes.
        self._wants_view: dict[bytes, None] = {}
        self._wants_pending: dict[bytes, bool] = {}
        self._wants_deferred = False
        # What the peer told us.
        self._peer_summary: Summary | None = None
        self._peer_filter: BloomFilter | None = None
        self._peer_added: set[bytes] = set()
        self._peer_removed: set[bytes] = set()
        self._peer_wants: dict[bytes, None] = {}
        self._events: list[IndexEvent] = []
        local._attach(self)
        self._offer_wants(local.eager_ids())

    # -- queries -------------------------------------------------------------------------------

    @property
    def has_peer_summary(self) -> bool:
        return self._peer_summary is not None

    def peer_may_hold(self, container_id: bytes) -> bool:
        """True if the peer holds the container, or (rarely) a Bloom false positive. False
        before the peer's Summary arrived, and whenever the peer certainly does not hold it."""
        if self._peer_filter is None:
            return False
        if container_id in self._peer_added:
            return True
        if container_id in self._peer_removed:
            return False
        return container_id in self._peer_filter

    def peer_wants_held(self) -> tuple[bytes, ...]:
        """The containers the peer wants that we hold, in the order it asked for them."""
        holds = self._local.holds
        return tuple(item for item in self._peer_wants if holds(item))

    def take_events(self) -> list[IndexEvent]:
        events, self._events = self._events, []
        return events

    # -- output --------------------------------------------------------------------------------

    def flush(self) -> list[Summary | Holding | Wants]:
        """The messages to send now: a Summary when one is due, else our held-set increments,
        then our want changes, each split into messages of at most 4,096 ids."""
        if self._closed:
            return []
        out: list[Summary | Holding | Wants] = []
        if self._summary_due:
            summary = self._local.summary()
            out.append(summary)
            self._summary_due = False
            self._summary_count = summary.count
            self._clear_holding_state()
        elif self._holding_pending:
            out.extend(self._holding_messages())
        if self._wants_deferred and len(self._wants_view) < MAX_WANTS_PER_PEER:
            self._wants_deferred = False
            self._offer_wants(self._local.wanted_ids())
        if self._wants_pending:
            out.extend(self._wants_messages())
        return out

    def close(self) -> None:
        """Detach from the local index; later calls to `flush` return nothing."""
        if not self._closed:
            self._closed = True
            self._local._detach(self)

    def _holding_messages(self) -> list[Holding]:
        # Ops that shrink the peer's sets (an add undoing a removal, a removal undoing an add)
        # go first, so that the peer's sets only grow towards their final sizes, which are
        # within the limits: it checks them after every message.
        shrinking: list[tuple[bytes, bool]] = []
        growing: list[tuple[bytes, bool]] = []
        for item, added in self._holding_pending.items():
            grows = item in self._view_added if added else item in self._view_removed
            (growing if grows else shrinking).append((item, added))
        self._holding_pending = {}
        ops = shrinking + growing
        messages = []
        for start in range(0, len(ops), MAX_IDS_PER_MESSAGE):
            chunk = ops[start : start + MAX_IDS_PER_MESSAGE]
            messages.append(
                Holding(
                    added=tuple(item for item, added in chunk if added),
                    removed=tuple(item for item, added in chunk if not added),
                )
            )
        return messages

    def _wants_messages(self) -> list[Wants]:
        # Removals first, so the peer's count of our wants never overshoots the cap.
        pending = self._wants_pending.items()
        ops = [op for op in pending if not op[1]] + [op for op in pending if op[1]]
        self._wants_pending = {}
        messages = []
        for start in range(0, len(ops), MAX_IDS_PER_MESSAGE):
            chunk = ops[start : start + MAX_IDS_PER_MESSAGE]
            messages.append(
                Wants(
                    added=tuple(item for item, added in chunk if added),
                    removed=tuple(item for item, added in chunk if not added),
                )
            )
        return messages

    # -- our changes (called by LocalIndex) ----------------------------------------------------

    def _clear_holding_state(self) -> None:
        self._view_added = set()
        self._view_removed = set()
        self._holding_pending = {}

    def _on_held_changed(self, ids: list[bytes], *, added: bool) -> None:
        if not self._summary_due:
            view_added, view_removed = self._view_added, self._view_removed
            max_added = added_limit(self._summary_count)
            max_removed = removed_limit(self._summary_count)
            for item in ids:
                _toggle(self._holding_pending, item, added)
                if added:
                    if item in view_removed:
                        view_removed.discard(item)
                    else:
                        view_added.add(item)
                elif item in view_added:
                    view_added.discard(item)
                else:
                    view_removed.add(item)
                if len(view_added) > max_added or len(view_removed) > max_removed:
                    # Cheaper (and required) to start over with a fresh Summary.
                    self._summary_due = True
                    self._clear_holding_state()
                    break
        if added and self._peer_wants:
            wanted = tuple(item for item in ids if item in self._peer_wants)
            if wanted:
                self._events.append(PeerWants(wanted))

    def _on_want(self, ids: list[bytes]) -> None:
        self._offer_wants(ids)

    def _on_unwant(self, ids: list[bytes]) -> None:
        for item in ids:
            if item in self._wants_view:
                del self._wants_view[item]
                _toggle(self._wants_pending, item, False)

    def _offer_wants(self, ids: Iterable[bytes]) -> None:
        """Tell the peer about those of `ids` it may hold (or that we want everywhere) and
        it does not know we want."""
        if self._closed:
            return
        everywhere = self._local.wanted_everywhere
        for item in ids:
            if item in self._wants_view or not (self.peer_may_hold(item) or everywhere(item)):
                continue
            if len(self._wants_view) >= MAX_WANTS_PER_PEER:
                self._wants_deferred = True
                return
            self._wants_view[item] = None
            _toggle(self._wants_pending, item, True)

    # -- input ---------------------------------------------------------------------------------

    def receive(self, message: IndexMessage) -> None:
        """Feed one index message from the peer. Raises ProtocolError if it breaks the rules."""
        if self._closed:
            raise LocalProtocolError("IndexExchange used after close()")
        if isinstance(message, Summary):
            self._receive_summary(message)
            return
        if self._peer_summary is None:
            raise ProtocolError(f"ks.swarm: {type(message).__name__} before the peer's Summary")
        if isinstance(message, Holding):
            self._receive_holding(message)
        elif isinstance(message, Wants):
            self._receive_wants(message)
        elif isinstance(message, HaveContainer):
            if self._local.wants(message.container_id):
                self._events.append(PeerHolds(message.container_id, message))
        else:
            raise LocalProtocolError(f"{type(message).__name__} is not an index message")

    def _receive_summary(self, summary: Summary) -> None:
        previous = self._peer_summary
        if previous is not None and summary.version <= previous.version:
            raise ProtocolError(
                f"ks.swarm: Summary version {summary.version} does not follow {previous.version}"
            )
        self._peer_filter = summary.filter()
        self._peer_summary = summary
        self._peer_added = set()
        self._peer_removed = set()
        self._offer_wants(self._local.wanted_ids())

    def _receive_holding(self, holding: Holding) -> None:
        assert self._peer_summary is not None
        added_set, removed_set = self._peer_added, self._peer_removed
        for item in holding.added:
            if item in removed_set:
                removed_set.discard(item)
            else:
                added_set.add(item)
        for item in holding.removed:
            if item in added_set:
                added_set.discard(item)
            else:
                removed_set.add(item)
        count = self._peer_summary.count
        if len(added_set) > added_limit(count) or len(removed_set) > removed_limit(count):
            raise ProtocolError(
                f"ks.swarm: {len(added_set)} added / {len(removed_set)} removed since a Summary "
                f"of {count} ids; at most {added_limit(count)} / {removed_limit(count)} "
                "before a new Summary"
            )
        if holding.added:
            self._offer_wants(item for item in holding.added if self._local.wants(item))

    def _receive_wants(self, wants: Wants) -> None:
        for item in wants.removed:
            self._peer_wants.pop(item, None)
        fresh = []
        for item in wants.added:
            if item not in self._peer_wants:
                if len(self._peer_wants) >= MAX_WANTS_PER_PEER:
                    raise ProtocolError(f"ks.swarm: more than {MAX_WANTS_PER_PEER} wants")
                self._peer_wants[item] = None
                if self._local.holds(item):
                    fresh.append(item)
        if fresh:
            self._events.append(PeerWants(tuple(fresh)))
