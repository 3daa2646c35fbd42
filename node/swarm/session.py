"""Per-connection swarm state: one `Session` per remote node, whatever containers it carries.

Choking and interest are per connection (one unchoke serves every container), as are the
rate meters the choker reads, the requests in flight, the upload queue and the strikes a peer
earns by sending blocks that do not verify.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

import attrs
import trio

from node.choker import RateMeter
from node.peer import PeerConnection
from node.swarm.reveal import PeerReveal
from wire.aliases import IncomingAliases, OutgoingAliases
from wire.index import IndexExchange
from wire.swarm import Bitfield, Have, HaveAll, HaveContainer, HaveNone, Request

MAX_QUEUED_UPLOADS: Final = 512
"""Requests from one peer waiting to be served; beyond this it gets Reject(overloaded)."""
PEX_FIRST_SECONDS: Final = 3.0
"""The first Pex on a connection goes this soon, so a flash crowd meshes in seconds."""
PEX_PERIOD_SECONDS: Final = 60.0
"""After the first, at most one round of Pex per connection this often (BEP 11)."""
RECENT_RATE_SECONDS: Final = 3
IDLE_UNCHOKE_SECONDS: Final = 2.0
"""An unchoked peer that asks nothing of us this long gives its slot to a waiting one
(`node.choker`, idle slots)."""
ALL_PIECES: Final = 1 << 32
"""What a HaveAll counts as in `Session.pieces_held` (more than any file has)."""
SILENT_SECONDS: Final = 3.0
"""A peer that has told us nothing of what it holds (no Have, Bitfield or HaveAll) for this
long, connected longer than that, is *silent*: the choker's need slots go to it only after
every peer that spoke (`node.choker`). An honest downloader tells us within about a second of
getting a piece we lack (Haves to a peer that chokes it wait at most a second); one that
hides what it holds, to look furthest behind and draw need slots, is silent."""
EARLY_ROOTS: Final = 64
"""Files whose availability a peer may tell us before we have their metadata (kept)."""
EARLY_PIECES: Final = 1 << 16
"""Pieces named in Haves kept that way, per peer, over all those files."""
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
    interest_expected: bool = False
    """We sent Haves of pieces it lacks while a slot of ours was free: it will be interested
    (`SwarmEngine._expect_interest`). Cleared when it says whether it is, or we choke it."""
    last_unchoked: float | None = None
    last_asked: float | None = None
    """When the peer last queued a request with us (its unchoke may be going unused)."""
    in_flight: dict[tuple[bytes, int], tuple[float, int]] = attrs.Factory(dict)
    """(root, first file block) → (when we asked, blocks asked for), for our requests to this
    peer (one per request unit). Change it through `track` / `untrack`."""
    blocks_in_flight: int = 0
    useful: dict[bytes, int] = attrs.Factory(dict)
    """Roots we are fetching → how many pieces we lack this peer has (> 0). Interest is
    whether any is left, so a peer that has nothing more for us gets NotInterested and its
    unchoke goes to someone it can help."""
    pieces_held: dict[bytes, int] = attrs.Factory(dict)
    """Root → pieces the peer told us it holds (Bitfield, Have; HaveAll counts as
    `ALL_PIECES`): how far along it is, for the choker."""
    pieces_held_total: int = 0
    last_told: float | None = None
    """When the peer last told us of pieces it holds (Have, Bitfield, HaveAll); None if never."""
    peer_upload_capacity: float | None = None
    """Bytes/s the peer says its uplink carries (`Capacity`; None until it says one)."""
    roots_seen: set[bytes] = attrs.Factory(set)
    """Roots this peer told us anything about (they get our Have messages)."""
    pending_haves: dict[tuple[bytes, int], list[int]] = attrs.Factory(dict)
    """(root, piece length) → pieces verified that this peer has not been told of yet
    (`SwarmEngine._have_loop` sends them together)."""
    aliases_out: OutgoingAliases = attrs.Factory(OutgoingAliases)
    """The numbers our Haves name files by on this connection (`wire.aliases`)."""
    aliases_in: IncomingAliases = attrs.Factory(IncomingAliases)
    """The numbers the peer's Haves name files by."""
    uploads: deque[Request] = attrs.Factory(deque)
    upload_wakeup: trio.Event = attrs.Factory(trio.Event)
    downloaded: RateMeter = attrs.field(init=False)
    """From this peer over the last 20 s (or since connecting): what the choker compares."""
    uploaded: RateMeter = attrs.field(init=False)
    recent_down: RateMeter = attrs.field(init=False)
    """Over the last few seconds: how deep to pipeline requests. The 20 s rate lags a
    transfer that just started or sped up by up to 20 s, and a shallow pipe stays slow."""
    recent_up: RateMeter = attrs.field(init=False)
    """Over the last few seconds: how many pieces to show a peer we reveal a file to."""
    bytes_down: int = 0
    bytes_up: int = 0
    strikes: int = 0
    holdings: dict[bytes, HaveContainer] = attrs.Factory(dict)
    """What the peer confirmed holding of containers we want (replayed once the manifest,
    and so the file roots, are known)."""
    told_held: set[bytes] = attrs.Factory(set)
    """Containers whose held pieces we sent this peer unasked (it showed us part of one)."""
    reveals: dict[bytes, PeerReveal] = attrs.Factory(dict)
    """Files we seed to this peer a window at a time (`node.swarm.reveal`), by root."""
    early: dict[bytes, list[Have | Bitfield | HaveAll | HaveNone]] = attrs.Factory(dict)
    """Availability of files we know no metadata of yet, in arrival order (`keep_early`)."""
    early_pieces: int = 0
    """Pieces named by the Haves in `early`."""
    pex_told: dict[bytes, set[bytes]] = attrs.Factory(dict)
    """Per container, the swarm members (node ids) our Pex messages listed to this peer."""
    last_pex: float | None = None
    haves_sent_at: float = -math.inf
    """When our last Have to the peer went (`SwarmEngine._have_loop` batches by it)."""
    index_flush_due: bool = False
    """Our index increments to this peer are waiting to go (`SwarmEngine._sync_index`)."""

    def __attrs_post_init__(self) -> None:
        start = self.connected_at
        self.downloaded = RateMeter(start=start)
        self.uploaded = RateMeter(start=start)
        self.recent_down = RateMeter(RECENT_RATE_SECONDS, start=start)
        self.recent_up = RateMeter(RECENT_RATE_SECONDS, start=start)

    @property
    def wants_from_us(self) -> bool:
        """Interested, or wanting a file we show a window at a time (`node.swarm.reveal`):
        it sees nothing to ask for until we unchoke it, so it waits for a slot all the same;
        or about to be interested (`interest_expected`)."""
        return self.peer_interested or self.interest_expected or bool(self.reveals)

    def keep_early(self, message: Have | Bitfield | HaveAll | HaveNone) -> bool:
        """Keep availability of a file whose metadata we are still fetching, to apply once
        the transfer begins (`take_early`): a seed shows pieces as soon as it unchokes us,
        often before its manifest and layers have reached us. Bounded by EARLY_ROOTS and
        EARLY_PIECES; beyond them it is not kept (False)."""
        kept = self.early.get(message.root)
        if kept is None:
            if len(self.early) >= EARLY_ROOTS:
                return False
            kept = self.early[message.root] = []
        if isinstance(message, Have):
            if self.early_pieces + len(message.pieces) > EARLY_PIECES:
                return False
            self.early_pieces += len(message.pieces)
        else:  # says what the peer holds of the file: what came before no longer counts
            self.early_pieces -= sum(len(m.pieces) for m in kept if isinstance(m, Have))
            kept.clear()
        kept.append(message)
        return True

    def take_early(self, root: bytes) -> list[Have | Bitfield | HaveAll | HaveNone]:
        """What was kept of `root`, oldest first, forgotten here."""
        kept = self.early.pop(root, [])
        self.early_pieces -= sum(len(m.pieces) for m in kept if isinstance(m, Have))
        return kept

    def seed_progress(self) -> float | None:
        """The share of the files we seed it a window at a time that the peer holds (None
        if none): whether a seed spreads its slots (`node.choker`). O(files revealed)."""
        total = held = 0
        for reveal in self.reveals.values():
            total += reveal.file.piece_count
            held += reveal.has_count
        return held / total if total else None

    def silent(self, now: float) -> bool:
        """Told us nothing of what it holds for SILENT_SECONDS (since connecting, if never)."""
        since = self.connected_at if self.last_told is None else self.last_told
        return now - since > SILENT_SECONDS

    def unchoke_unused(self, now: float) -> bool:
        """Unchoked for IDLE_UNCHOKE_SECONDS or more, with nothing asked of us in that time."""
        if self.am_choking or self.uploads:
            return False
        since = max(
            -math.inf if self.last_unchoked is None else self.last_unchoked,
            -math.inf if self.last_asked is None else self.last_asked,
        )
        return now - since >= IDLE_UNCHOKE_SECONDS

    def track(self, root: bytes, first_block: int, blocks: int, now: float) -> None:
        self.untrack(root, first_block)
        self.in_flight[(root, first_block)] = (now, blocks)
        self.blocks_in_flight += blocks

    def untrack(self, root: bytes, first_block: int) -> bool:
        """Forget a request; False if there was none."""
        entry = self.in_flight.pop((root, first_block), None)
        if entry is None:
            return False
        self.blocks_in_flight -= entry[1]
        return True

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

    def peer_holds(self, root: bytes, pieces: int, *, added: bool = False) -> None:
        """The peer holds `pieces` of `root` (or `pieces` more, if `added`)."""
        before = self.pieces_held.get(root, 0)
        after = min(ALL_PIECES, before + pieces if added else pieces)
        self.pieces_held[root] = after
        self.pieces_held_total += after - before
