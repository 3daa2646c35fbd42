"""`kinswarm sim NAME`: run a simulation scenario from the command line.

Shows simulated time advancing (rich), prints a summary table, and with `--json PATH` writes
the full result (digest, seed, nodes, sim_seconds, wall_seconds, metrics). Registered with the
`kinswarm` command through the `kinswarm.commands` entry-point group.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from node.errors import UserError
from simulations.harness import SCENARIOS, SimulationResult, run_scenario


def register(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    import simulations.scenarios  # noqa: F401 - fills SCENARIOS for the help text

    names = ", ".join(sorted(SCENARIOS))
    parser = commands.add_parser("sim", help=f"run a deterministic simulation ({names})")
    add_common(parser)
    parser.add_argument("scenario", metavar="NAME", nargs="?", help=f"one of: {names}")
    parser.add_argument("--nodes", type=int, help="number of simulated nodes")
    parser.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    parser.add_argument("--sim-seconds", type=float, help="simulated duration")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the result as JSON")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.set_defaults(handler=command_sim)


def command_sim(args: argparse.Namespace) -> int:
    console = Console()
    if args.list or not args.scenario:
        for name, spec in sorted(SCENARIOS.items()):
            console.print(f"[bold]{name}[/bold]  {spec.description}")
        return 0 if args.list else 2
    if args.scenario not in SCENARIOS:
        raise UserError(f"unknown scenario {args.scenario!r}; try `kinswarm sim --list`")
    if args.nodes is not None and args.nodes < 1:
        raise UserError("--nodes must be at least 1")
    with Progress(
        TextColumn(f"[bold]{args.scenario}[/bold] seed {args.seed}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} simulated s"),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
        transient=True,
    ) as progress:
        spec = SCENARIOS[args.scenario]
        planned = spec.default_sim_seconds if args.sim_seconds is None else args.sim_seconds
        task = progress.add_task("simulating", total=planned)

        def show(done: float, planned: float) -> None:
            progress.update(task, completed=done, total=planned)

        result = run_scenario(
            args.scenario,
            nodes=args.nodes,
            seed=args.seed,
            sim_seconds=args.sim_seconds,
            progress=show,
        )
    console.print(summary_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    return 0


def summary_table(result: SimulationResult) -> Table:
    table = Table(title=f"{result.scenario}: {result.nodes} nodes, seed {result.seed}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    speed = result.sim_seconds / result.wall_seconds if result.wall_seconds else float("inf")
    rows: list[tuple[str, object]] = [
        ("digest", result.digest[:16] + "…"),
        ("simulated seconds", f"{result.sim_seconds:.1f}"),
        ("wall seconds", f"{result.wall_seconds:.2f}"),
        ("simulated s per wall s", f"{speed:.1f}"),
        ("events traced", result.events),
        ("peak memory (MiB)", f"{result.peak_rss_mib:.0f}"),
        ("memory per node (KiB)", f"{result.memory_per_node_kib:.0f}"),
    ]
    rows += [(key, _show(value)) for key, value in result.metrics.items()]
    for key, value in rows:
        table.add_row(key, str(value))
    return table


TABLE_CELL_CHARS = 4000
"""A measure longer than this (a probe's series) is left to `--json`."""


def _show(value: object) -> str:
    if isinstance(value, dict):
        shown = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    else:
        shown = str(value)
    return shown if len(shown) <= TABLE_CELL_CHARS else "(long: see --json)"
