"""Piece arithmetic for the store: piece sizes, piece hashes, layers and held bitfields.

Pure functions on bytes and ints (no I/O), so they are tested on their own and reused by the
store, the crash-test helper and, later, the swarm engine.

**Why pieces are hashed "up to the piece node".** In BEP 52 a piece is verified against its
entry in the file's piece layer: hash the piece's 16 KiB blocks (leaves), then pair them up
(padding a short last piece with zero-hashes, exactly as the whole tree is padded) until one
node remains at the piece layer's height. A file no longer than one piece has no piece layer:
its single piece is checked against the root itself, i.e. hashed up to the tree's own height,
which is lower than the piece height. `node_height` picks the right height for both cases.

**Why several piece lengths for one file.** The piece length belongs to a container, the root
to a file, and the same file appears in containers (and v2 torrents) made with different piece
lengths. The store keeps one record per root at the *finest* piece length it has seen; a coarser
piece is exactly a run of finer ones (piece lengths are powers of two and pieces are aligned to
the file start), so coarser layers are derived by hashing pairs and coarser bitfields by ANDing
runs of bits. Nothing is ever stored twice or verified twice.

Bitfields are BEP 3 style: piece i is bit `0x80 >> (i % 8)` of byte `i // 8`; spare bits in the
last byte are zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from wire.errors import DecodeError
from wire.merkle import (
    block_count,
    check_piece_layer,
    hash_blocks,
    parent_layer,
    piece_count,
    piece_height,
    root_from_layer,
    tree_height,
)


def node_height(length: int, piece_length: int) -> int:
    """Height (above the leaves) of the tree nodes that pieces are verified against: the piece
    layer's height, or the root's height for a file no longer than one piece."""
    return min(piece_height(piece_length), tree_height(block_count(length)))


def piece_size(length: int, piece_length: int, index: int) -> int:
    """Bytes in piece `index` of a file of `length` bytes (the last piece may be short)."""
    if not 0 <= index < piece_count(length, piece_length):
        raise IndexError(f"piece {index} is outside a file of {length} bytes")
    return min(piece_length, length - index * piece_length)


def stored_spans(
    length: int, stored_piece_length: int, index: int, size: int, piece_length: int | None
) -> list[tuple[int, int, int]] | None:
    """The stored pieces that piece `index`, `size` bytes at `piece_length` (a container's;
    None: the stored one), spans in a file of `length` bytes kept at `stored_piece_length`:
    (stored index, offset in the piece, size) each. None if the index or the size is wrong
    for the file. A coarser piece is a run of whole stored ones (piece lengths are powers of
    two, aligned to the file start); a finer one is the caller's error."""
    coarse = piece_length or stored_piece_length
    if coarse < stored_piece_length:
        raise ValueError(
            f"piece length {coarse} is finer than the stored {stored_piece_length} for this root"
        )
    try:
        expected = piece_size(length, coarse, index)
    except IndexError:
        return None
    if size != expected:
        return None
    first = index * coarse // stored_piece_length
    return [
        (first + n, start, min(stored_piece_length, size - start))
        for n, start in enumerate(range(0, size, stored_piece_length))
    ]


def piece_hash(data: bytes | bytearray | memoryview, length: int, piece_length: int) -> bytes:
    """The tree node that a piece's data hashes to (compare it with the piece layer entry)."""
    return root_from_layer(hash_blocks(data), 0, node_height(length, piece_length))


def piece_matches(
    data: bytes | bytearray | memoryview,
    index: int,
    length: int,
    piece_length: int,
    layer: Sequence[bytes],
) -> bool:
    """True if `data` is exactly piece `index` of the file whose piece layer is `layer`."""
    if len(data) != piece_size(length, piece_length, index):
        return False
    return piece_hash(data, length, piece_length) == layer[index]


def normalise_layer(
    layer: Sequence[bytes] | None, root: bytes, length: int, piece_length: int
) -> list[bytes]:
    """Check a piece layer against its root and return it as a list.

    A file no longer than one piece has no piece layer in BEP 52; we store `[root]` for it so
    that "piece i verifies against layer[i]" holds for every file. Raises DecodeError."""
    if piece_count(length, piece_length) == 1:
        if layer is not None and list(layer) not in ([], [root]):
            raise DecodeError("a file no longer than one piece has no piece layer but its root")
        return [root]
    if layer is None:
        raise DecodeError("piece layer missing for a file longer than one piece")
    check_piece_layer(layer, root, length, piece_length)
    return list(layer)


def coarser_layer(
    layer: Sequence[bytes], length: int, piece_length: int, coarse_piece_length: int
) -> list[bytes]:
    """The piece layer for `coarse_piece_length`, derived from the layer for `piece_length`."""
    low = node_height(length, piece_length)
    high = node_height(length, coarse_piece_length)
    if high < low:
        raise ValueError("the target piece length is finer than the stored one")
    current = list(layer)
    for height in range(low, high):
        current = parent_layer(current, height)
    return current


def join_layer(layer: Sequence[bytes]) -> bytes:
    return b"".join(layer)


# -- bitfields ---------------------------------------------------------------------------


def empty_bits(count: int) -> bytes:
    return bytes((count + 7) // 8)


def full_bits(count: int) -> bytes:
    bits = bytearray(b"\xff" * ((count + 7) // 8))
    if count % 8:
        bits[-1] = (0xFF00 >> (count % 8)) & 0xFF
    return bytes(bits)


def has_bit(bits: bytes | bytearray, index: int) -> bool:
    return bool(bits[index >> 3] & (0x80 >> (index & 7)))


def set_bits(bits: bytes | bytearray, indices: Iterable[int], value: bool = True) -> bytes:
    out = bytearray(bits)
    for index in indices:
        if value:
            out[index >> 3] |= 0x80 >> (index & 7)
        else:
            out[index >> 3] &= ~(0x80 >> (index & 7)) & 0xFF
    return bytes(out)


def bit_indices(bits: bytes | bytearray, count: int) -> list[int]:
    return [index for index in range(count) if bits[index >> 3] & (0x80 >> (index & 7))]


def popcount(bits: bytes | bytearray) -> int:
    return int.from_bytes(bits, "big").bit_count()


def pieces_per(coarse_piece_length: int, piece_length: int) -> int:
    """How many fine pieces make one coarse piece (both powers of two)."""
    if coarse_piece_length < piece_length or coarse_piece_length % piece_length:
        raise ValueError("piece lengths must be powers of two, coarse ≥ fine")
    return coarse_piece_length // piece_length


def coarser_bits(bits: bytes, count: int, ratio: int) -> tuple[bytes, int]:
    """A coarse piece is held when every fine piece in it is. Returns (bits, coarse count)."""
    coarse_count = (count + ratio - 1) // ratio
    held = [
        index
        for index in range(coarse_count)
        if all(
            has_bit(bits, fine) for fine in range(index * ratio, min(count, (index + 1) * ratio))
        )
    ]
    return set_bits(empty_bits(coarse_count), held), coarse_count


def finer_bits(bits: bytes, coarse_count: int, ratio: int, count: int) -> bytes:
    """Every fine piece inside a held coarse piece is held."""
    held = [
        fine
        for index in bit_indices(bits, coarse_count)
        for fine in range(index * ratio, min(count, (index + 1) * ratio))
    ]
    return set_bits(empty_bits(count), held)
