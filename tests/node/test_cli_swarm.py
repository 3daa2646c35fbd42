"""`kinswarm add` / `kinswarm get` between real processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KINSWARM = [sys.executable, "-m", "node.cli"]


def kinswarm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KINSWARM, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@contextmanager
def running(data_dir: Path, *extra: str) -> Iterator[str]:
    """A `kinswarm run` node; yields its TCP address."""
    data_dir.mkdir(mode=0o700, exist_ok=True)
    process = subprocess.Popen(
        [
            *KINSWARM,
            "run",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--no-ws",
            "--no-dht",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        address = ""
        deadline = time.monotonic() + 20
        while not address and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "exited"
            if line.startswith("listening tcp://"):
                address = line.split()[1]
        yield address
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_add_on_a_running_node_then_get_in_the_foreground_and_through_a_node(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "field notes"
    (folder / "audio").mkdir(parents=True)
    contents = {"audio/dawn.flac": os.urandom(2_500_000), "notes.txt": b"robins\n"}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    with running(tmp_path / "seed") as seed:
        added = kinswarm("add", str(folder), "--json", "--data-dir", str(tmp_path / "seed"))
        assert added.returncode == 0, added.stderr
        container_id = json.loads(added.stdout)["id"]

        # No node for this data dir: `get` runs one in the foreground, then stops.
        downloads = tmp_path / "downloads-b"
        got = kinswarm(
            "get",
            container_id,
            "--peer",
            seed,
            "--no-seed",
            "--data-dir",
            str(tmp_path / "b"),
            "--download-dir",
            str(downloads),
            "--listen",
            "127.0.0.1:0",
            "--no-ws",
            "--no-dht",
        )
        assert got.returncode == 0, got.stderr
        for name, data in contents.items():
            assert (downloads / "field notes" / name).read_bytes() == data

        # A running node: `get` asks it and shows the progress it streams.
        downloads_c = tmp_path / "downloads-c"
        with running(tmp_path / "c", "--download-dir", str(downloads_c)):
            got = kinswarm(
                "get", f"ks:{container_id}", "--peer", seed, "--data-dir", str(tmp_path / "c")
            )
            assert got.returncode == 0, got.stderr
            assert "complete" in got.stdout
            status = kinswarm("status", "--json", "--data-dir", str(tmp_path / "c"))
            assert status.returncode == 0, status.stderr
            swarm = json.loads(status.stdout)["swarm"]
            assert swarm["held_containers"] == 1
            assert swarm["downloads"][0]["state"] == "complete"
        assert (downloads_c / "field notes" / "notes.txt").read_bytes() == b"robins\n"
        status_text = kinswarm("status", "--data-dir", str(tmp_path / "seed"))
        assert status_text.returncode == 0, status_text.stderr
        assert "sharing 1 container" in status_text.stdout
        assert "unchoke slots" in status_text.stdout


def test_get_of_nonsense_is_a_one_line_error(tmp_path: Path) -> None:
    result = kinswarm("get", "not-an-id", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "container id" in result.stderr
