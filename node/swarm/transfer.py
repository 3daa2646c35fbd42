"""Moving file data: the downloader's per-file state and the uploader's piece cache.

Both work in the container's piece length. A block travels with the sibling hashes from its
leaf up to its piece (`proof_height` levels), so the receiver checks it against one hash of the
piece layer it already verified against the file's root; a file no longer than one piece is
its own piece and its root is the trusted hash. A block that does not verify is pinned on the
peer that sent it, before anything is written.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Final

import attrs

from wire.merkle import (
    BLOCK_SIZE,
    block_count,
    hash_blocks,
    pad_hash,
    piece_height,
    range_proof,
    span_height,
    tree_height,
    verify_range,
)
from wire.swarm import MAX_RUN_BLOCKS

CACHE_BYTES: Final = 64 * 1024 * 1024
"""Pieces kept in memory by the uploader: a peer asks for a piece's blocks one after the
other, so one read (and one hashing of the piece) serves them all."""


def proof_height(length: int, piece_length: int) -> int:
    """Levels from a block to the hash that checks it (its piece, or the root)."""
    return min(piece_height(piece_length), tree_height(block_count(length)))


@attrs.define(eq=False)
class FileDownload:
    """One file (root) being fetched, in the container's piece length."""

    root: bytes
    length: int
    piece_length: int
    layer: list[bytes]
    """The piece layer, verified against the root (`[root]` for a one-piece file)."""
    blocks_per_piece: int = 0
    height: int = 0
    unit_blocks: int = 0
    """Blocks per request unit: the run one Request asks for and one Block carries, and what
    the picker counts in (a piece, or 1 MiB of a larger piece; at a file's end, fewer)."""
    received: dict[int, dict[int, memoryview | bytes]] = attrs.Factory(dict)
    """Units received (and verified) per piece not yet written: unit → its bytes (views of
    the messages they came in, so nothing is copied until a piece of several is joined)."""

    def __attrs_post_init__(self) -> None:
        self.blocks_per_piece = self.piece_length // BLOCK_SIZE
        self.height = proof_height(self.length, self.piece_length)
        self.unit_blocks = min(MAX_RUN_BLOCKS, 1 << self.height)

    def units_in(self, piece: int) -> int:
        return -(-self.blocks_in(piece) // self.unit_blocks)

    def picker_layout(self) -> tuple[int, int, int]:
        """(pieces, units per full piece, units in the last piece), for `PiecePicker`."""
        count = self.piece_count
        return count, self.units_in(0), self.units_in(count - 1)

    def unit_start(self, piece: int, unit: int) -> int:
        """The file block a unit starts at."""
        return piece * self.blocks_per_piece + unit * self.unit_blocks

    def unit_blocks_in(self, piece: int, unit: int) -> int:
        return min(self.unit_blocks, self.blocks_in(piece) - unit * self.unit_blocks)

    def locate(self, first_block: int, blocks: int) -> tuple[int, int] | None:
        """(piece, unit) if blocks `first_block ..` are exactly one unit, else None."""
        piece, block = self.split(first_block)
        unit, offset = divmod(block, self.unit_blocks)
        if offset or not 0 <= piece < self.piece_count or unit >= self.units_in(piece):
            return None
        return (piece, unit) if blocks == self.unit_blocks_in(piece, unit) else None

    @property
    def piece_count(self) -> int:
        return -(-self.length // self.piece_length)

    def piece_size(self, piece: int) -> int:
        return min(self.piece_length, self.length - piece * self.piece_length)

    def blocks_in(self, piece: int) -> int:
        return -(-self.piece_size(piece) // BLOCK_SIZE)

    def file_block(self, piece: int, block: int) -> int:
        return piece * self.blocks_per_piece + block

    def split(self, file_block: int) -> tuple[int, int]:
        return divmod(file_block, self.blocks_per_piece)

    def verify(self, file_block: int, data: memoryview | bytes, proof: tuple[bytes, ...]) -> bool:
        """Is this a true run of blocks from `file_block` (one or more, as a Block carries
        them), inside one piece? False means pin it on the sender."""
        piece, block = self.split(file_block)
        count = -(-len(data) // BLOCK_SIZE)
        if not 0 <= piece < self.piece_count or block + count > self.blocks_in(piece):
            return False
        expected = min(count * BLOCK_SIZE, self.piece_size(piece) - block * BLOCK_SIZE)
        if len(data) != expected or len(proof) != self.height - span_height(count):
            return False
        return verify_range(data, file_block, proof, self.layer[piece])

    def keep(self, piece: int, unit: int, data: memoryview | bytes) -> None:
        """Keep one verified unit until its piece is complete."""
        self.received.setdefault(piece, {})[unit] = data

    def complete_piece(self, piece: int) -> memoryview | bytes | None:
        """The piece's bytes if every unit is in (and forgets them). A piece of one unit is
        handed over as it came; units are joined in order otherwise."""
        units = self.received.get(piece)
        if units is None or len(units) != self.units_in(piece):
            return None
        del self.received[piece]
        if len(units) == 1:
            return units[0]
        return b"".join(units[unit] for unit in range(len(units)))

    def forget(self, piece: int) -> None:
        self.received.pop(piece, None)


@attrs.define(eq=False)
class _CachedPiece:
    data: bytes | bytearray
    _leaves: list[bytes] | None = None

    @property
    def block_count(self) -> int:
        return -(-len(self.data) // BLOCK_SIZE)

    @property
    def leaves(self) -> list[bytes]:
        """The blocks' hashes, computed the first time a proof needs them: a run that is
        the whole piece needs none."""
        if self._leaves is None:
            self._leaves = hash_blocks(self.data)
        return self._leaves


class PieceCache:
    """The uploader's LRU of pieces with their leaf hashes, to serve blocks with proofs."""

    def __init__(self, limit_bytes: int = CACHE_BYTES) -> None:
        self._pieces: OrderedDict[tuple[bytes, int, int], _CachedPiece] = OrderedDict()
        self._bytes = 0
        self._limit = limit_bytes
        self.hits = 0
        self.misses = 0

    def lookup(self, root: bytes, piece_length: int, piece: int) -> _CachedPiece | None:
        cached = self._pieces.get((root, piece_length, piece))
        if cached is not None:
            self._pieces.move_to_end((root, piece_length, piece))
            self.hits += 1
        return cached

    def insert(
        self, root: bytes, piece_length: int, piece: int, data: bytes | bytearray
    ) -> _CachedPiece:
        self.misses += 1
        cached = _CachedPiece(data)
        key = (root, piece_length, piece)
        if key not in self._pieces:
            self._pieces[key] = cached
            self._bytes += len(data)
        while self._bytes > self._limit and len(self._pieces) > 1:
            _, old = self._pieces.popitem(last=False)
            self._bytes -= len(old.data)
        return cached

    @staticmethod
    def run_with_proof(
        cached: _CachedPiece, block: int, count: int, height: int
    ) -> tuple[memoryview, list[bytes]]:
        """Blocks `block .. block + count - 1` of the piece (fewer where the piece ends) and
        the proof from their subtree up to `height`."""
        blocks = cached.block_count
        count = min(count, blocks - block)
        start = block * BLOCK_SIZE
        data = memoryview(cached.data)[start : start + count * BLOCK_SIZE]
        if block == 0 and count == blocks:  # the whole piece: only padding above it
            return data, [pad_hash(level) for level in range(span_height(count), height)]
        return data, range_proof(cached.leaves, block, count, height)

    def drop_root(self, root: bytes) -> None:
        for key in [k for k in self._pieces if k[0] == root]:
            self._bytes -= len(self._pieces.pop(key).data)


def container_key(container_id: bytes) -> bytes:
    """The DHT key a container's providers are announced under: its id."""
    return container_id


def check_manifest(container_id: bytes, data: bytes) -> bool:
    return hashlib.sha256(data).digest() == container_id
