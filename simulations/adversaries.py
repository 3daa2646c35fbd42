"""Nodes that break the rules on purpose, for scenarios that measure what a breach buys.

Real engines with one behaviour changed, so the rest of the protocol runs as it would; the
simulator only, never the node (`node` must not import `simulations`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import attrs

from node.swarm.engine import SwarmEngine
from node.swarm.session import Session
from wire.swarm import Bitfield, Have, HaveByAlias

HIDDEN_TYPES = (Have, HaveByAlias, Bitfield)
"""What a `HidingEngine` leaves unsaid while it downloads."""
TRICKLE_SECONDS: Final = 2.0
"""A `TricklingEngine` tells each peer of one piece this often: less than an honest peer, more
than the choker's silent rule (`node.swarm.session.SILENT_SECONDS`, 3 s) lets pass."""


class HidingEngine(SwarmEngine):
    """Says nothing of what it holds while it downloads (no Have, no Bitfield), so that every
    peer counts it as holding nothing: the peers furthest behind get the choker's need slots
    (`node.choker`), and this one always looks furthest behind. Nobody asks it for anything
    either (it offers nothing), so it also uploads nothing: a free-rider that looks needy.
    Once its downloads are complete it behaves."""

    async def _send(self, session: Session, *messages: Any) -> None:
        if self.files:
            messages = tuple(m for m in messages if not isinstance(m, HIDDEN_TYPES))
            if not messages:
                return
        await super()._send(session, *messages)


class TricklingEngine(SwarmEngine):
    """Tells each peer of one piece every `TRICKLE_SECONDS` while it downloads, and of nothing
    else: never silent, so the choker's silent rule does not put it last, yet it looks as far
    behind as a peer that speaks can. The liar the silent rule leaves open
    (`flash-crowd-tricklers`). Once its downloads are complete it behaves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trickled_at: dict[bytes, float] = {}
        """Per peer, when it was last told of a piece."""

    async def _send(self, session: Session, *messages: Any) -> None:
        if self.files:
            last = self.trickled_at.get(session.node_id, -math.inf)
            messages, told = trickle(messages, last, self.network.now())
            if told:
                self.trickled_at[session.node_id] = self.network.now()
            if not messages:
                return
        await super()._send(session, *messages)


def trickle(messages: Sequence[Any], last_told: float, now: float) -> tuple[tuple[Any, ...], bool]:
    """What a trickling liar sends of `messages` to a peer it last told of a piece at
    `last_told`: everything but Haves and Bitfields, and one piece of the first Have if
    `TRICKLE_SECONDS` have passed. Returns the messages and whether a piece was told."""
    kept: list[Any] = []
    told = False
    for message in messages:
        if not isinstance(message, HIDDEN_TYPES):
            kept.append(message)
        elif not told and now - last_told >= TRICKLE_SECONDS and not isinstance(message, Bitfield):
            kept.append(attrs.evolve(message, pieces=message.pieces[:1]))
            told = True
    return tuple(kept), told
