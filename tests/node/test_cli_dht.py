"""`kinswarm run` nodes with their DHT on loopback UDP, driven by `kinswarm dht …`."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KINSWARM = [sys.executable, "-m", "node.cli"]


@contextmanager
def node(data_dir: Path, dht: str, *extra: str) -> Iterator[subprocess.Popen[str]]:
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
            "--dht-listen",
            dht,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("dht udp://"):
                break
            assert line, process.stderr.read() if process.stderr else "node exited"
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def dht(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KINSWARM, "dht", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def status(data_dir: Path) -> dict[str, object]:
    result = dht("status", "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def wait_for_table(data_dir: Path, seconds: float = 10) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        value = status(data_dir)
        if value["table_size"] or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_announce_lookup_and_rejoin_from_the_saved_table(tmp_path: Path) -> None:
    key = hashlib.sha256(b"a container").hexdigest()
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    with node(a_dir, "127.1.0.1:0") as a:
        a_addr = status(a_dir)["address"]
        assert isinstance(a_addr, list)
        with node(b_dir, "127.2.0.1:0", "--bootstrap", f"{a_addr[0]}:{a_addr[1]}"):
            assert wait_for_table(b_dir)["table_size"] == 1
            announced = dht("announce", key, data_dir=a_dir)
            assert announced.returncode == 0, announced.stderr
            found = dht("lookup", key, "--json", data_dir=b_dir)
            assert found.returncode == 0, found.stderr
            providers = json.loads(found.stdout)["providers"]
            a_id = status(a_dir)["node_id"]
            assert [p["node_id"] for p in providers] == [a_id]
            traffic = status(b_dir)["traffic"]
            assert isinstance(traffic, dict) and traffic["datagrams_sent"] > 0
        assert (b_dir / "dht-routing.msgpack").exists()  # saved at shutdown
        # Restarted without --bootstrap, b rejoins through its saved routing table.
        with node(b_dir, "127.2.0.1:0"):
            assert wait_for_table(b_dir)["table_size"] == 1
        assert a.poll() is None


def test_dht_commands_need_a_running_node(tmp_path: Path) -> None:
    result = dht("status", data_dir=tmp_path)
    assert result.returncode == 1
    assert "kinswarm run" in result.stderr and "Traceback" not in result.stderr
