"""Seeding a file to many peers at once: show each peer a few pieces at a time.

A seed that tells every peer "I have it all" gets asked for the same pieces by many of them
(each picks rarest-first from what it sees, and what is in flight to others is invisible), so
it uploads several copies while the peers have little to trade. BEP 16's super-seeding shows
each peer only pieces nobody was shown yet; BEP 16 waits to see a piece spread before showing
more, which stalls a peer that fetches alone. Here each peer sees a small window of pieces it
lacks, the ones we uploaded least often so far and, among those, the ones shown least (a show
to a peer that never asks, choked or served by others, must not hold a piece back: by shows
alone, a 10-leecher crowd's seed finished its first copy at 11.6 s with 84 uploads, by uploads
first at 9.8 s with 71), and the window is topped up as the peer consumes it
(all its blocks uploaded to that peer, or the peer announcing the piece). The engine shows
pieces only to peers it unchokes (`SwarmEngine._reveal_more`), so a shown piece is asked for
while it is still the rarest, not seconds later.

The window is `MIN_WINDOW_PIECES`, or what we upload to the peer in `RATE_WINDOW_SECONDS`
plus a round trip if that is more: it grows with the rate as TCP's window does, so a fast
link (a LAN, loopback) is not throttled by the round trip of our Have messages, and a crowd's
first peer is not shown the whole file (it was, with a window of 64 blocks shared among the
peers present, which at first is one: a 24-leecher crowd's seed then sent 1.7 copies of the
file before every piece had gone out once, and 1.1 with two pieces). A piece shown but not
consumed in time stops counting against the window (the peer may have it from someone else
and, believing we have it too, never said so), so a peer never waits on us forever. In time
is `STALE_SECONDS`, or `STALE_WINDOW_TIMES` what sending the window takes if that is longer,
at the rate we upload to the peer or what a slot of ours gets, whichever is more (the first
is not measured yet when the peer is new): a seed that spreads its slots (`node.choker`)
gives each peer 16 KiB/s, two seconds for a window of two 16 KiB pieces. With a flat second
such windows went stale while their requests waited their turn, more pieces were shown, and
the shows went round the file and on to other peers before the uploads had: a 100-leecher
crowd's seed sent 1.33-1.45 copies before the crowd held one (1.00-1.06 now). And once the
peer has been busy with the file since (so it has the metadata), a stale piece is shown
again: the Have may have been of no use to the peer (it came before the peer had the
metadata, with no room left to keep it), and a piece never shown again was never asked for
(500 containers fetched at once stalled for good with 165 incomplete when a change made
seeds show more pieces before the metadata arrived; shown again whatever the peer did,
10,000 containers cost 37 more Haves each and 7 % more time).

Sans-IO: the engine tells it what happened and sends the Have messages for the pieces it
returns. Files of at most `MIN_WINDOW_PIECES` pieces are shown whole.
"""

from __future__ import annotations

from array import array
from typing import Final

from wire.merkle import BLOCK_SIZE

MIN_WINDOW_PIECES: Final = 2
STALE_SECONDS: Final = 1.0
"""A seed never hears that a peer got a shown piece from someone else (Haves go only to peers
that lack the piece), so its window holds such a piece until this passes. With two seeds
showing a leecher different pieces, each window filled with pieces fetched from the other:
at 5 s a 300 KB file took 8-14 s instead of 1 s."""
STALE_WINDOW_TIMES: Final = 2
"""A shown piece stays live at least this many times what its window takes to send."""
RATE_WINDOW_SECONDS: Final = 0.25
"""At swarm rates (~100 KB/s per unchoked peer) this is a piece or two; at 100 MB/s it is
hundreds, so a lone fast peer is never waiting on a Have."""


class RevealedFile:
    """One file we seed with reveals: how often each piece was shown, to how many peers."""

    __slots__ = (
        "blocks_per_piece",
        "counts",
        "cursor",
        "floor",
        "length",
        "peers",
        "piece_count",
        "piece_length",
        "uploads",
    )

    def __init__(self, piece_length: int, length: int) -> None:
        self.piece_length = piece_length
        self.length = length
        self.piece_count = -(-length // piece_length)
        self.blocks_per_piece = piece_length // BLOCK_SIZE
        self.counts = array("I", bytes(4 * self.piece_count))
        self.uploads = array("I", bytes(4 * self.piece_count))
        """Times each piece went out whole to a peer it was shown to."""
        self.floor = 0
        """No piece's key (uploads << 32 | shows) is below this (keys only grow)."""
        self.peers = 0
        """Peers it is being revealed to now."""
        self.cursor = 0

    def blocks_in(self, piece: int) -> int:
        size = min(self.piece_length, self.length - piece * self.piece_length)
        return -(-size // BLOCK_SIZE)


class PeerReveal:
    """What one peer was shown of one file, and what it has."""

    __slots__ = (
        "activity",
        "file",
        "has",
        "has_count",
        "pending",
        "served",
        "shown_activity",
        "stale_after",
    )

    def __init__(self, file: RevealedFile) -> None:
        self.file = file
        self.pending: dict[int, float] = {}
        """Pieces shown and not yet consumed → when they were shown."""
        self.stale_after = STALE_SECONDS
        """Seconds a shown piece counts against the window (set by each `top_up`)."""
        self.has = bytearray(file.piece_count)
        self.has_count = 0
        self.served: dict[int, int] = {}
        """Blocks of pending pieces uploaded to this peer."""
        self.activity = 0
        """Runs served to the peer and pieces it announced, counted: a peer that did either
        has the file's metadata, and a show it could use is asked for or answered by then."""
        self.shown_activity: dict[int, int] = {}
        """Pending piece → `activity` when it was shown."""

    @property
    def done(self) -> bool:
        return self.has_count == self.file.piece_count

    def peer_has(self, piece: int) -> None:
        if 0 <= piece < len(self.has) and not self.has[piece]:
            self.has[piece] = 1
            self.has_count += 1
            self.activity += 1
            self.pending.pop(piece, None)
            self.served.pop(piece, None)
            self.shown_activity.pop(piece, None)

    def peer_bitfield(self, bits: bytes) -> None:
        for piece in range(self.file.piece_count):
            if bits[piece >> 3] & (0x80 >> (piece & 7)):
                self.peer_has(piece)

    def block_served(self, block_index: int) -> bool:
        """A block went to the peer (block index in 16 KiB blocks of the file). True if
        that consumed a shown piece (time to top up)."""
        return self.run_served(block_index, 1)

    def run_served(self, block_index: int, count: int) -> bool:
        """Blocks `block_index ..` (`count` asked for, fewer where the piece ends; all in
        one piece) went to the peer. True if that consumed a shown piece."""
        self.activity += 1
        piece = block_index // self.file.blocks_per_piece
        if piece not in self.pending:
            return False
        served = self.served.get(piece, 0) + count
        if served >= self.file.blocks_in(piece):
            self.file.uploads[piece] += 1
            self.peer_has(piece)  # it will have it once it verifies: consumed
            return True
        self.served[piece] = served
        return False

    def top_up(
        self,
        now: float,
        upload_rate: float = 0.0,
        round_trip: float = 0.0,
        from_piece: int | None = None,
        slot_rate: float = 0.0,
    ) -> list[int]:
        """Pieces to show now (the engine sends a Have for each). `upload_rate` is what we
        send this peer, in bytes per second; `round_trip` the link's, in seconds;
        `slot_rate` what an unchoke slot of ours gets (0: unknown), for how long a window
        stays live while `upload_rate` is not measured yet.
        `from_piece`, if given, is where the search among equals begins (modulo the piece
        count; the engine draws it at random each time). Two seeds of a file that each go
        on from where they stopped walk through it in step and show a peer the same pieces;
        the peer asks whichever showed a piece first, and the other's window stays full of
        pieces asked of the first. From the same start, a leecher with two seeds fetched a
        whole 4 MB file from one; from starts drawn once, the two fell into step, and with a
        slow seed and a fast one nearly all came from the slow one."""
        file = self.file
        if from_piece is not None and file.piece_count:
            file.cursor = from_piece % file.piece_count
        by_rate = int(upload_rate * (RATE_WINDOW_SECONDS + round_trip)) // file.piece_length
        window = max(MIN_WINDOW_PIECES, by_rate)
        self.stale_after = STALE_SECONDS
        sending_rate = max(upload_rate, slot_rate)
        if sending_rate > 0:
            sending = window * file.piece_length / sending_rate
            self.stale_after = max(STALE_SECONDS, STALE_WINDOW_TIMES * sending)
        live = sum(1 for shown in self.pending.values() if shown + self.stale_after > now)
        need = window - live
        if need <= 0 or self.done:
            return []
        # The lowest (uploads, shows) first, nearest after the cursor among equals: level by
        # level from `floor`, each a scan from the cursor that stops once enough are picked
        # (one peer alone: about piece count / unshown pieces steps per piece shown, from a
        # cursor drawn at random; O(window) when it goes on from the last pick).
        uploads, shown, count = file.uploads, file.counts, file.piece_count
        picked: list[int] = []
        level: int | None = file.floor
        while len(picked) < need and level is not None:
            start, above, at_level = file.cursor, None, False
            for offset in range(count):
                piece = (start + offset) % count
                key = uploads[piece] << 32 | shown[piece]
                if key != level:
                    if key > level and (above is None or key < above):
                        above = key
                    continue
                at_level = True
                if self.has[piece] or (piece in self.pending and not self._lost(piece, now)):
                    continue
                picked.append(piece)
                self.pending[piece] = now
                self.shown_activity[piece] = self.activity
                shown[piece] += 1
                file.cursor = (piece + 1) % count
                if len(picked) == need:
                    break
            else:
                if not at_level and level == file.floor and above is not None:
                    file.floor = above  # keys only grow: none is below this any more
            level = above if len(picked) < need else None
        return picked

    def _lost(self, piece: int, now: float) -> bool:
        """Was our show of pending `piece` of no use to the peer? Stale, and the peer has
        been busy with the file since, so it had the metadata: it neither asked for the
        piece nor said it has it. (A Have that comes before the peer has the metadata, with
        no room left to keep it, is dropped.) Shown again, it may be asked for; a peer still
        without the metadata is not shown it again and again."""
        stale = self.pending[piece] + self.stale_after <= now
        return stale and self.shown_activity.get(piece, 0) < self.activity
