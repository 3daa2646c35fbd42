"""Runs of blocks: how a downloader cuts them into Requests and checks what comes back."""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import given
from hypothesis import strategies as st

from node.swarm.transfer import FileDownload, PieceCache, aligned_runs
from wire.merkle import BLOCK_SIZE, MerkleTree


@given(st.integers(0, 10_000), st.integers(1, 100), st.sampled_from([1, 2, 4, 8, 16]))
def test_aligned_runs_cover_the_blocks_exactly_in_aligned_powers_of_two(
    first: int, count: int, limit: int
) -> None:
    runs = aligned_runs(first, count, limit)
    covered = [block for start, size in runs for block in range(start, start + size)]
    assert covered == list(range(first, first + count))
    for start, size in runs:
        assert size <= limit and size & (size - 1) == 0 and start % size == 0
    # greedy: no two neighbours could have been one run
    for (a, n), (b, m) in itertools.pairwise(runs):
        assert not (n == m and 2 * n <= limit and a % (2 * n) == 0 and a + n == b)


def test_a_run_served_from_the_cache_is_verified_and_kept_block_by_block() -> None:
    piece_length = 8 * BLOCK_SIZE
    length = 3 * piece_length - 5000  # the last piece holds 8 blocks, the last one short
    content = b"".join(
        hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(-(-length // 32))
    )[:length]
    tree = MerkleTree.from_data(content)
    download = FileDownload(tree.root, length, piece_length, tree.piece_layer(piece_length))
    cache = PieceCache()
    for piece in range(3):
        data = content[piece * piece_length : (piece + 1) * piece_length]
        cached = cache.insert(tree.root, piece_length, piece, data)
        for start, size in aligned_runs(0, download.blocks_in(piece), 4):
            run, proof = PieceCache.run_with_proof(cached, start, size, download.height)
            first = download.file_block(piece, start)
            assert download.verify(first, run, tuple(proof))
            assert not download.verify(first + 1, run, tuple(proof))
            bad = bytes(run[:-1]) + bytes([run[-1] ^ 1])
            assert not download.verify(first, bad, tuple(proof))
            for offset in range(size):
                chunk = run[offset * BLOCK_SIZE : (offset + 1) * BLOCK_SIZE]
                download.keep(first + offset, chunk)
        assert download.complete_piece(piece) == data
