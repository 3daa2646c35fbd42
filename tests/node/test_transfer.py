"""Request units: how a downloader addresses runs of blocks and checks what comes back."""

from __future__ import annotations

import hashlib

import pytest

from node.swarm.transfer import FileDownload, PieceCache
from wire.merkle import BLOCK_SIZE, MerkleTree
from wire.swarm import MAX_RUN_BLOCKS, Request


def content_of(length: int) -> bytes:
    words = (hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(-(-length // 32)))
    return b"".join(words)[:length]


@pytest.mark.parametrize(
    ("piece_blocks", "length_blocks", "unit"),
    [(8, 20.7, 8), (128, 300.2, MAX_RUN_BLOCKS), (64, 3.5, 4), (1, 9, 1)],
)
def test_every_unit_is_served_with_a_proof_that_verifies_and_fills_its_piece(
    piece_blocks: int, length_blocks: float, unit: int
) -> None:
    """Units are a piece, or 1 MiB of a larger piece, or the real blocks of a file shorter
    than its piece; the last unit of a file may be short. Each is one valid Request."""
    piece_length = piece_blocks * BLOCK_SIZE
    length = int(length_blocks * BLOCK_SIZE)
    content = content_of(length)
    tree = MerkleTree.from_data(content)
    download = FileDownload(tree.root, length, piece_length, tree.piece_layer(piece_length))
    assert download.unit_blocks == unit
    count, per_piece, last = download.picker_layout()
    cache = PieceCache()
    for piece in range(count):
        units = download.units_in(piece)
        assert units == (per_piece if piece < count - 1 else last)
        data = content[piece * piece_length : (piece + 1) * piece_length]
        cached = cache.insert(tree.root, piece_length, piece, data)
        for index in range(units):
            first = download.unit_start(piece, index)
            Request(tree.root, first, download.height, download.unit_blocks).validate()
            run, proof = PieceCache.run_with_proof(
                cached, first - piece * piece_blocks, download.unit_blocks, download.height
            )
            blocks = -(-len(run) // BLOCK_SIZE)
            assert download.locate(first, blocks) == (piece, index)
            assert download.verify(first, run, tuple(proof))
            bad = bytes(run[:-1]) + bytes([run[-1] ^ 1])
            assert not download.verify(first, bad, tuple(proof))
            if blocks > 1:
                assert download.locate(first, blocks - 1) is None
                assert download.locate(first + 1, blocks - 1) is None
            assert download.complete_piece(piece) is None or index == units - 1
            download.keep(piece, index, run)
        assert download.complete_piece(piece) == data
