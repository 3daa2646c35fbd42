"""Hashing folders into containers on every core gives exactly the single-threaded tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from node.hashing import UNIT_BYTES, ScanError, build_container, choose_piece_length, scan
from wire.merkle import MerkleTree


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize(
    "size",
    [1, 16384, 16385, UNIT_BYTES - 1, UNIT_BYTES, UNIT_BYTES + 1, 3 * UNIT_BYTES + 16384 * 5 + 7],
)
async def test_roots_and_piece_layers_match_the_reference_tree(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    write(tmp_path / "data" / "file.bin", data)
    manifest, layers, _ = await build_container(
        tmp_path / "data", run_blocking=trio.to_thread.run_sync, workers=2
    )
    reference = MerkleTree.from_data(data)
    (entry,) = manifest.files
    assert entry.root == reference.root
    assert layers[reference.root] == reference.piece_layer(manifest.piece_length)


async def test_a_folder_becomes_a_sorted_manifest(tmp_path: Path) -> None:
    files = {
        "b/z.txt": b"zz",
        "a.txt": b"a" * 40000,
        "b/empty": b"",
        "c/d/e.bin": os.urandom(70000),
    }
    for name, data in files.items():
        write(tmp_path / "set" / name, data)
    manifest, _, scanned = await build_container(
        tmp_path / "set", run_blocking=trio.to_thread.run_sync, name="my set"
    )
    assert manifest.name == "my set"
    assert [f.path for f in manifest.files] == [
        ("a.txt",),
        ("b", "empty"),
        ("b", "z.txt"),
        ("c", "d", "e.bin"),
    ]
    for entry in manifest.files:
        data = files["/".join(entry.path)]
        assert entry.length == len(data)
        assert entry.root == (MerkleTree.from_data(data).root if data else None)
    assert len(scanned) == 4
    again, _, _ = await build_container(
        tmp_path / "set", run_blocking=trio.to_thread.run_sync, name="my set", workers=1
    )
    assert again.id == manifest.id, "the id depends on content only, not on threads"


async def test_a_single_file_is_its_own_container(tmp_path: Path) -> None:
    write(tmp_path / "song.flac", b"music")
    manifest, _, _ = await build_container(
        tmp_path / "song.flac", run_blocking=trio.to_thread.run_sync
    )
    assert manifest.name == "song.flac"
    assert [f.path for f in manifest.files] == [("song.flac",)]


def test_symlinks_are_skipped_and_unsafe_names_refused(tmp_path: Path) -> None:
    write(tmp_path / "ok" / "real.txt", b"x")
    (tmp_path / "ok" / "link.txt").symlink_to(tmp_path / "ok" / "real.txt")
    assert [f.path for f in scan(tmp_path / "ok")] == [("real.txt",)]
    write(tmp_path / "bad" / "CON.txt", b"x")
    with pytest.raises(ScanError, match="reserved name"):
        scan(tmp_path / "bad")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ScanError, match="neither a regular file"):
        scan(tmp_path / "fifo")
    with pytest.raises(ScanError, match="cannot read"):
        scan(tmp_path / "missing")


def test_piece_length_grows_with_size() -> None:
    assert choose_piece_length(0) == 16384
    assert choose_piece_length(10 * 1024 * 1024) == 16384
    assert choose_piece_length(1 << 30) == 512 * 1024
    assert choose_piece_length(1 << 42) == 16 * 1024 * 1024
