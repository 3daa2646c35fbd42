"""The first scenarios, small enough for CI, asserting what they are meant to show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.harness import run_scenario


def test_handshake_mesh_connects_everyone_and_respects_the_partition() -> None:
    result = run_scenario("handshake-mesh", nodes=120, seed=4, sim_seconds=400)
    metrics = result.metrics
    assert metrics["connection_success_rate"] >= 0.99
    assert metrics["dials_across_partition"] > 0, "the partition was never tested"
    assert metrics["dials_across_partition_succeeded"] == 0
    assert metrics["connected_fraction_before_partition"] == 1.0
    assert metrics["connected_fraction_end"] == 1.0  # everyone re-dialled after the heal
    # Handshake = TCP connect + Noise XX (1.5 round trips) + Hello: 20-300 ms round trips.
    assert 0.05 < metrics["handshake_latency_p50_s"] < 1.0
    assert result.sim_seconds == pytest.approx(400)
    assert result.wall_seconds < result.sim_seconds / 5  # simulated time runs fast


def test_crash_restart_survivors_keep_working_and_the_crashed_come_back() -> None:
    result = run_scenario("crash-restart", nodes=80, seed=5, sim_seconds=400)
    metrics = result.metrics
    assert metrics["crashes"] >= 20
    assert metrics["restarts"] == metrics["crashes"]
    assert metrics["restarted_with_same_node_id"] == metrics["restarts"]  # identity from disk
    assert metrics["survivor_link_availability_min"] == 1.0
    assert metrics["survivor_service_crashes"] == 0
    assert metrics["nodes_running_end"] == 80
    assert metrics["connected_fraction_end"] == 1.0
    assert metrics["connection_success_rate"] >= 0.99


def test_sim_command_writes_the_promised_json(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli",
            "sim",
            "handshake-mesh",
            "--nodes",
            "10",
            "--sim-seconds",
            "60",
            "--seed",
            "9",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "connection_success_rate" in completed.stdout  # the summary table
    result = json.loads(out.read_text())
    for key in ("digest", "seed", "nodes", "sim_seconds", "wall_seconds", "metrics"):
        assert key in result
    assert result["seed"] == 9 and result["nodes"] == 10
    assert len(result["digest"]) == 64


def test_unknown_scenario_is_a_clear_error() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "node.cli", "sim", "no-such-thing"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert "unknown scenario" in completed.stderr
    assert "Traceback" not in completed.stderr
