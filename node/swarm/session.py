"""Per-connection swarm state: one `Session` per remote node, whatever containers it carries.

Choking and interest are per connection (one unchoke serves every container), as are the
rate meters the choker reads, the requests in flight, the upload queue and the strikes a peer
earns by sending blocks that do not verify.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import attrs
import trio

from node.choker import RateMeter
from node.peer import PeerConnection
from node.swarm.reveal import PeerReveal
from wire.index import IndexExchange
from wire.swarm import HaveContainer, Request

MAX_QUEUED_UPLOADS: Final = 512
"""Requests from one peer waiting to be served; beyond this it gets Reject(overloaded)."""
PEX_FIRST_SECONDS: Final = 3.0
"""The first Pex on a connection goes this soon, so a flash crowd meshes in seconds."""
PEX_PERIOD_SECONDS: Final = 60.0
"""After the first, at most one round of Pex per connection this often (BEP 11)."""
STRIKES_TO_BAN: Final = 3
"""Blocks that failed their proof before a peer is disconnected and banned."""


@attrs.define(eq=False)
class Session:
    peer: PeerConnection
    index: IndexExchange
    connected_at: float
    am_choking: bool = True
    am_interested: bool = False
    peer_choking: bool = True
    peer_interested: bool = False
    last_unchoked: float | None = None
    in_flight: dict[tuple[bytes, int], float] = attrs.Factory(dict)
    """(root, file block) → when we asked, for our requests to this peer."""
    runs: dict[tuple[bytes, int], int] = attrs.Factory(dict)
    """(root, first file block) → blocks asked for in that Request, to release them all on a
    Reject (every block of a run is also in `in_flight`)."""
    useful: dict[bytes, int] = attrs.Factory(dict)
    """Roots we are fetching → how many pieces we lack this peer has (> 0). Interest is
    whether any is left, so a peer that has nothing more for us gets NotInterested and its
    unchoke goes to someone it can help."""
    roots_seen: set[bytes] = attrs.Factory(set)
    """Roots this peer told us anything about (they get our Have messages)."""
    uploads: deque[Request] = attrs.Factory(deque)
    upload_wakeup: trio.Event = attrs.Factory(trio.Event)
    downloaded: RateMeter = attrs.Factory(RateMeter)
    uploaded: RateMeter = attrs.Factory(RateMeter)
    bytes_down: int = 0
    bytes_up: int = 0
    strikes: int = 0
    holdings: dict[bytes, HaveContainer] = attrs.Factory(dict)
    """What the peer confirmed holding of containers we want (replayed once the manifest,
    and so the file roots, are known)."""
    manifests: dict[bytes, int] = attrs.Factory(dict)
    """Manifests we are fetching from this peer → the offset asked for."""
    told_held: set[bytes] = attrs.Factory(set)
    """Containers whose held pieces we sent this peer unasked (it showed us part of one)."""
    reveals: dict[bytes, PeerReveal] = attrs.Factory(dict)
    """Files we seed to this peer a window at a time (`node.swarm.reveal`), by root."""
    pex_told: dict[bytes, set[bytes]] = attrs.Factory(dict)
    """Per container, the swarm members (node ids) our Pex messages listed to this peer."""
    last_pex: float | None = None

    def next_pex_at(self) -> float:
        if self.last_pex is None:
            return self.connected_at + PEX_FIRST_SECONDS
        return self.last_pex + PEX_PERIOD_SECONDS

    @property
    def node_id(self) -> bytes:
        return self.peer.node_id

    def queue_upload(self, request: Request) -> bool:
        if len(self.uploads) >= MAX_QUEUED_UPLOADS:
            return False
        self.uploads.append(request)
        self.upload_wakeup.set()
        return True

    def cancel_upload(self, root: bytes, block_index: int) -> None:
        for request in self.uploads:
            if request.root == root and request.block_index == block_index:
                self.uploads.remove(request)
                return
