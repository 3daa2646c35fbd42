"""How fast does adding data go, against plain SHA-256 on one core?

In one run, over the same 1 GiB file (created once, then read from the page cache):

* reference: `hashlib.sha256` over the whole file, one thread, read in 4 MiB steps;
* ours: `node.hashing.build_container` — scanning, 16 KiB leaf hashing on every core, the BEP 52
  Merkle tree and piece layers, the manifest.

Each is the best of `--repeat` runs. The last line is `ratio: <ours / hashlib>`; the goal is
>= 1.5 (two cores, Merkle overhead included).

    .venv/bin/python bench/bench_hashing.py [--mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import trio

from node.hashing import build_container


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
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
    print(f"ratio: {plain / container:.2f}")


if __name__ == "__main__":
    main()
