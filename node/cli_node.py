"""Commands that ask the running node: `kinswarm status`.

They never open the node's state themselves (the node holds it); they talk to the `kinswarm
run` of the same data directory through its control socket (`node.control`). With no node
running they fail with one line saying how to start one.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from node.control import DEFAULT_CALL_TIMEOUT_SECONDS, call_sync
from node.datadir import resolve_data_dir


def register(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    status = commands.add_parser("status", help="show the running node and its peers")
    add_common(status)
    status.add_argument("--json", action="store_true", help="print the node's answers as JSON")
    status.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_CALL_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="how long to wait for the node (default %(default)g)",
    )
    status.set_defaults(handler=command_status)


def command_status(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    node = call_sync(data_dir, "ping", timeout=args.timeout)
    peers = call_sync(data_dir, "peers", timeout=args.timeout).get("peers", [])
    if args.json:
        print(json.dumps({"node": node, "peers": peers}, indent=2))
        return 0
    console = Console()
    console.print(f"node [bold]{escape(str(node.get('node_id')))}[/bold]", highlight=False)
    agent = escape(str(node.get("agent")))
    console.print(
        f"pid {node.get('pid')}, {agent}; data dir {escape(str(data_dir))}", highlight=False
    )
    listen = ", ".join(str(address) for address in node.get("listen") or []) or "nothing"
    console.print(f"listening on {escape(listen)}", highlight=False)
    count = len(peers)
    console.print(f"{count} peer{'' if count == 1 else 's'}", highlight=False)
    if peers:
        console.print(peer_table(peers))
    return 0


def peer_table(peers: list[dict[str, Any]]) -> Table:
    """Short ids (16 hex digits, as the logs print them) keep the table within 80 columns
    when output is not a terminal; `--json` has the full ones."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("peer", no_wrap=True)
    table.add_column("address", overflow="fold")
    table.add_column("dir", no_wrap=True)
    table.add_column("up", justify="right", no_wrap=True)
    table.add_column("sent", justify="right", no_wrap=True)
    table.add_column("received", justify="right", no_wrap=True)
    table.add_column("rtt", justify="right", no_wrap=True)
    for peer in peers:
        table.add_row(
            escape(str(peer.get("node_id", "?"))[:16]),
            escape(str(peer.get("address", "?"))),
            "out" if peer.get("direction") == "initiator" else "in",
            format_duration(peer.get("connected_seconds")),
            format_bytes(peer.get("bytes_sent")),
            format_bytes(peer.get("bytes_received")),
            format_round_trip(peer.get("round_trip_seconds")),
        )
    return table


def format_duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_bytes(count: object) -> str:
    if not isinstance(count, int):
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_round_trip(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return f"{seconds * 1000:.1f} ms"
