"""Nodes that break the rules on purpose, for scenarios that measure what a breach buys.

Real engines with one behaviour changed, so the rest of the protocol runs as it would; the
simulator only, never the node (`node` must not import `simulations`).
"""

from __future__ import annotations

from typing import Any

from node.swarm.engine import SwarmEngine
from node.swarm.session import Session
from wire.swarm import Bitfield, Have, HaveByAlias

HIDDEN_TYPES = (Have, HaveByAlias, Bitfield)
"""What a `HidingEngine` leaves unsaid while it downloads."""


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
