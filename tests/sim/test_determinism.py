"""Same seed, same run: the digest of a simulation depends on the seed and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trio

from simulations.determinism import derive_seed, deterministic_trio, run_simulated
from simulations.harness import run_scenario


def run_in_fresh_process(tmp_path: Path, hash_seed: str, seed: int, name: str) -> dict[str, object]:
    out = tmp_path / f"{name}-{seed}-{hash_seed}.json"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli",
            "sim",
            name,
            "--nodes",
            "30",
            "--sim-seconds",
            "90",
            "--seed",
            str(seed),
            "--json",
            str(out),
            "--quiet",
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    assert isinstance(result, dict)
    return result


def test_same_seed_same_digest_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    for name in ("handshake-mesh", "crash-restart"):
        first = run_in_fresh_process(tmp_path, "0", 11, name)
        second = run_in_fresh_process(tmp_path, "4242", 11, name)
        assert first["digest"] == second["digest"], name
        assert first["metrics"] == second["metrics"], name
        assert first["events"] == second["events"]


def test_different_seeds_give_different_runs(tmp_path: Path) -> None:
    digests = {
        run_scenario("handshake-mesh", nodes=20, seed=seed, sim_seconds=60).digest
        for seed in (1, 2, 3)
    }
    assert len(digests) == 3


def test_scheduling_order_is_a_function_of_the_seed() -> None:
    """Trio's own shuffle of runnable tasks, with no network at all, replays from the seed."""

    def interleaving(seed: int) -> list[int]:
        order: list[int] = []

        async def worker(index: int) -> None:
            for _ in range(3):
                order.append(index)
                await trio.lowlevel.checkpoint()

        async def main() -> list[int]:
            async with trio.open_nursery() as nursery:
                for index in range(8):
                    nursery.start_soon(worker, index)
            return order

        return run_simulated(main, seed=seed)

    assert interleaving(5) == interleaving(5)
    assert interleaving(5) != interleaving(6)


def test_scheduler_state_is_restored_after_a_run() -> None:
    from trio._core import _run

    before = (_run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r)
    with deterministic_trio(3):
        assert _run._ALLOW_DETERMINISTIC_SCHEDULING
    assert (_run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r) == before


def test_derived_seeds_are_independent_per_label() -> None:
    assert derive_seed(1, "host", 3) == derive_seed(1, "host", 3)
    assert derive_seed(1, "host", 3) != derive_seed(1, "host", 4)
    assert derive_seed(1, "host", 3) != derive_seed(2, "host", 3)


def test_simulated_time_starts_far_from_zero() -> None:
    async def now() -> float:
        return trio.current_time()

    assert run_simulated(now, seed=1) > 1_000_000
