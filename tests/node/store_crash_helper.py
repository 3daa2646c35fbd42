"""A download that gets killed: the child process of `test_store_crash.py`.

Run as `python store_crash_helper.py DATA_DIR DOWNLOAD_DIR SEED`. It opens a Store, starts (or
resumes) the download of a container whose bytes are regenerated from SEED, and writes the
pieces it does not hold yet, in a random order, singly and in batches, slipping in corrupt
pieces that must be refused. It prints one line per step (`held N`, `phase NAME`,
`done PATH`) and flushes, so the parent can kill it at chosen moments:

* `KS_PAUSE_AT=NAME` (a Store phase: pieces-synced, move-intent, moved) and
  `KS_PAUSE_COUNT=K`: at the K-th time that phase is reached, print it and sleep, so the parent's
  SIGKILL lands exactly there (after the fsync and before the commit, say).

Also imported by the tests for `container_files` and `build_container`, so both sides agree
on the bytes without sharing any state but the seed.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

from wire.container import FileEntry, Manifest
from wire.merkle import MerkleTree

NAME = "crash test"
PIECE_LENGTH = 32 * 1024
FILE_LENGTHS: dict[str, int] = {
    "a.bin": 5 * 512 * 1024 + 123,
    "empty": 0,
    "one piece.bin": PIECE_LENGTH,
    "sub/b.bin": 2 * 1024 * 1024,
    "sub/deeper/c.bin": 20_000,
}


def container_files(seed: int) -> dict[str, bytes]:
    """The container's files (path → bytes), the same for the same seed in every process."""
    rng = random.Random(seed)
    return {path: rng.randbytes(length) for path, length in FILE_LENGTHS.items()}


def build_container(
    name: str, files: dict[str, bytes], piece_length: int
) -> tuple[Manifest, dict[bytes, list[bytes]]]:
    """The manifest and piece layers (root → layer) of `files` (path with `/` → bytes)."""
    entries = []
    layers: dict[bytes, list[bytes]] = {}
    for path, data in files.items():
        if not data:
            entries.append(FileEntry(tuple(path.split("/")), 0, None))
            continue
        tree = MerkleTree.from_data(data)
        entries.append(FileEntry(tuple(path.split("/")), len(data), tree.root))
        layers[tree.root] = tree.piece_layer(piece_length)
    return Manifest.build(name=name, piece_length=piece_length, files=entries), layers


def main() -> None:
    from node.store import Store

    data_dir, download_dir, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    pause_at = os.environ.get("KS_PAUSE_AT")
    pause_count = int(os.environ.get("KS_PAUSE_COUNT", "1"))
    seen: dict[str, int] = {}

    def on_phase(phase: str) -> None:
        seen[phase] = seen.get(phase, 0) + 1
        if phase == pause_at and seen[phase] == pause_count:
            print(f"phase {phase}", flush=True)
            time.sleep(60)

    files = container_files(seed)
    manifest, layers = build_container(NAME, files, PIECE_LENGTH)
    by_root = {entry.root: files["/".join(entry.path)] for entry in manifest.files if entry.root}
    rng = random.Random(f"{seed}/{os.getpid()}")
    with Store(data_dir) as store:
        store.on_phase = on_phase
        record = store.get(manifest.id)
        if record is None:
            record = store.add_container(manifest, layers, download_dir, complete=False, now=0.0)
        wanted = [
            (root, index)
            for root in by_root
            for index in range(store.held(root).count)
            if index not in store.held(root)
        ]
        rng.shuffle(wanted)
        print(f"start {len(wanted)}", flush=True)
        while wanted:
            batch = [wanted.pop() for _ in range(min(len(wanted), rng.choice([1, 1, 2, 5])))]
            pieces = []
            for root, index in batch:
                data = by_root[root][index * PIECE_LENGTH : (index + 1) * PIECE_LENGTH]
                pieces.append((root, index, data))
            if rng.random() < 0.15:  # a corrupt piece from a lying peer, mixed into the batch
                root, index, data = pieces[0]
                spoiled = bytearray(data)
                spoiled[rng.randrange(len(spoiled))] ^= 0x40
                result = store.write_pieces([(root, index, bytes(spoiled))])
                if result.ok:
                    raise SystemExit("a corrupt piece was accepted")
            result = store.write_pieces(pieces)
            if not result.ok:
                raise SystemExit(f"good pieces were refused: {result.refused}")
            print(f"held {sum(len(store.held(root)) for root in by_root)}", flush=True)
            if result.completed:
                break
        record = store.get(manifest.id)
        assert record is not None
        print(f"done {record.state} {record.location}", flush=True)


if __name__ == "__main__":
    main()
