"""The `kinswarm` command, as real processes on loopback."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from node.cli import build_parser, node_config
from node.cli_node import print_swarm

KINSWARM = [sys.executable, "-m", "node.cli"]


def kinswarm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KINSWARM, *args], capture_output=True, text=True, timeout=30, env=env, check=False
    )


class RunningNode:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []

    def read_until(self, prefix: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"node exited; stderr: {self.process.stderr.read()}")  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line.rstrip("\n")
        raise AssertionError(f"no line starting with {prefix!r}; got {self.lines}")

    def address(self, transport: str) -> str:
        for line in self.lines:
            if line.startswith(f"listening {transport}://"):
                return line.split(" ", 1)[1]
        raise AssertionError(f"no {transport} address in {self.lines}")


@contextmanager
def run_node(data_dir: Path, *extra: str) -> Iterator[RunningNode]:
    process = subprocess.Popen(
        [
            *KINSWARM,
            "run",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--ws-listen",
            "127.0.0.1:0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    node = RunningNode(process)
    try:
        node.read_until("node id ")
        node.read_until("listening tcp://")
        node.read_until("listening ws://")
        yield node
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_id_is_stable_and_the_key_private(tmp_path: Path) -> None:
    first = kinswarm("id", "--data-dir", str(tmp_path))
    second = kinswarm("id", "--data-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert len(first.stdout.strip()) == 64
    assert stat.S_IMODE((tmp_path / "identity.key").stat().st_mode) == 0o600


def test_environment_variable_selects_the_data_dir(tmp_path: Path) -> None:
    env = {**os.environ, "KINSWARM_DATA_DIR": str(tmp_path / "from-env")}
    via_env = kinswarm("id", env=env)
    via_flag = kinswarm("id", "--data-dir", str(tmp_path / "from-env"))
    assert via_env.returncode == 0
    assert via_env.stdout == via_flag.stdout
    overridden = kinswarm("id", "--data-dir", str(tmp_path / "other"), env=env)
    assert overridden.stdout != via_env.stdout


def test_unsafe_key_file_is_a_one_line_error(tmp_path: Path) -> None:
    kinswarm("id", "--data-dir", str(tmp_path))
    os.chmod(tmp_path / "identity.key", 0o644)
    result = kinswarm("id", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr


def test_two_nodes_connect_and_stop_cleanly_on_sigint(tmp_path: Path) -> None:
    with run_node(tmp_path / "a") as a:
        a_id = a.lines[0].split()[-1]
        for transport in ("tcp", "ws"):
            result = kinswarm("connect", "--data-dir", str(tmp_path / "c"), a.address(transport))
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == a_id
        with run_node(tmp_path / "b", "--connect", a.address("tcp")) as b:
            line = b.read_until("connected ")
            assert line.split()[1] == a_id
            for node in (a, b):
                started = time.monotonic()
                node.process.send_signal(signal.SIGINT)
                assert node.process.wait(timeout=5) == 0
                assert time.monotonic() - started < 1.0
                assert node.process.stdout is not None
                assert "stopped" in node.process.stdout.read()


def test_sigterm_also_stops_cleanly(tmp_path: Path) -> None:
    with run_node(tmp_path / "a") as a:
        a.process.send_signal(signal.SIGTERM)
        assert a.process.wait(timeout=5) == 0


def test_connect_failure_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    with run_node(tmp_path / "a") as a:
        port = a.address("tcp").rsplit(":", 1)[1]
    result = kinswarm("connect", "--data-dir", str(tmp_path / "c"), f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "could not connect" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_network_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "net.key"
    key.write_text("11" * 32)
    other = tmp_path / "other.key"
    other.write_text("22" * 32)
    with run_node(tmp_path / "a", "--network-key-file", str(key)) as a:
        good = kinswarm(
            "connect",
            "--data-dir",
            str(tmp_path / "c"),
            "--network-key-file",
            str(key),
            a.address("tcp"),
        )
        assert good.returncode == 0, good.stderr
        for args in (["--network-key-file", str(other)], []):
            bad = kinswarm("connect", "--data-dir", str(tmp_path / "c"), *args, a.address("tcp"))
            assert bad.returncode == 1
            assert "could not connect" in bad.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with run_node(tmp_path / "a") as a:
        taken = a.address("tcp").removeprefix("tcp://")
        result = subprocess.run(
            [*KINSWARM, "run", "--data-dir", str(tmp_path / "b"), "--listen", taken, "--no-ws"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1
        assert "cannot listen on" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("bad", ["nonsense", "127.0.0.1:99999", "ftp://x:1"])
def test_bad_addresses_are_rejected_by_the_parser(tmp_path: Path, bad: str) -> None:
    result = kinswarm("connect", "--data-dir", str(tmp_path), bad)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_upload_limit_takes_decimal_suffixes_and_refuses_nonsense() -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "--upload-limit", "2.5M"]).upload_limit == 2_500_000
    assert parser.parse_args(["run", "--upload-limit", "500k"]).upload_limit == 500_000
    assert parser.parse_args(["get", "ab" * 32, "--upload-limit", "1000"]).upload_limit == 1000
    for bad in ("0", "-5K", "fast", "inf", "M"):
        try:
            parser.parse_args(["run", "--upload-limit", bad])
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"--upload-limit {bad} was accepted")


def test_max_peers_defaults_to_two_hundred_and_refuses_nonsense() -> None:
    parser = build_parser()
    assert parser.parse_args(["run"]).max_peers == 200
    assert parser.parse_args(["run", "--max-peers", "50"]).max_peers == 50
    assert parser.parse_args(["get", "ab" * 32, "--max-peers", "7"]).max_peers == 7
    for bad in ("0", "-3", "many", "2.5"):
        with pytest.raises(SystemExit):
            parser.parse_args(["run", "--max-peers", bad])


def test_the_node_config_takes_max_peers(tmp_path: Path) -> None:
    args = build_parser().parse_args(["run", "--max-peers", "42", "--no-dht"])
    assert node_config(args, tmp_path).max_peers == 42


def test_status_says_when_a_seed_spreads_its_slots() -> None:
    def shown(swarm: dict[str, object]) -> str:
        console = Console(record=True, width=120)
        print_swarm(console, swarm)
        return console.export_text()

    base = {"held_containers": 1, "upload_capacity": 475_000, "unchoke_slots": 7}
    assert "7 unchoke slots\n" in shown({**base, "spreading": False})
    spreading = shown({**base, "unchoke_slots": 28, "spreading": True})
    assert "28 unchoke slots (spreading: peers are early on)" in spreading
