"""How fast does adding data go, against plain SHA-256 on one core?

In one run, over the same 1 GiB file (created once, then read from the page cache):

* reference: `hashlib.sha256` over the whole file, one thread, read in 4 MiB steps;
* ours: `node.hashing.build_container` — scanning, 16 KiB leaf hashing on every core, the BEP 52
  Merkle tree and piece layers, the manifest.

Each is the best of `--repeat` runs. The last line is `ratio: <ours / hashlib>`; the goal is
>= 1.5 (two cores, Merkle overhead included).

With `--containers N` (default 100,000; 0 skips it) it also builds a store of N containers
(one file each, named by a URL and a btih infohash) and measures `Store.resolve` lookups per
second for each kind of name, against a bare SQLite primary-key lookup on the same database.

    .venv/bin/python bench/bench_hashing.py [--mib 1024] [--repeat 3] [--containers 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import trio

from node.hashing import build_container
from node.store import NewContainer, Store
from wire.container import FileEntry, Manifest


def make_file(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            step = min(remaining, 8 << 20)
            handle.write(os.urandom(step))
            remaining -= step


def reference(path: Path) -> float:
    buffer = bytearray(4 << 20)
    view = memoryview(buffer)
    digest = hashlib.sha256()
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return time.perf_counter() - started


def ours(path: Path) -> float:
    async def run() -> float:
        started = time.perf_counter()
        await build_container(path, run_blocking=trio.to_thread.run_sync)
        return time.perf_counter() - started

    return trio.run(run)


def lookups(count: int, seconds: float = 2.0) -> None:
    """Lookups per second by each kind of name in a store of `count` containers."""
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "node")
        names: dict[str, list[str]] = {"id": [], "root": [], "url": [], "btih": []}
        entries = []
        for index in range(count):
            root = hashlib.sha256(index.to_bytes(8, "big")).digest()
            manifest = Manifest.build(
                name=f"set {index}", piece_length=16384, files=[FileEntry(("f",), 1000, root)]
            )
            url = f"https://example.org/sets/{index}.tar"
            btih = f"btih:{hashlib.sha1(root).hexdigest()}"
            entries.append(
                NewContainer(manifest, {}, Path(directory), names={url: None, btih: None})
            )
            names["id"].append(manifest.id.hex())
            names["root"].append(root.hex())
            names["url"].append(url)
            names["btih"].append(btih)
        started = time.perf_counter()
        store.add_containers(entries, now=0.0, check_files=False)
        added = time.perf_counter() - started
        print(f"store of {count} containers built in {added:.1f} s")
        chooser = random.Random(1)
        for kind, candidates in names.items():
            done = 0
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                for _ in range(1000):
                    assert store.resolve(chooser.choice(candidates))
                done += 1000
            rate = done / (time.perf_counter() - started)
            print(f"  lookups by {kind:<5}: {rate:9.0f} /s")
        store.close()
        database = sqlite3.connect(Path(directory) / "node" / "index.sqlite3")
        ids = [bytes.fromhex(i) for i in names["id"]]
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            for _ in range(1000):
                database.execute(
                    "SELECT id FROM containers WHERE id = ?", (chooser.choice(ids),)
                ).fetchone()
            done += 1000
        rate = done / (time.perf_counter() - started)
        print(f"  bare SQLite primary-key lookup (reference): {rate:9.0f} /s")
        database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--containers", type=int, default=100_000)
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    path = args.dir / f"kinswarm-bench-{args.mib}MiB.bin"
    make_file(path, size)
    reference(path)  # warm the page cache
    plain = min(reference(path) for _ in range(args.repeat))
    container = min(ours(path) for _ in range(args.repeat))
    print(f"cores: {os.cpu_count()}")
    print(f"hashlib.sha256, one thread:        {size / plain / 1e6:8.0f} MB/s")
    print(f"kinswarm container hashing:        {size / container / 1e6:8.0f} MB/s")
    if args.containers:
        lookups(args.containers)
    print(f"ratio: {plain / container:.2f}")


if __name__ == "__main__":
    main()
