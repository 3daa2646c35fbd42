"""BEP 52 trees: proofs verify exactly the right blocks, piece layers match roots."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.errors import DecodeError
from wire.merkle import (
    BLOCK_SIZE,
    MerkleTree,
    check_piece_layer,
    hash_blocks,
    pad_hash,
    range_proof,
    root_of_leaves,
    split_layer,
    verify_block,
    verify_range,
)

sizes = st.integers(min_value=1, max_value=40 * BLOCK_SIZE + 100)


def data_of(size: int, seed: int = 0) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def naive_root(data: bytes) -> bytes:
    """The definition, spelled out: zero leaves up to a power of two, hash pairs."""
    leaves = [
        hashlib.sha256(data[i : i + BLOCK_SIZE]).digest() for i in range(0, len(data), BLOCK_SIZE)
    ]
    width = 1
    while width < len(leaves):
        width *= 2
    layer = leaves + [bytes(32)] * (width - len(leaves))
    while len(layer) > 1:
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0]


@settings(max_examples=40)
@given(sizes)
def test_root_matches_the_definition(size: int) -> None:
    data = data_of(size)
    assert MerkleTree.from_data(data).root == naive_root(data)
    assert root_of_leaves(hash_blocks(data)) == naive_root(data)


@settings(max_examples=40)
@given(sizes, st.sampled_from([16384, 32768, 65536, 262144]), st.data())
def test_block_proofs_to_the_piece_layer_and_to_the_root(
    size: int, piece_length: int, data: st.DataObject
) -> None:
    content = data_of(size, 1)
    tree = MerkleTree.from_data(content)
    layer = tree.piece_layer(piece_length)
    if len(layer) > 1:
        check_piece_layer(layer, tree.root, size, piece_length)
    index = data.draw(st.integers(0, len(tree.layers[0]) - 1))
    block = content[index * BLOCK_SIZE : (index + 1) * BLOCK_SIZE]
    blocks_per_piece = piece_length // BLOCK_SIZE
    height = blocks_per_piece.bit_length() - 1
    piece_proof = tree.proof(index, up_to_height=height)
    trusted = layer[index // blocks_per_piece] if len(layer) > 1 else tree.root
    assert verify_block(block, index, piece_proof, trusted)
    assert verify_block(block, index, tree.proof(index), tree.root)
    tampered = bytes([block[0] ^ 1]) + block[1:]
    assert not verify_block(tampered, index, piece_proof, trusted)
    if len(tree.layers[0]) > 1:
        # The right block with the wrong index (or proof) does not verify either.
        other = (index + 1) % len(tree.layers[0])
        if content[other * BLOCK_SIZE : (other + 1) * BLOCK_SIZE] != block:
            assert not verify_block(block, other, tree.proof(other), tree.root)


def test_a_wrong_piece_layer_is_rejected() -> None:
    content = data_of(10 * BLOCK_SIZE)
    tree = MerkleTree.from_data(content)
    layer = tree.piece_layer(BLOCK_SIZE * 2)
    check_piece_layer(layer, tree.root, len(content), BLOCK_SIZE * 2)
    with pytest.raises(DecodeError, match="does not match"):
        check_piece_layer([layer[1], layer[0], *layer[2:]], tree.root, len(content), BLOCK_SIZE * 2)
    with pytest.raises(DecodeError, match="pieces"):
        check_piece_layer(layer[:-1], tree.root, len(content), BLOCK_SIZE * 2)
    with pytest.raises(DecodeError, match="power of two"):
        check_piece_layer(layer, tree.root, len(content), 3 * BLOCK_SIZE)


def test_pad_hashes_are_subtrees_of_zero_leaves() -> None:
    assert pad_hash(0) == bytes(32)
    assert pad_hash(1) == hashlib.sha256(bytes(64)).digest()
    assert pad_hash(2) == hashlib.sha256(pad_hash(1) * 2).digest()


def test_oversized_or_empty_blocks_never_verify() -> None:
    tree = MerkleTree.from_data(b"x")
    assert not verify_block(b"", 0, [], tree.root)
    assert not verify_block(b"x" * (BLOCK_SIZE + 1), 0, [], tree.root)
    assert verify_block(b"x", 0, [], tree.root)


def test_split_layer_requires_whole_hashes() -> None:
    assert split_layer(bytes(64)) == [bytes(32), bytes(32)]
    with pytest.raises(DecodeError):
        split_layer(bytes(33))


@settings(max_examples=40)
@given(sizes, st.sampled_from([16384, 65536, 262144]), st.data())
def test_runs_of_blocks_verify_against_their_piece_and_nothing_else(
    size: int, piece_length: int, data: st.DataObject
) -> None:
    """A run (an aligned subtree of 2**k blocks, shorter only where the file ends) travels
    with the proof from its subtree's node; it verifies where it belongs, never elsewhere."""
    content = data_of(size, 2)
    tree = MerkleTree.from_data(content)
    layer = tree.piece_layer(piece_length)
    per_piece = piece_length // BLOCK_SIZE
    height = min(per_piece.bit_length() - 1, tree.height)
    leaves = tree.layers[0]
    piece = data.draw(st.integers(0, len(layer) - 1))
    piece_leaves = leaves[piece * per_piece : (piece + 1) * per_piece]
    count = 1 << data.draw(st.integers(0, height))
    first = data.draw(st.integers(0, (len(piece_leaves) - 1) // count)) * count
    sent = min(count, len(piece_leaves) - first)
    proof = range_proof(piece_leaves, first, sent, height)
    index = piece * per_piece + first
    run = content[index * BLOCK_SIZE : (index + sent) * BLOCK_SIZE]
    assert verify_range(run, index, proof, layer[piece])
    if sent == 1:
        assert verify_block(run, index, proof, layer[piece])
    tampered = run[:-1] + bytes([run[-1] ^ 1])
    assert not verify_range(tampered, index, proof, layer[piece])
    if sent > 1:  # a run cut short, or a block of it alone, does not verify
        assert not verify_range(run[:BLOCK_SIZE], index, proof, layer[piece])
    if len(layer) > 1:
        other = (piece + 1) % len(layer)
        assert layer[other] == layer[piece] or not verify_range(run, index, proof, layer[other])


def test_a_run_must_be_an_aligned_subtree() -> None:
    leaves = hash_blocks(data_of(8 * BLOCK_SIZE))
    with pytest.raises(ValueError, match="not a subtree"):
        range_proof(leaves, 2, 4, 3)  # 4 blocks from 2 straddle two subtrees
    with pytest.raises(ValueError, match="not a subtree"):
        range_proof(leaves, 0, 16, 3)  # more than the piece
    with pytest.raises(ValueError, match="only the last run"):
        range_proof(leaves, 0, 3, 3)  # 3 of 4 in the middle of a piece
    assert not verify_range(b"", 0, [], bytes(32))
    assert not verify_range(data_of(2 * BLOCK_SIZE), 1, [], bytes(32))  # misaligned
