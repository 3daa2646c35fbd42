"""The downloader's piece picker: which blocks to request next, and from whom.

A file (named by its Merkle root) is cut into pieces, and pieces into 16 KiB blocks. The picker
keeps what we know about the swarm — which connected peer has which piece, which blocks are
requested from whom, which are received, which pieces are verified — and answers one
question fast: *give me up to `count` blocks to ask this peer for*. Its preferences, in order:

1. blocks of **partial pieces** (already started), so pieces complete, are verified and can be
   shared — and so fewer pieces are half-done at once;
2. pieces of files with a higher **priority** (1-7; 0 means "do not download");
3. the **rarest** pieces among connected peers (rarest first spreads the pieces a swarm is
   about to lose, and gives us what others want from us);
4. random among equals (from the `random.Random` the caller passes in).

While fewer than `random_first_pieces` pieces are held it picks at random instead of rarest
(BitTorrent's "random first piece": the rarest pieces are slow to get, and a new peer needs
*something* to trade quickly). When every remaining wanted block that any peer could send is
already requested, it enters **endgame**: a block may be requested from a second peer (at most
`max_requests_per_block` at once) and the loser is reported for cancellation on arrival. Not
every block at once: only once at most `endgame_outstanding` blocks are still awaited and they
are all that is missing, or for a block awaited longer than `endgame_patience_s` (see those
defaults for why).

**Availability buckets** (the idea of libtorrent's `piece_picker`, our own code). Every piece
that is wanted and not yet started lives in one array per priority level, grouped by *rank*
(its availability, below), rank 0 at the end and higher ranks towards the front:

    [ rank R ... | ... rank 2 ... | ... rank 1 ... | ... rank 0 ... ]
    0          starts[1]        starts[0]       len(items)

A change of rank by one swaps the piece with the element at its bucket's edge and moves that
boundary by one — O(1). Picking rarest first walks the array from the lowest useful rank and
takes the first pieces the peer has. New pieces have rank 0 and are appended, also O(1). Within
a bucket the walk starts at a random offset (that is the random tie-break), and a piece that
enters a bucket is swapped to a random place in it (libtorrent does the same), so a peer's
pieces are spread evenly and the walk meets one every ~1/q positions, q being the peer's share
of the bucket. Without the shuffle a bucket is runs of pieces in the order peers announced
them, and the walk crosses whole runs of other peers' pieces (~100x more positions per pick
in the benchmark).

The walk is bounded: after `walk_budget` positions without enough pieces (a peer whose rare
pieces we already took, facing a bucket full of pieces it lacks) the pick goes on with **rank
bitsets**: per file and rank, a bitfield of the pieces at that rank, kept in step with every
rank change (O(1) each); AND it with the peer's bitfield as Python ints and take random set
bits. That costs ~60-150 µs per rank for a 1,000,000-piece file, in C, whatever the peer has.

Peers that have a whole file ("seeds", from `peer_has_all` or a full bitfield) are counted per
file, as libtorrent does, so one seed joining or leaving costs O(1), not O(pieces). A piece's
rank is `2 * (peers that announced it piece by piece) + (1 if its file has any seed)`:

* rank 0: nobody connected has it — never walked;
* rank 1: only seeds have it — a peer that seeds nothing lacks all of these, so its walk starts
  at rank 2 (without this split, a leecher's walk would cross every seeds-only piece — most of
  the file early in a download — before reaching one of its own);
* within a file the order is exactly by availability (seeds add the same to every piece);
  across files "some seed" counts as less than one more leecher.

Only a file's first seed arriving or last seed leaving shifts its pieces (O(pieces of that
file), once per change — and a seed's arrival precedes downloading the whole file from it).

Peers with few pieces (at most `sparse_peer_pieces`, no whole files) also keep the list of
their pieces, and are served from that list: a peer that just joined is not a scan of the whole
array looking for its few pieces.

Never: no I/O, no clock (time `now` is passed in), no global `random`, no iteration over sets.
It does not decide how many requests to keep in flight per peer (the connection does), nor
check data (the caller verifies and reports `piece_verified` / `piece_failed`).

Complexities below use n = pieces of a priority level, B = number of ranks (≤ 2 · peers + 2),
P = partial pieces, b = blocks per piece, h = pieces a sparse peer has, W = walk_budget,
F = files of the peer at a priority level. Measured (bench/bench_picker.py, 1,000,000 pieces,
50 peers, 16 blocks per pick): ~140k picks/s from a seed, ~75k from a leecher with 1/8 of the
pieces, ~15k with 1/64, ~3.5k from a drained 1/64 peer; a linear scan does ~50.

"""

from __future__ import annotations

import enum
import itertools
import random
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import attrs

__all__ = [
    "DEFAULT_MAX_REQUESTS_PER_BLOCK",
    "DEFAULT_PRIORITY",
    "DEFAULT_RANDOM_FIRST_PIECES",
    "DEFAULT_SPARSE_PEER_PIECES",
    "DEFAULT_WALK_BUDGET",
    "MAX_BLOCKS_PER_PIECE",
    "MAX_PRIORITY",
    "BlockOutcome",
    "BlockRequest",
    "BlockStatus",
    "PeerId",
    "PickerError",
    "PiecePicker",
    "piece_layout",
]

PeerId = bytes
"""A peer's node id (32 bytes on the wire; any bytes here)."""

MAX_PRIORITY: Final = 7
DEFAULT_PRIORITY: Final = 4
"""libtorrent's default too: room above and below for "sooner" and "later"."""
ROOT_SIZE: Final = 32
BLOCK_SIZE: Final = 16 * 1024
MAX_BLOCKS_PER_PIECE: Final = 4096
"""64 MiB (the largest piece length wire.merkle allows) / 16 KiB."""
MAX_PIECES_PER_FILE: Final = 2**31 - 1
"""Piece indexes and bucket positions are stored as 32-bit ints."""
DEFAULT_MAX_REQUESTS_PER_BLOCK: Final = 2
"""In endgame, a block is in flight from at most this many peers: the original and one
duplicate. More duplicates buy little (the second-fastest peer rarely loses to a third) and
waste the upload of peers who get cancelled."""
DEFAULT_ENDGAME_OUTSTANDING: Final = 3
"""Endgame duplicates a block only once this few are still awaited. Duplicating every block
in flight the moment endgame began (every peer's pipe full) sent most of them twice: a Cancel
reaches the sender after it started, and in a 100-leecher flash crowd (64 KiB pieces) 4-6 % of
all data received were such duplicates. With 3 (and the patience below): 3.1-3.7 %, and the
bound ratio went from 1.54 / 1.58 / 1.64 to 1.45 / 1.58 / 1.54 (seeds 1-3)."""
DEFAULT_ENDGAME_PATIENCE_S: Final = 2.0
"""A block awaited this long is duplicated whatever else is outstanding: a slow peer holding
several blocks must not hold up the end of the download."""
DEFAULT_RANDOM_FIRST_PIECES: Final = 4
"""libtorrent's `initial_picker_threshold` is 4 as well."""
DEFAULT_SPARSE_PEER_PIECES: Final = 256
"""Up to this many pieces, a peer's pieces are kept as a list and picked from it (O(h log h));
beyond, the bucket walk finds one of its pieces after about n/h steps, at most n/256."""

DEFAULT_WALK_BUDGET: Final = 1024
"""Positions a pick walks in the bucket array before it switches to the rank bitsets. A
position costs ~0.2 µs; one rank of a 1,000,000-piece file costs ~60-150 µs as bitsets, so
past ~1,000 positions the bitsets are the cheaper way to finish."""
_BULK_MIN: Final = 64
"""Moving more pieces than this at once may re-lay a level out instead of moving them one by
one (whichever touches fewer positions)."""
_SHIFT: Final = 32
_MASK: Final = (1 << 32) - 1
_FREE: Final = 0
_REQUESTED: Final = 1
_RECEIVED: Final = 2


class PickerError(ValueError):
    """The caller asked for something inconsistent (a local bug or unvalidated remote input)."""


@attrs.frozen
class BlockRequest:
    """One 16 KiB block: `block` is its index within piece `piece` of the file `root`."""

    root: bytes
    piece: int
    block: int


class BlockStatus(enum.Enum):
    ACCEPTED = "accepted"
    """Wanted and new: store it (it counts towards the piece)."""
    DUPLICATE = "duplicate"
    """Already received from someone else (the loser of an endgame race): drop it."""
    NOT_WANTED = "not-wanted"
    """Unknown file, bad index or a piece already verified: drop it."""


@attrs.frozen
class BlockOutcome:
    """What `block_received` learned."""

    status: BlockStatus
    cancel: tuple[PeerId, ...] = ()
    """Other peers that still had this block requested: send them a cancel."""
    piece_complete: bool = False
    """Every block of the piece is now received: verify it, then call `piece_verified` or
    `piece_failed`."""
    requested: bool = False
    """Whether this peer had asked for it; a late block after a timeout is still accepted, an
    unsolicited one is the caller's policy to judge."""


def piece_layout(length: int, piece_length: int) -> tuple[int, int, int]:
    """(piece count, blocks per full piece, blocks in the last piece) of a file of `length`
    bytes: the arguments `add_file(root, count, per_piece, last_piece_blocks=last)` wants."""
    if length <= 0 or piece_length < BLOCK_SIZE or piece_length & (piece_length - 1):
        raise PickerError(f"bad layout: length {length}, piece length {piece_length}")
    count = -(-length // piece_length)
    per_piece = piece_length // BLOCK_SIZE
    last_bytes = length - (count - 1) * piece_length
    return count, per_piece, -(-last_bytes // BLOCK_SIZE)


class _File:
    __slots__ = (
        "avail",
        "counts",
        "full_blocks",
        "held",
        "held_count",
        "last_blocks",
        "piece_count",
        "pos",
        "priority",
        "rank_bits",
        "remaining",
        "root",
        "seeds",
        "slot",
    )

    def __init__(self, root: bytes, slot: int, piece_count: int, priority: int) -> None:
        self.root = root
        self.slot = slot
        self.piece_count = piece_count
        self.priority = priority
        self.full_blocks = 1
        self.last_blocks = 1
        self.counts: array[int] | None = None
        """Blocks per piece when they are not "all equal but the last"."""
        self.held = bytearray(piece_count)
        self.held_count = 0
        self.avail = array("i", bytes(4 * piece_count))
        """Peers that announced the piece individually (seeds are in `seeds`)."""
        self.pos = array("i", b"\xff" * (4 * piece_count))
        """Position in the level array, -1 when not there (held or partial)."""
        self.seeds = 0
        self.rank_bits: list[bytearray | None] = []
        """Per rank ≥ 1, a bitfield (BitTorrent order) of this file's pieces in the buckets at
        that rank: the slow path of `pick` ANDs it with a peer's bitfield."""
        self.remaining = 0
        """Blocks of pieces not verified that are not received."""

    def blocks(self, piece: int) -> int:
        if self.counts is not None:
            return self.counts[piece]
        return self.last_blocks if piece == self.piece_count - 1 else self.full_blocks

    def rank(self, piece: int) -> int:
        return 2 * self.avail[piece] + (1 if self.seeds else 0)

    def mark(self, rank: int, piece: int) -> None:
        if rank:
            bits = self.rank_bits
            while len(bits) <= rank:
                bits.append(None)
            field = bits[rank]
            if field is None:
                field = bits[rank] = bytearray(-(-self.piece_count // 8))
            field[piece >> 3] |= 0x80 >> (piece & 7)

    def unmark(self, rank: int, piece: int) -> None:
        if rank:
            field = self.rank_bits[rank]
            assert field is not None
            field[piece >> 3] &= ~(0x80 >> (piece & 7)) & 0xFF


class _PeerFile:
    __slots__ = ("as_int", "bits", "count", "sparse")

    def __init__(self, bits: bytearray | None, count: int) -> None:
        self.as_int: int | None = None
        """`bits` as one big int, for the bitset path; dropped whenever bits change."""
        self.bits = bits
        """BitTorrent order (piece 0 = high bit of byte 0); None when the peer has it all."""
        self.count = count
        self.sparse: list[int] | None = None
        """The pieces it has, in announcement order, while count ≤ the sparse limit."""


class _Peer:
    __slots__ = ("files", "requests", "seeded", "total")

    def __init__(self) -> None:
        self.files: dict[int, _PeerFile] = {}
        self.requests: dict[tuple[int, int], float] = {}
        """(piece key, block) -> when it was requested."""
        self.seeded = 0
        """Files it has whole."""
        self.total = 0
        """Pieces it announced individually, over all files."""


class _Partial:
    __slots__ = (
        "file",
        "free",
        "key",
        "piece",
        "received",
        "requested",
        "requesters",
        "senders",
        "seq",
        "state",
    )

    def __init__(self, file: _File, piece: int, key: int, seq: int) -> None:
        self.file = file
        self.piece = piece
        self.key = key
        self.seq = seq
        """Start order: older partial pieces are finished first."""
        blocks = file.blocks(piece)
        self.state = bytearray(blocks)
        self.free = blocks
        self.requested = 0
        self.received = 0
        self.requesters: dict[int, dict[PeerId, float]] = {}
        self.senders: dict[int, PeerId] = {}


class _Level:
    """The pieces of one priority level, grouped by rank (see the module docstring)."""

    __slots__ = ("items", "starts")

    def __init__(self) -> None:
        self.items: array[int] = array("q")
        self.starts: list[int] = [0]
        """starts[r] is the first position of rank r; rank r ends where rank r-1 starts (rank 0
        ends at len(items)). The top rank always starts at 0."""


BlockCounts = int | Sequence[int] | Callable[[int], int]


class PiecePicker:
    """Sans-IO piece and block picker for every file this node downloads.

    Feed it what peers have (`peer_has`, `peer_has_all`, `peer_bitfield`, `peer_left`), ask it
    what to request (`pick`), tell it what you requested and what came back (`mark_requested`,
    `block_received`, `request_failed`, `request_timed_out`) and what verification said
    (`piece_verified`, `piece_failed`). Announcements about files that were not added are
    ignored: after `add_file`, replay what the connected peers have.
    """

    def __init__(
        self,
        *,
        max_requests_per_block: int = DEFAULT_MAX_REQUESTS_PER_BLOCK,
        endgame_outstanding: int = DEFAULT_ENDGAME_OUTSTANDING,
        endgame_patience_s: float = DEFAULT_ENDGAME_PATIENCE_S,
        random_first_pieces: int = DEFAULT_RANDOM_FIRST_PIECES,
        sparse_peer_pieces: int = DEFAULT_SPARSE_PEER_PIECES,
        walk_budget: int = DEFAULT_WALK_BUDGET,
        seed: int = 0,
    ) -> None:
        """`seed` drives the shuffle within buckets (derive it from the node's seed)."""
        if max_requests_per_block < 1:
            raise PickerError("max_requests_per_block must be at least 1")
        if random_first_pieces < 0 or sparse_peer_pieces < 0 or walk_budget < 0:
            raise PickerError("thresholds cannot be negative")
        if endgame_outstanding < 0 or endgame_patience_s < 0:
            raise PickerError("endgame thresholds cannot be negative")
        self.endgame_outstanding = endgame_outstanding
        self.endgame_patience_s = endgame_patience_s
        self.walk_budget = walk_budget
        self.max_requests_per_block = max_requests_per_block
        self.random_first_pieces = random_first_pieces
        self.sparse_peer_pieces = sparse_peer_pieces
        self._files: dict[bytes, _File] = {}
        self._slots: list[_File | None] = []
        self._free_slots: list[int] = []
        self._levels = [_Level() for _ in range(MAX_PRIORITY + 1)]
        self._peers: dict[PeerId, _Peer] = {}
        self._partials: dict[int, _Partial] = {}
        self._seq = 0
        self._held_total = 0
        self._shuffle = random.Random(seed)
        """Private, seeded: moves each piece to a random place in the bucket it enters (as
        libtorrent does). Without it a bucket holds runs of pieces in the order peers announced
        them, one peer's pieces clustered together, and a walk from a random offset crosses
        whole runs of other peers' pieces before it finds one of this peer's."""
        self._free_available = 0
        """Blocks of wanted (priority > 0, not held) pieces that some connected peer has and
        that are neither requested nor received: zero means endgame."""

    # ------------------------------------------------------------------ files

    def add_file(
        self,
        root: bytes,
        piece_count: int,
        blocks_per_piece: BlockCounts,
        priority: int = DEFAULT_PRIORITY,
        *,
        last_piece_blocks: int | None = None,
        have: bytes | None = None,
    ) -> None:
        """Start tracking a file. `blocks_per_piece` is one count for every piece (then
        `last_piece_blocks` is the short last piece), a sequence, or a function of the index.
        `have` is a bitfield of pieces already verified (resuming).

        O(piece_count): pieces enter rank 0 at the end of their level array, O(1) each.
        """
        if len(root) != ROOT_SIZE:
            raise PickerError(f"a root is {ROOT_SIZE} bytes, not {len(root)}")
        if root in self._files:
            raise PickerError("file already added")
        if not 1 <= piece_count <= MAX_PIECES_PER_FILE:
            raise PickerError(f"bad piece count {piece_count}")
        _check_priority(priority)
        held_bits = None if have is None else _check_bitfield(have, piece_count)
        slot = self._free_slots.pop() if self._free_slots else len(self._slots)
        f = _File(root, slot, piece_count, priority)
        _set_block_counts(f, blocks_per_piece, last_piece_blocks)
        if slot == len(self._slots):
            self._slots.append(f)
        else:
            self._slots[slot] = f
        self._files[root] = f
        level = self._levels[priority]
        items, pos = level.items, f.pos
        base = slot << _SHIFT
        remaining = 0
        for piece in range(piece_count):
            if held_bits is not None and held_bits[piece >> 3] & (0x80 >> (piece & 7)):
                f.held[piece] = 1
                f.held_count += 1
                continue
            pos[piece] = len(items)
            items.append(base | piece)
            remaining += f.blocks(piece)
        f.remaining = remaining
        self._held_total += f.held_count

    def remove_file(self, root: bytes) -> list[tuple[PeerId, BlockRequest]]:
        """Forget a file; returns its outstanding requests so the caller can cancel them.

        O(pieces of the file · B) or O(n) when the file is a large part of its level.
        """
        f = self._file(root)
        if f.priority:
            self._free_available -= self._file_free_available(f)
        cancels: list[tuple[PeerId, BlockRequest]] = []
        for key in [k for k, part in self._partials.items() if part.file is f]:
            cancels.extend(self._drop_requests(self._partials.pop(key)))
        self._bulk_remove(f)
        for ps in self._peers.values():
            pf = ps.files.pop(f.slot, None)
            if pf is not None:
                if pf.bits is None:
                    ps.seeded -= 1
                else:
                    ps.total -= pf.count
        del self._files[root]
        self._slots[f.slot] = None
        self._free_slots.append(f.slot)
        self._held_total -= f.held_count
        return cancels

    def set_priority(self, root: bytes, priority: int) -> None:
        """Change a file's priority (0 = stop picking it; outstanding requests stay valid and
        arriving blocks are still accepted).

        O(pieces of the file · B), or O(n) of both levels when the file is a large part of them.
        """
        _check_priority(priority)
        f = self._file(root)
        if priority == f.priority:
            return
        if bool(priority) != bool(f.priority):
            delta = self._file_free_available(f)
            self._free_available += delta if priority else -delta
        moved = self._bulk_remove(f)
        f.priority = priority
        level = self._levels[priority]
        if len(moved) > _BULK_MIN and len(moved) * len(level.starts) > len(level.items):
            self._rebuild(level, [*level.items, *moved])
            for key in moved:
                piece = key & _MASK
                f.mark(f.rank(piece), piece)
        else:
            for key in moved:
                piece = key & _MASK
                self._insert(level, key, f, piece, f.rank(piece))

    # --------------------------------------------------------------- availability

    def peer_has(self, peer: PeerId, root: bytes, piece: int) -> None:
        """A peer announced one piece. O(1); O(pieces of the file) once, when this makes the
        peer's copy complete and it becomes a seed (amortised O(1) over its announcements)."""
        f = self._files.get(root)
        if f is None:
            return
        _check_piece(f, piece)
        ps = self._peer(peer)
        pf = ps.files.get(f.slot)
        if pf is None:
            pf = ps.files[f.slot] = _PeerFile(bytearray(-(-f.piece_count // 8)), 0)
            pf.sparse = []
        bits = pf.bits
        if bits is None:
            return
        mask = 0x80 >> (piece & 7)
        if bits[piece >> 3] & mask:
            return
        bits[piece >> 3] |= mask
        pf.as_int = None
        pf.count += 1
        ps.total += 1
        if pf.sparse is not None:
            if pf.count <= self.sparse_peer_pieces:
                pf.sparse.append(piece)
            else:
                pf.sparse = None
        self._inc(f, piece)
        if pf.count == f.piece_count:
            self._become_seed(f, ps, pf)

    def peer_has_all(self, peer: PeerId, root: bytes) -> None:
        """A peer has the whole file. O(1) unless it is the file's first seed (then
        O(pieces of the file)), plus O(its earlier announcements) to undo them."""
        f = self._files.get(root)
        if f is None:
            return
        ps = self._peer(peer)
        pf = ps.files.get(f.slot)
        if pf is None:
            pf = ps.files[f.slot] = _PeerFile(bytearray(), 0)
        elif pf.bits is None:
            return
        self._become_seed(f, ps, pf)

    def peer_has_piece(self, peer: PeerId, root: bytes, piece: int) -> bool:
        """Whether a connected peer announced the piece (or the whole file). O(1)."""
        f = self._files.get(root)
        ps = self._peers.get(peer)
        if f is None or ps is None:
            return False
        pf = ps.files.get(f.slot)
        if pf is None:
            return False
        if pf.bits is None:
            return True
        return bool(pf.bits[piece >> 3] & (0x80 >> (piece & 7)))

    def peer_bitfield(self, peer: PeerId, root: bytes, bits: bytes) -> None:
        """A peer's full bitfield for a file (BitTorrent order: piece 0 is the high bit of byte
        0; spare bits must be zero). Replaces what it said before. O(pieces of the file)."""
        f = self._files.get(root)
        if f is None:
            return
        new_bits = _check_bitfield(bits, f.piece_count)
        ps = self._peer(peer)
        old = ps.files.pop(f.slot, None)
        if old is not None:
            self._forget(f, ps, old)
        if new_bits == _full_bitfield(f.piece_count):
            pf = ps.files[f.slot] = _PeerFile(bytearray(), 0)
            self._become_seed(f, ps, pf)
            return
        pf = ps.files[f.slot] = _PeerFile(new_bits, 0)
        pieces = _set_bits(new_bits)
        pf.count = len(pieces)
        ps.total += pf.count
        if pf.count <= self.sparse_peer_pieces:
            pf.sparse = pieces
        for piece in pieces:
            self._inc(f, piece)

    def peer_left(self, peer: PeerId) -> list[BlockRequest]:
        """A peer disconnected: its requests go back to wanted (returned), its pieces stop
        counting. O(its requests + its pieces); a seed leaving is O(1) unless it was the file's
        last seed."""
        ps = self._peers.pop(peer, None)
        if ps is None:
            return []
        released = []
        for key, block in list(ps.requests):
            part = self._partials[key]
            self._release(ps, peer, part, block)
            released.append(BlockRequest(part.file.root, part.piece, block))
        for slot, pf in ps.files.items():
            f = self._slots[slot]
            assert f is not None
            self._forget(f, ps, pf)
        return released

    # -------------------------------------------------------------------- picking

    def pick(self, peer: PeerId, count: int, now: float, rng: random.Random) -> list[BlockRequest]:
        """Up to `count` blocks to request from `peer`, best first. Proposes only: call
        `mark_requested` for each one actually sent. `now` orders endgame duplicates (the block
        waiting longest is duplicated first).

        Cost: O(P log P) to rank the partial pieces this peer has, then for new pieces either
        O(h log h) for a sparse peer, or a walk of the level arrays from the rarest rank it
        could have: O(1) per piece found for a seed (the first position it looks at), about
        1/q positions per piece found when the peer holds a share q of a bucket (e.g. ~40
        among 40 equal leechers). Worst case, bounded: W positions, then rank bitsets,
        O(B · F · n/8) byte operations in C (~60-150 µs per rank at 1,000,000 pieces).
        Endgame adds O(blocks of partial pieces · log).
        """
        if count <= 0:
            return []
        ps = self._peers.get(peer)
        if ps is None or not ps.files:
            return []
        out: list[BlockRequest] = []
        self._pick_partials(ps, count, out)
        if len(out) < count:
            if ps.seeded == 0 and ps.total <= self.sparse_peer_pieces:
                self._pick_sparse(ps, count, rng, out)
            else:
                self._pick_levels(ps, count, rng, out)
        if len(out) < count and self._free_available == len(out):
            self._pick_endgame(peer, ps, count, now, out)
        return out

    @property
    def requestable_blocks(self) -> int:
        """Blocks of wanted pieces that some connected peer has and that no request covers:
        what `pick` can still hand out before endgame. O(1)."""
        return self._free_available

    def in_endgame(self) -> bool:
        """Every wanted block some peer could send is requested or received, and some remain."""
        return self._free_available == 0 and self.remaining_blocks() > 0

    # ------------------------------------------------------------ request lifecycle

    def mark_requested(self, peer: PeerId, request: BlockRequest, now: float) -> None:
        """The request was sent. O(1) (O(B) when it starts a piece, to leave the buckets).

        Raises PickerError when the peer does not have the piece, the block is received or
        already requested from this peer, or `max_requests_per_block` is reached.
        """
        f, piece, block = self._locate(request)
        if f.held[piece]:
            raise PickerError("piece already verified")
        ps = self._peers.get(peer)
        if ps is None or not self._has(ps, f, piece):
            raise PickerError("the peer does not have this piece")
        key = (f.slot << _SHIFT) | piece
        part = self._partials.get(key)
        if part is not None:
            if part.state[block] == _RECEIVED:
                raise PickerError("block already received")
            reqs = part.requesters.get(block)
            if reqs is not None and peer in reqs:
                raise PickerError("block already requested from this peer")
            if reqs is not None and len(reqs) >= self.max_requests_per_block:
                raise PickerError("block already requested from too many peers")
        else:
            part = self._start_partial(f, piece, key)
        if part.state[block] == _FREE:
            part.state[block] = _REQUESTED
            part.free -= 1
            part.requested += 1
            if f.priority:
                self._free_available -= 1
        part.requesters.setdefault(block, {})[peer] = now
        ps.requests[(key, block)] = now

    def block_received(self, peer: PeerId, request: BlockRequest) -> BlockOutcome:
        """A block arrived (its proof already checked or not: that is the caller's). Accepts it
        while the piece is wanted, even if it was not requested from this peer (a late answer
        after a timeout). O(peers that had it requested)."""
        f = self._files.get(request.root)
        if (
            f is None
            or not 0 <= request.piece < f.piece_count
            or not 0 <= request.block < f.blocks(request.piece)
            or f.held[request.piece]
        ):
            return BlockOutcome(BlockStatus.NOT_WANTED)
        piece, block = request.piece, request.block
        key = (f.slot << _SHIFT) | piece
        part = self._partials.get(key)
        if part is None:
            part = self._start_partial(f, piece, key)
        if part.state[block] == _RECEIVED:
            return BlockOutcome(BlockStatus.DUPLICATE)
        reqs = part.requesters.pop(block, {})
        requested = peer in reqs
        cancel = []
        for other in reqs:
            self._peers[other].requests.pop((key, block))
            if other != peer:
                cancel.append(other)
        if part.state[block] == _FREE:
            part.free -= 1
            if f.priority and (f.avail[piece] or f.seeds):
                self._free_available -= 1
        else:
            part.requested -= 1
        part.state[block] = _RECEIVED
        part.received += 1
        part.senders[block] = peer
        f.remaining -= 1
        return BlockOutcome(
            BlockStatus.ACCEPTED,
            tuple(cancel),
            piece_complete=part.received == len(part.state),
            requested=requested,
        )

    def request_failed(self, peer: PeerId, request: BlockRequest) -> bool:
        """The peer rejected the request, choked us, or the send failed: the block is wanted
        again (if nobody else has it requested). False when there was no such request. O(1)
        (O(B) when the piece has no progress left and returns to the buckets)."""
        ps = self._peers.get(peer)
        f = self._files.get(request.root)
        if ps is None or f is None or not 0 <= request.piece < f.piece_count:
            return False
        key = (f.slot << _SHIFT) | request.piece
        if (key, request.block) not in ps.requests:
            return False
        self._release(ps, peer, self._partials[key], request.block)
        return True

    def request_timed_out(self, peer: PeerId, request: BlockRequest) -> bool:
        """Same as `request_failed`: the block can be picked for someone else. If the slow
        peer's block still arrives, `block_received` accepts it while it is wanted."""
        return self.request_failed(peer, request)

    def piece_verified(self, root: bytes, piece: int) -> list[tuple[PeerId, BlockRequest]]:
        """The piece checked out: never picked again. Returns requests still outstanding for
        it (normally none) to cancel. O(B) or O(its blocks)."""
        f = self._file(root)
        _check_piece(f, piece)
        if f.held[piece]:
            return []
        key = (f.slot << _SHIFT) | piece
        counted = f.priority and (f.avail[piece] or f.seeds)
        cancels: list[tuple[PeerId, BlockRequest]] = []
        part = self._partials.pop(key, None)
        if part is not None:
            cancels = self._drop_requests(part)
            if counted:
                self._free_available -= part.free
            f.remaining -= len(part.state) - part.received
        else:
            self._remove(self._levels[f.priority], key, f, piece)
            if counted:
                self._free_available -= f.blocks(piece)
            f.remaining -= f.blocks(piece)
        f.held[piece] = 1
        f.held_count += 1
        self._held_total += 1
        return cancels

    def piece_failed(self, root: bytes, piece: int) -> list[PeerId]:
        """The piece's hash did not match: every received block is wanted again. Returns the
        peers that sent its blocks (each once, in block order) so the caller can strike them.
        O(its blocks)."""
        f = self._file(root)
        _check_piece(f, piece)
        part = self._partials.get((f.slot << _SHIFT) | piece)
        if part is None:
            return []
        senders = list(dict.fromkeys(part.senders[b] for b in sorted(part.senders)))
        back = 0
        for block in range(len(part.state)):
            if part.state[block] == _RECEIVED:
                part.state[block] = _FREE
                back += 1
        part.senders.clear()
        part.received -= back
        part.free += back
        f.remaining += back
        if f.priority and (f.avail[piece] or f.seeds):
            self._free_available += back
        self._maybe_idle(part)
        return senders

    # -------------------------------------------------------------- introspection

    def remaining_blocks(self, root: bytes | None = None) -> int:
        """Blocks not yet received of pieces not verified: of one file, or of every file with
        priority > 0. O(1) per file."""
        if root is not None:
            return self._file(root).remaining
        return sum(f.remaining for f in self._files.values() if f.priority)

    def completed_pieces(self, root: bytes) -> int:
        """Verified pieces of the file. O(1)."""
        return self._file(root).held_count

    def is_complete(self, root: bytes) -> bool:
        f = self._file(root)
        return f.held_count == f.piece_count

    def has_piece(self, root: bytes, piece: int) -> bool:
        f = self._file(root)
        _check_piece(f, piece)
        return bool(f.held[piece])

    def held_bits(self, root: bytes) -> bytes:
        """The verified pieces as a bitfield (docs/protocol.md 5.5: piece i is bit
        `0x80 >> (i % 8)` of byte `i // 8`). O(pieces), in C but for one step per held piece."""
        f = self._file(root)
        bits = bytearray((f.piece_count + 7) // 8)
        for piece in itertools.compress(range(f.piece_count), f.held):
            bits[piece >> 3] |= 0x80 >> (piece & 7)
        return bytes(bits)

    def availability(self, root: bytes, piece: int) -> int:
        """Connected peers that have the piece, seeds included. O(1)."""
        f = self._file(root)
        _check_piece(f, piece)
        return f.avail[piece] + f.seeds

    def priority(self, root: bytes) -> int:
        return self._file(root).priority

    def bucket_counts(self, priority: int | None = None) -> list[int]:
        """Pieces waiting to be started, per rank (index = rank = 2 * announced + 1 if the file
        has a seed), for one priority level or all of them. O(B)."""
        levels = self._levels if priority is None else [self._levels[priority]]
        counts: list[int] = []
        for level in levels:
            starts = level.starts
            for rank in range(len(starts)):
                end = len(level.items) if rank == 0 else starts[rank - 1]
                if rank == len(counts):
                    counts.append(0)
                counts[rank] += end - starts[rank]
        while len(counts) > 1 and counts[-1] == 0:
            counts.pop()
        return counts

    def partial_pieces(self) -> list[tuple[bytes, int]]:
        """Pieces started and not verified, oldest first. O(P)."""
        return [(p.file.root, p.piece) for p in self._partials.values()]

    def outstanding(self, peer: PeerId) -> list[BlockRequest]:
        """Requests in flight to this peer, in the order they were made. O(its requests)."""
        ps = self._peers.get(peer)
        if ps is None:
            return []
        out = []
        for key, block in ps.requests:
            f = self._slots[key >> _SHIFT]
            assert f is not None
            out.append(BlockRequest(f.root, key & _MASK, block))
        return out

    def requesters(self, request: BlockRequest) -> list[PeerId]:
        """Peers the block is requested from, in request order."""
        f, piece, block = self._locate(request)
        part = self._partials.get((f.slot << _SHIFT) | piece)
        if part is None:
            return []
        return list(part.requesters.get(block, {}))

    def check_invariants(self) -> None:
        """Recount everything from scratch and compare (libtorrent's INVARIANT_CHECK): for
        tests and debugging, O(everything)."""
        free_available = 0
        for f in self._files.values():
            avail = [0] * f.piece_count
            seeds = 0
            for ps in self._peers.values():
                pf = ps.files.get(f.slot)
                if pf is None:
                    continue
                if pf.bits is None:
                    seeds += 1
                    continue
                pieces = _set_bits(pf.bits)
                _expect(len(pieces) == pf.count, "peer piece count")
                if pf.sparse is not None:
                    _expect(sorted(pf.sparse) == pieces, "sparse list")
                for piece in pieces:
                    avail[piece] += 1
            _expect(seeds == f.seeds, f"seeds {f.seeds} != {seeds}")
            _expect(list(f.avail) == avail, "availability differs from a recount")
            remaining = 0
            level = self._levels[f.priority]
            for piece in range(f.piece_count):
                key = (f.slot << _SHIFT) | piece
                part = self._partials.get(key)
                if f.held[piece]:
                    _expect(part is None and f.pos[piece] == -1, "held piece still tracked")
                    continue
                if part is None:
                    p = f.pos[piece]
                    _expect(0 <= p < len(level.items) and level.items[p] == key, "position")
                    rank = f.rank(piece)
                    _expect(rank < len(level.starts), "rank beyond buckets")
                    end = len(level.items) if rank == 0 else level.starts[rank - 1]
                    _expect(level.starts[rank] <= p < end, f"piece {piece} in wrong bucket")
                    free = f.blocks(piece)
                    remaining += free
                else:
                    _expect(f.pos[piece] == -1, "partial piece in buckets")
                    free = self._check_partial(part)
                    remaining += len(part.state) - part.received
                if f.priority and (avail[piece] or seeds):
                    free_available += free
            _expect(remaining == f.remaining, "remaining blocks")
            for rank, field in enumerate(f.rank_bits):
                expected = [p for p in range(f.piece_count) if f.pos[p] >= 0 and f.rank(p) == rank]
                got = [] if field is None else _set_bits(field)
                _expect(rank == 0 or got == expected, f"rank {rank} bitset")
            _expect(
                all(
                    f.rank(p) < max(len(f.rank_bits), 1)
                    for p in range(f.piece_count)
                    if f.pos[p] >= 0 and f.rank(p)
                ),
                "piece without a rank bitset",
            )
            _expect(int(sum(f.held)) == f.held_count, "held count")
        for level in self._levels:
            _expect(level.starts[-1] == 0, "top rank must start at 0")
            _expect(
                all(a >= b for a, b in zip(level.starts, level.starts[1:], strict=False)),
                "bucket starts out of order",
            )
            for key in level.items:
                owner = self._slots[key >> _SHIFT]
                _expect(owner is not None and self._levels[owner.priority] is level, "stray key")
        _expect(free_available == self._free_available, "free available blocks")
        _expect(self._held_total == sum(f.held_count for f in self._files.values()), "held")
        for peer, ps in self._peers.items():
            _expect(ps.total == sum(pf.count for pf in ps.files.values() if pf.bits), "total")
            _expect(ps.seeded == sum(pf.bits is None for pf in ps.files.values()), "seeded")
            for key, block in ps.requests:
                part = self._partials[key]
                _expect(peer in part.requesters.get(block, {}), "request not in piece")

    # ------------------------------------------------------------------ internals

    def _file(self, root: bytes) -> _File:
        f = self._files.get(root)
        if f is None:
            raise PickerError("unknown file")
        return f

    def _peer(self, peer: PeerId) -> _Peer:
        ps = self._peers.get(peer)
        if ps is None:
            ps = self._peers[peer] = _Peer()
        return ps

    def _locate(self, request: BlockRequest) -> tuple[_File, int, int]:
        f = self._file(request.root)
        _check_piece(f, request.piece)
        if not 0 <= request.block < f.blocks(request.piece):
            raise PickerError(f"block {request.block} out of range")
        return f, request.piece, request.block

    @staticmethod
    def _has(ps: _Peer, f: _File, piece: int) -> bool:
        pf = ps.files.get(f.slot)
        if pf is None:
            return False
        bits = pf.bits
        return bits is None or bool(bits[piece >> 3] & (0x80 >> (piece & 7)))

    def _free_of(self, f: _File, piece: int) -> int:
        if f.held[piece]:
            return 0
        part = self._partials.get((f.slot << _SHIFT) | piece)
        return f.blocks(piece) if part is None else part.free

    def _file_free_available(self, f: _File) -> int:
        """Free blocks of the file's pieces that someone has, whatever its priority."""
        if f.seeds:
            total = sum(f.blocks(p) for p in range(f.piece_count) if f.pos[p] >= 0)
        else:
            total = sum(f.blocks(p) for p in range(f.piece_count) if f.pos[p] >= 0 and f.avail[p])
        for part in self._partials.values():
            if part.file is f and (f.seeds or f.avail[part.piece]):
                total += part.free
        return total

    def _inc(self, f: _File, piece: int) -> None:
        old = f.avail[piece]
        f.avail[piece] = old + 1
        p = f.pos[piece]
        if p >= 0:
            level, rank = self._levels[f.priority], 2 * old + (1 if f.seeds else 0)
            self._up(level, p, rank)
            self._up(level, f.pos[piece], rank + 1)
            self._scatter(level, f.pos[piece], rank + 2)
            f.unmark(rank, piece)
            f.mark(rank + 2, piece)
        if old == 0 and not f.seeds and f.priority:
            self._free_available += self._free_of(f, piece)

    def _dec(self, f: _File, piece: int) -> None:
        old = f.avail[piece]
        f.avail[piece] = old - 1
        p = f.pos[piece]
        if p >= 0:
            level, rank = self._levels[f.priority], 2 * old + (1 if f.seeds else 0)
            self._down(level, p, rank)
            self._down(level, f.pos[piece], rank - 1)
            self._scatter(level, f.pos[piece], rank - 2)
            f.unmark(rank, piece)
            f.mark(rank - 2, piece)
        if old == 1 and not f.seeds and f.priority:
            self._free_available -= self._free_of(f, piece)

    def _become_seed(self, f: _File, ps: _Peer, pf: _PeerFile) -> None:
        """Turn a peer's bitfield for `f` into "has it all" (counted in f.seeds)."""
        self._add_seed(f)
        if pf.bits is not None:
            self._forget_bits(f, ps, pf)
        pf.bits = None
        pf.count = f.piece_count
        pf.sparse = None
        ps.seeded += 1

    def _forget(self, f: _File, ps: _Peer, pf: _PeerFile) -> None:
        if pf.bits is None:
            ps.seeded -= 1
            self._remove_seed(f)
        else:
            self._forget_bits(f, ps, pf)

    def _forget_bits(self, f: _File, ps: _Peer, pf: _PeerFile) -> None:
        assert pf.bits is not None
        pieces = pf.sparse if pf.sparse is not None else _set_bits(pf.bits)
        for piece in pieces:
            self._dec(f, piece)
        ps.total -= pf.count

    def _add_seed(self, f: _File) -> None:
        f.seeds += 1
        if f.seeds > 1:
            return
        level = self._levels[f.priority]
        avail, pos = f.avail, f.pos
        for piece in range(f.piece_count):
            p = pos[piece]
            if p >= 0:
                self._up(level, p, 2 * avail[piece])
                self._scatter(level, pos[piece], 2 * avail[piece] + 1)
                f.unmark(2 * avail[piece], piece)
                f.mark(2 * avail[piece] + 1, piece)
            if not avail[piece] and f.priority:
                self._free_available += self._free_of(f, piece)

    def _remove_seed(self, f: _File) -> None:
        f.seeds -= 1
        if f.seeds:
            return
        level = self._levels[f.priority]
        avail, pos = f.avail, f.pos
        for piece in range(f.piece_count):
            p = pos[piece]
            if p >= 0:
                self._down(level, p, 2 * avail[piece] + 1)
                self._scatter(level, pos[piece], 2 * avail[piece])
                f.unmark(2 * avail[piece] + 1, piece)
                f.mark(2 * avail[piece], piece)
            if not avail[piece] and f.priority:
                self._free_available -= self._free_of(f, piece)

    # bucket operations: every swap keeps the `pos` arrays in step.

    def _swap(self, items: array[int], p: int, q: int) -> None:
        if p != q:
            a, b = items[p], items[q]
            items[p], items[q] = b, a
            slots = self._slots
            fa, fb = slots[a >> _SHIFT], slots[b >> _SHIFT]
            assert fa is not None and fb is not None
            fa.pos[a & _MASK] = q
            fb.pos[b & _MASK] = p

    def _up(self, level: _Level, p: int, rank: int) -> None:
        """Move the piece at position p from `rank` to rank + 1. O(1)."""
        starts = level.starts
        if rank + 1 == len(starts):
            starts.append(0)
        first = starts[rank]
        self._swap(level.items, p, first)
        starts[rank] = first + 1

    def _down(self, level: _Level, p: int, rank: int) -> None:
        """Move the piece at position p from `rank` (≥ 1) to rank - 1. O(1)."""
        starts = level.starts
        last = starts[rank - 1] - 1
        self._swap(level.items, p, last)
        starts[rank - 1] = last

    def _scatter(self, level: _Level, p: int, rank: int) -> None:
        """Swap the piece at p (in `rank`) with a random member of its bucket. O(1).
        Rank 0 is never walked and is left alone."""
        if rank:
            start = level.starts[rank]
            size = (len(level.items) if rank == 0 else level.starts[rank - 1]) - start
            self._swap(level.items, p, start + int(self._shuffle.random() * size))

    def _insert(self, level: _Level, key: int, f: _File, piece: int, rank: int) -> None:
        """Append at rank 0, then climb. O(rank)."""
        p = len(level.items)
        level.items.append(key)
        f.pos[piece] = p
        for r in range(rank):
            self._up(level, f.pos[piece], r)
        self._scatter(level, f.pos[piece], rank)
        f.mark(rank, piece)

    def _remove(self, level: _Level, key: int, f: _File, piece: int) -> None:
        """Sink to rank 0, swap with the last element, pop. O(rank)."""
        f.unmark(f.rank(piece), piece)
        for r in range(f.rank(piece), 0, -1):
            self._down(level, f.pos[piece], r)
        self._swap(level.items, f.pos[piece], len(level.items) - 1)
        level.items.pop()
        f.pos[piece] = -1

    def _rebuild(self, level: _Level, keys: Iterable[int]) -> None:
        """Lay a level out again from its keys (a counting sort by rank). O(n + B)."""
        buckets: list[list[int]] = [[]]
        slots = self._slots
        for key in keys:
            f = slots[key >> _SHIFT]
            assert f is not None
            rank = f.rank(key & _MASK)
            while len(buckets) <= rank:
                buckets.append([])
            buckets[rank].append(key)
        items: array[int] = array("q")
        starts = [0] * len(buckets)
        for rank in range(len(buckets) - 1, -1, -1):
            if rank:
                self._shuffle.shuffle(buckets[rank])
            starts[rank] = len(items)
            items.extend(buckets[rank])
        for p, key in enumerate(items):
            f = slots[key >> _SHIFT]
            assert f is not None
            f.pos[key & _MASK] = p
        level.items, level.starts = items, starts

    def _bulk_remove(self, f: _File) -> list[int]:
        """Take every piece of `f` out of its level; returns their keys."""
        level = self._levels[f.priority]
        base = f.slot << _SHIFT
        keys = [base | piece for piece in range(f.piece_count) if f.pos[piece] >= 0]
        if len(keys) > _BULK_MIN and len(keys) * len(level.starts) > len(level.items):
            slot = f.slot
            self._rebuild(level, [k for k in level.items if k >> _SHIFT != slot])
            for key in keys:
                f.pos[key & _MASK] = -1
            f.rank_bits = []
        else:
            for key in keys:
                self._remove(level, key, f, key & _MASK)
        return keys

    # partial pieces

    def _start_partial(self, f: _File, piece: int, key: int) -> _Partial:
        self._remove(self._levels[f.priority], key, f, piece)
        part = self._partials[key] = _Partial(f, piece, key, self._seq)
        self._seq += 1
        return part

    def _maybe_idle(self, part: _Partial) -> None:
        """A partial piece with nothing received and nothing in flight goes back to the
        buckets, so the partial list only holds pieces with real progress."""
        if part.requested or part.received:
            return
        del self._partials[part.key]
        f = part.file
        self._insert(self._levels[f.priority], part.key, f, part.piece, f.rank(part.piece))

    def _release(self, ps: _Peer, peer: PeerId, part: _Partial, block: int) -> None:
        del ps.requests[(part.key, block)]
        reqs = part.requesters[block]
        del reqs[peer]
        if reqs:
            return
        del part.requesters[block]
        if part.state[block] == _REQUESTED:
            part.state[block] = _FREE
            part.requested -= 1
            part.free += 1
            f = part.file
            if f.priority and (f.avail[part.piece] or f.seeds):
                self._free_available += 1
        self._maybe_idle(part)

    def _drop_requests(self, part: _Partial) -> list[tuple[PeerId, BlockRequest]]:
        cancels = []
        for block, reqs in part.requesters.items():
            for peer in reqs:
                del self._peers[peer].requests[(part.key, block)]
                cancels.append((peer, BlockRequest(part.file.root, part.piece, block)))
        part.requesters.clear()
        return cancels

    def _check_partial(self, part: _Partial) -> int:
        state = part.state
        _expect(state.count(_FREE) == part.free, "partial free count")
        _expect(state.count(_REQUESTED) == part.requested, "partial requested count")
        _expect(state.count(_RECEIVED) == part.received, "partial received count")
        _expect(part.requested or part.received, "idle partial piece")
        for block in range(len(state)):
            reqs = part.requesters.get(block)
            if state[block] == _REQUESTED:
                _expect(bool(reqs), "requested block without requesters")
            else:
                _expect(not reqs, "requesters on a block not in flight")
            if reqs:
                _expect(len(reqs) <= self.max_requests_per_block, "too many requesters")
                for peer in reqs:
                    ps = self._peers.get(peer)
                    _expect(ps is not None and (part.key, block) in ps.requests, "requester")
            _expect((state[block] == _RECEIVED) == (block in part.senders), "senders")
        return part.free

    # the phases of pick

    def _pick_partials(self, ps: _Peer, count: int, out: list[BlockRequest]) -> None:
        candidates = []
        for part in self._partials.values():
            f = part.file
            if part.free and f.priority and self._has(ps, f, part.piece):
                available = f.avail[part.piece] + f.seeds
                candidates.append((-f.priority, available, part.seq, part))
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        for _, _, _, part in candidates:
            state, root, piece = part.state, part.file.root, part.piece
            block = state.find(_FREE)
            while block >= 0:
                out.append(BlockRequest(root, piece, block))
                if len(out) >= count:
                    return
                block = state.find(_FREE, block + 1)

    def _take(self, f: _File, piece: int, count: int, out: list[BlockRequest]) -> None:
        root = f.root
        for block in range(min(f.blocks(piece), count - len(out))):
            out.append(BlockRequest(root, piece, block))

    def _pick_sparse(
        self, ps: _Peer, count: int, rng: random.Random, out: list[BlockRequest]
    ) -> None:
        random_first = self._held_total < self.random_first_pieces
        candidates = []
        for slot, pf in ps.files.items():
            f = self._slots[slot]
            assert f is not None and pf.sparse is not None
            if not f.priority:
                continue
            for piece in pf.sparse:
                if f.pos[piece] >= 0:
                    rank = 0 if random_first else f.rank(piece)
                    candidates.append((-f.priority, rank, rng.random(), slot, piece))
        candidates.sort()
        for _, _, _, slot, piece in candidates:
            f = self._slots[slot]
            assert f is not None
            self._take(f, piece, count, out)
            if len(out) >= count:
                return

    def _pick_levels(
        self, ps: _Peer, count: int, rng: random.Random, out: list[BlockRequest]
    ) -> None:
        random_first = self._held_total < self.random_first_pieces
        lowest = 1 if ps.seeded else 2  # a peer that seeds nothing has no rank-1 piece
        for priority in range(MAX_PRIORITY, 0, -1):
            level = self._levels[priority]
            starts = level.starts
            if len(starts) <= lowest or starts[lowest - 1] == 0:
                continue  # nothing this peer could have at this level
            if random_first:
                self._walk(level, 0, starts[lowest - 1], ps, count, rng, out, -1)
            else:
                budget = self.walk_budget
                for rank in range(lowest, len(starts)):
                    budget = self._walk(
                        level, starts[rank], starts[rank - 1], ps, count, rng, out, budget
                    )
                    if len(out) >= count:
                        return
                    if budget < 0:
                        self._pick_bits(priority, rank, ps, count, rng, out)
                        break
            if len(out) >= count:
                return

    def _walk(
        self,
        level: _Level,
        start: int,
        end: int,
        ps: _Peer,
        count: int,
        rng: random.Random,
        out: list[BlockRequest],
        budget: int,
    ) -> int:
        """Take the pieces the peer has in positions [start, end), from a random offset round,
        looking at no more than `budget` positions (-1: no limit). Returns the budget left, or
        -1 when it ran out before the range did. The hot loop of the picker: kept to local
        lookups and bit tests."""
        size = end - start
        if size <= 0:
            return budget
        middle = start + (rng.randrange(size) if size > 1 else 0)
        items, pfiles, slots = level.items, ps.files, self._slots
        for lo, hi in ((middle, end), (start, middle)):
            stop = hi if budget < 0 else min(hi, lo + budget)
            for i in range(lo, stop):
                key = items[i]
                pf = pfiles.get(key >> 32)
                if pf is None:
                    continue
                piece = key & 0xFFFFFFFF
                bits = pf.bits
                if bits is not None and not bits[piece >> 3] & (0x80 >> (piece & 7)):
                    continue
                f = slots[key >> 32]
                assert f is not None
                self._take(f, piece, count, out)
                if len(out) >= count:
                    return budget
            if budget >= 0:
                if stop < hi:
                    return -1
                budget -= stop - lo
        return budget

    def _pick_bits(
        self,
        priority: int,
        lowest: int,
        ps: _Peer,
        count: int,
        rng: random.Random,
        out: list[BlockRequest],
    ) -> None:
        """Rarest first from rank `lowest` up, by bitsets: for each rank, (the file's pieces at
        that rank) AND (the peer's bitfield) as big ints, then random set bits. The walk gave up
        in rank `lowest`, having finished every rank below; pieces it took are skipped.

        O(ranks · files of the peer at this level · pieces/8 bytes), in C: ~60-150 µs per rank
        for a 1,000,000-piece file, whatever the peer has."""
        taken = {(r.root, r.piece) for r in out}
        files = []
        for slot, pf in ps.files.items():
            f = self._slots[slot]
            assert f is not None
            if f.priority == priority:
                files.append((f, pf))
        top = max((len(f.rank_bits) for f, _ in files), default=0)
        for rank in range(lowest, top):
            found: list[tuple[_File, int]] = []
            for f, pf in files:
                field = f.rank_bits[rank] if rank < len(f.rank_bits) else None
                if field is None:
                    continue
                x = int.from_bytes(field, "big")
                if pf.bits is not None:
                    if pf.as_int is None:
                        pf.as_int = int.from_bytes(pf.bits, "big")
                    x &= pf.as_int
                if x:
                    found.append((f, x))
            while found:
                i = rng.randrange(len(found))
                f, x = found[i]
                width = -(-f.piece_count // 8) * 8
                offset = rng.randrange(width)
                above = x >> offset
                low = above & -above if above else x & -x
                bit = low.bit_length() - 1 + (offset if above else 0)
                x ^= 1 << bit
                if x:
                    found[i] = (f, x)
                else:
                    found.pop(i)
                piece = width - 1 - bit
                if (f.root, piece) in taken:
                    continue
                self._take(f, piece, count, out)
                if len(out) >= count:
                    return

    def _pick_endgame(
        self, peer: PeerId, ps: _Peer, count: int, now: float, out: list[BlockRequest]
    ) -> None:
        limit = self.max_requests_per_block
        awaited = sum(part.requested for part in self._partials.values() if part.file.priority)
        # At the end every block still missing is on its way; early on, peers hold few pieces
        # and the few requested can be all there is to ask for, which is no reason to ask
        # twice (a 100-leecher flash crowd received 7 % of its first 2 s of blocks twice).
        at_end = self.remaining_blocks() <= awaited + len(out)  # out: asked for now
        few = awaited <= self.endgame_outstanding
        patience = 0.0 if at_end and few else self.endgame_patience_s
        candidates = []
        for part in self._partials.values():
            f = part.file
            if not part.requested or not f.priority or not self._has(ps, f, part.piece):
                continue
            for block, reqs in part.requesters.items():
                if peer not in reqs and len(reqs) < limit:
                    waited = now - min(reqs.values())
                    if waited < patience:
                        continue  # many still awaited: only the long-awaited are doubled
                    candidates.append((len(reqs), -waited, part.seq, block, part))
        candidates.sort(key=lambda c: (c[0], c[1], c[2], c[3]))
        for _, _, _, block, part in candidates[: count - len(out)]:
            out.append(BlockRequest(part.file.root, part.piece, block))


def _expect(condition: object, what: str) -> None:
    if not condition:
        raise AssertionError(f"picker invariant broken: {what}")


def _check_priority(priority: int) -> None:
    if not 0 <= priority <= MAX_PRIORITY:
        raise PickerError(f"priority {priority} is not in 0..{MAX_PRIORITY}")


def _check_piece(f: _File, piece: int) -> None:
    if not 0 <= piece < f.piece_count:
        raise PickerError(f"piece {piece} out of range (0..{f.piece_count - 1})")


def _check_bitfield(bits: bytes, piece_count: int) -> bytearray:
    if len(bits) != -(-piece_count // 8):
        raise PickerError(f"bitfield of {len(bits)} bytes for {piece_count} pieces")
    spare = -piece_count % 8
    if spare and bits[-1] & ((1 << spare) - 1):
        raise PickerError("bitfield has spare bits set")
    return bytearray(bits)


def _full_bitfield(piece_count: int) -> bytearray:
    full = bytearray(b"\xff" * (-(-piece_count // 8)))
    spare = -piece_count % 8
    if spare:
        full[-1] = (0xFF << spare) & 0xFF
    return full


def _set_bits(bits: bytes | bytearray) -> list[int]:
    """Indexes of the set bits, ascending. O(len(bits) + set bits)."""
    out = []
    for i, byte in enumerate(bits):
        if byte:
            base = i << 3
            for k in range(8):
                if byte & (0x80 >> k):
                    out.append(base + k)
    return out


def _set_block_counts(f: _File, blocks: BlockCounts, last: int | None) -> None:
    n = f.piece_count
    if isinstance(blocks, int):
        f.full_blocks = blocks
        f.last_blocks = blocks if last is None else last
        for value in (f.full_blocks, f.last_blocks):
            if not 1 <= value <= MAX_BLOCKS_PER_PIECE:
                raise PickerError(f"bad block count {value}")
        return
    if last is not None:
        raise PickerError("last_piece_blocks goes with a single block count")
    counts = [blocks(i) for i in range(n)] if callable(blocks) else list(blocks)
    if len(counts) != n:
        raise PickerError(f"{len(counts)} block counts for {n} pieces")
    for value in counts:
        if not 1 <= value <= MAX_BLOCKS_PER_PIECE:
            raise PickerError(f"bad block count {value}")
    if all(c == counts[0] for c in counts[:-1]):
        f.full_blocks, f.last_blocks = counts[0], counts[-1]
    else:
        f.counts = array("i", counts)
