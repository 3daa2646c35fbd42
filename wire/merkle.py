"""BitTorrent v2 (BEP 52) Merkle trees: file roots, piece layers and block proofs.

A file is cut into 16 KiB blocks; each block's SHA-256 is a leaf (the last block may be
short and is hashed as it is). The leaves are padded with zero hashes (32 zero bytes) up to a
power of two, and each parent is SHA-256(left || right). The top is the file's **root**: the
same file has the same root in every container (and every v2 torrent) that holds it. A file of
length 0 has no root.

The **piece layer** is the tree layer whose nodes each cover one piece (`piece_length`, a
power of two ≥ 16 KiB): it is what a peer fetches once, checks against the root, and then
verifies whole pieces or single blocks against. A block's **proof** is the list of sibling
hashes from its leaf up to its piece's node (or up to the root), so a block received from
anyone is checked on its own and a bad one is pinned on the peer that sent it.

Padding is never materialised: a missing right sibling at height h is `pad_hash(h)`, the root
of a subtree of 2**h zero leaves. Everything here is pure computation on bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

from wire.errors import DecodeError

BLOCK_SIZE: Final = 16 * 1024
HASH_SIZE: Final = 32
ZERO_HASH: Final = bytes(HASH_SIZE)
MIN_PIECE_LENGTH: Final = BLOCK_SIZE
MAX_PIECE_LENGTH: Final = 64 * 1024 * 1024
_MAX_HEIGHT: Final = 64

_sha256 = hashlib.sha256


@lru_cache(maxsize=_MAX_HEIGHT + 1)
def pad_hash(height: int) -> bytes:
    """The root of a subtree of 2**height zero leaves (height 0 is the zero leaf itself)."""
    if height == 0:
        return ZERO_HASH
    below = pad_hash(height - 1)
    return _sha256(below + below).digest()


def check_piece_length(piece_length: int) -> int:
    """Raise DecodeError unless `piece_length` is a power of two in the allowed range."""
    if not MIN_PIECE_LENGTH <= piece_length <= MAX_PIECE_LENGTH or piece_length & (
        piece_length - 1
    ):
        raise DecodeError(
            f"piece length {piece_length} is not a power of two between "
            f"{MIN_PIECE_LENGTH} and {MAX_PIECE_LENGTH}"
        )
    return piece_length


def piece_height(piece_length: int) -> int:
    """How many layers above the leaves the piece layer is (0 for 16 KiB pieces)."""
    return check_piece_length(piece_length).bit_length() - BLOCK_SIZE.bit_length()


def block_count(length: int) -> int:
    return (length + BLOCK_SIZE - 1) // BLOCK_SIZE


def piece_count(length: int, piece_length: int) -> int:
    return (length + piece_length - 1) // piece_length


def tree_height(leaf_count: int) -> int:
    """Height of the tree over `leaf_count` leaves padded to a power of two."""
    return max(0, (leaf_count - 1).bit_length())


def hash_blocks(data: bytes | bytearray | memoryview) -> list[bytes]:
    """The leaf hashes of `data`, block by block (the last block may be short)."""
    view = memoryview(data)
    return [
        _sha256(view[start : start + BLOCK_SIZE]).digest()
        for start in range(0, len(view), BLOCK_SIZE)
    ]


def parent_layer(layer: Sequence[bytes], height: int) -> list[bytes]:
    """The layer above `layer` (whose nodes sit at `height`), padding an odd end."""
    out: list[bytes] = []
    count = len(layer)
    for index in range(0, count - 1, 2):
        out.append(_sha256(layer[index] + layer[index + 1]).digest())
    if count % 2:
        out.append(_sha256(layer[-1] + pad_hash(height)).digest())
    return out


def root_from_layer(layer: Sequence[bytes], height: int, total_height: int) -> bytes:
    """Hash `layer` (nodes at `height`) up to the root at `total_height`."""
    if not layer:
        raise ValueError("an empty layer has no root")
    current = list(layer)
    for level in range(height, total_height):
        current = parent_layer(current, level)
    if len(current) != 1:
        raise ValueError("the layer is wider than the tree height allows")
    return current[0]


def root_of_leaves(leaves: Sequence[bytes]) -> bytes:
    """The root of a file whose leaf hashes are `leaves`."""
    return root_from_layer(leaves, 0, tree_height(len(leaves)))


def root_from_piece_layer(piece_layer: Sequence[bytes], length: int, piece_length: int) -> bytes:
    """The root implied by a file's piece layer (for files longer than one piece)."""
    height = piece_height(piece_length)
    total = tree_height(block_count(length))
    if length <= piece_length:
        raise DecodeError("a file no longer than one piece has no piece layer (BEP 52)")
    if len(piece_layer) != piece_count(length, piece_length):
        raise DecodeError(
            f"piece layer has {len(piece_layer)} hashes; a file of {length} bytes has "
            f"{piece_count(length, piece_length)} pieces"
        )
    return root_from_layer(piece_layer, height, total)


def check_piece_layer(
    piece_layer: Sequence[bytes], root: bytes, length: int, piece_length: int
) -> None:
    """Raise DecodeError unless `piece_layer` hashes up to `root`."""
    if any(len(node) != HASH_SIZE for node in piece_layer):
        raise DecodeError("piece layer hashes must be 32 bytes")
    if root_from_piece_layer(piece_layer, length, piece_length) != root:
        raise DecodeError("piece layer does not match the file root")


def split_layer(data: bytes) -> list[bytes]:
    """Cut concatenated 32-byte hashes (as stored or sent) into a list."""
    if len(data) % HASH_SIZE:
        raise DecodeError("concatenated hashes must be a multiple of 32 bytes")
    return [data[start : start + HASH_SIZE] for start in range(0, len(data), HASH_SIZE)]


class MerkleTree:
    """Every layer of one file's tree, for building piece layers and proofs.

    `layers[0]` are the leaves, `layers[-1]` is `[root]`; padding is implicit."""

    __slots__ = ("layers", "length")

    def __init__(self, leaves: Sequence[bytes], length: int) -> None:
        if not leaves:
            raise ValueError("an empty file has no tree")
        if len(leaves) != block_count(length):
            raise ValueError("leaf count does not match the length")
        self.length = length
        self.layers: list[list[bytes]] = [list(leaves)]
        for height in range(tree_height(len(leaves))):
            self.layers.append(parent_layer(self.layers[-1], height))

    @classmethod
    def from_data(cls, data: bytes | bytearray | memoryview) -> MerkleTree:
        return cls(hash_blocks(data), len(data))

    @property
    def root(self) -> bytes:
        return self.layers[-1][0]

    @property
    def height(self) -> int:
        return len(self.layers) - 1

    def piece_layer(self, piece_length: int) -> list[bytes]:
        """One hash per piece. For a file no longer than one piece, that is `[root]`."""
        height = piece_height(piece_length)
        if height >= self.height:
            return [self.root]
        return list(self.layers[height])

    def node(self, height: int, index: int) -> bytes:
        layer = self.layers[height]
        return layer[index] if index < len(layer) else pad_hash(height)

    def proof(self, leaf_index: int, up_to_height: int | None = None) -> list[bytes]:
        """Sibling hashes from leaf `leaf_index` up to `up_to_height` (default: the root)."""
        if not 0 <= leaf_index < len(self.layers[0]):
            raise IndexError(f"block {leaf_index} is outside the file")
        top = self.height if up_to_height is None else min(up_to_height, self.height)
        siblings = []
        index = leaf_index
        for height in range(top):
            siblings.append(self.node(height, index ^ 1))
            index >>= 1
        return siblings


def node_from_proof(leaf_hash: bytes, leaf_index: int, proof: Sequence[bytes]) -> bytes:
    """Walk `proof` (sibling hashes, bottom up) from a leaf; return the node it reaches at
    height `len(proof)`. The caller compares that with the hash it trusts."""
    node = leaf_hash
    index = leaf_index
    for sibling in proof:
        if len(sibling) != HASH_SIZE:
            raise DecodeError("proof hashes must be 32 bytes")
        node = _sha256(sibling + node if index & 1 else node + sibling).digest()
        index >>= 1
    return node


def verify_block(
    block: bytes | bytearray | memoryview,
    block_index: int,
    proof: Sequence[bytes],
    trusted: bytes,
) -> bool:
    """True if `block` (block number `block_index` of its file) hashes up through `proof` to
    `trusted`: its piece's hash from the piece layer, or the root for a full-height proof."""
    if len(block) > BLOCK_SIZE or not block:
        return False
    return node_from_proof(_sha256(block).digest(), block_index, proof) == trusted


def span_height(block_count: int) -> int:
    """Height of the smallest aligned subtree holding a run of `block_count` blocks: a run
    of blocks travels as that subtree's leaves (a power of two of them, or fewer at the
    file's end, where the rest are zero leaves)."""
    return tree_height(block_count)


def range_proof(leaves: Sequence[bytes], first: int, count: int, height: int) -> list[bytes]:
    """Sibling hashes from the subtree holding blocks `first .. first + count - 1` up to
    height `height`, for a piece whose leaf hashes are `leaves` (indices within the piece;
    missing leaves are zero leaves). The run must be an aligned subtree: `count` a power of
    two dividing `first`, or shorter only where the piece's leaves end."""
    span = span_height(count)
    aligned = count >= 1 and first % (1 << span) == 0 and span <= height
    if not aligned or first + count > len(leaves):
        raise ValueError(f"blocks {first}+{count} are not a subtree of a piece of height {height}")
    if count != 1 << span and first + count != len(leaves):
        raise ValueError(f"blocks {first}+{count}: only the last run of a piece may be short")
    layer = list(leaves)
    for level in range(span):
        layer = parent_layer(layer, level)
    siblings = []
    position = first >> span
    for level in range(span, height):
        sibling = position ^ 1
        siblings.append(layer[sibling] if sibling < len(layer) else pad_hash(level))
        layer = parent_layer(layer, level)
        position >>= 1
    return siblings


def verify_range(
    data: bytes | bytearray | memoryview,
    first_block: int,
    proof: Sequence[bytes],
    trusted: bytes,
) -> bool:
    """True if `data`, blocks `first_block ...` of a file forming an aligned subtree (its
    leaves padded with zero leaves), hashes up through `proof` to `trusted`. For one block
    this is `verify_block`."""
    if not data:
        return False
    leaves = hash_blocks(data)
    span = span_height(len(leaves))
    if first_block % (1 << span):
        return False
    node = root_from_layer(leaves, 0, span)
    return node_from_proof(node, first_block >> span, proof) == trusted
