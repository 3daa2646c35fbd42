"""Node ids, keys and XOR distance.

A node id is 256 bits, SHA-256 of the node's Ed25519 public key (`wire.identity.node_id_of`),
so nobody can pick where they sit in the id space: to land next to a key an attacker must
grind keys. Keys of stored things (container ids, record keys) live in the same space.
Distances are compared as integers; ids travel as 32 bytes.
"""

from __future__ import annotations

from typing import Final

ID_BYTES: Final = 32
ID_BITS: Final = 8 * ID_BYTES


def id_to_int(node_id: bytes) -> int:
    return int.from_bytes(node_id, "big")


def distance(a: bytes, b: bytes) -> int:
    return id_to_int(a) ^ id_to_int(b)


def common_prefix_length(a: bytes, b: bytes) -> int:
    """How many leading bits `a` and `b` share (256 if equal)."""
    return ID_BITS - distance(a, b).bit_length()


def id_in_bucket(own_id: bytes, prefix_length: int, random_bits: bytes) -> bytes:
    """An id sharing exactly `prefix_length` leading bits with `own_id` (for refreshing the
    bucket at that depth); the remaining bits come from `random_bits` (32 bytes)."""
    if not 0 <= prefix_length < ID_BITS:
        raise ValueError("prefix length out of range")
    own = id_to_int(own_id)
    suffix_bits = ID_BITS - prefix_length - 1
    flipped_bit = 1 << suffix_bits
    keep_mask = ((1 << ID_BITS) - 1) ^ ((flipped_bit << 1) - 1)
    random_suffix = id_to_int(random_bits) & (flipped_bit - 1)
    value = (own & keep_mask) | ((own & flipped_bit) ^ flipped_bit) | random_suffix
    return value.to_bytes(ID_BYTES, "big")
