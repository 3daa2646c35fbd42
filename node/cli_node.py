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

from node.control import DEFAULT_CALL_TIMEOUT_SECONDS, CommandFailed, call_sync
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
    try:
        swarm: dict[str, Any] | None = call_sync(data_dir, "swarm.status", timeout=args.timeout)
    except CommandFailed:  # a node without the swarm service
        swarm = None
    if args.json:
        print(json.dumps({"node": node, "peers": peers, "swarm": swarm}, indent=2))
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
    if swarm is not None:
        print_swarm(console, swarm)
    return 0


def print_swarm(console: Console, swarm: dict[str, Any]) -> None:
    """What we share and to whom: held containers, downloads, and per peer the rates and
    the containers it fetches from us (serving) and we fetch from it (fetching)."""
    held = swarm.get("held_containers", 0)
    console.print(f"sharing {held} container{'' if held == 1 else 's'}", highlight=False)
    slots = swarm.get("unchoke_slots")
    if slots is not None:
        capacity = swarm.get("upload_capacity")
        how = "measured" if swarm.get("upload_capacity_measured") else "as set"
        uplink = f"uplink {format_bytes(capacity)}/s ({how})" if capacity else "uplink unknown"
        # A seed whose peers are early on spreads its pieces over more slots (node.choker).
        spreading = " (spreading: peers are early on)" if swarm.get("spreading") else ""
        console.print(f"{uplink}, {slots} unchoke slots{spreading}", highlight=False)
    downloads = swarm.get("downloads") or []
    if downloads:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="downloads")
        for column in ("container", "name", "state", "held"):
            table.add_column(column, no_wrap=column != "name", overflow="fold")
        for download in downloads:
            total, have = download.get("total_bytes") or 0, download.get("held_bytes") or 0
            done = f"{100 * have / total:.0f}%" if total else "-"
            table.add_row(
                escape(str(download.get("container_id", "?"))[:16]),
                escape(str(download.get("name") or "?")),
                escape(str(download.get("state"))),
                f"{done} of {format_bytes(total)}",
            )
        console.print(table)
    sessions = swarm.get("peers") or []
    if sessions:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="swarm")
        # serve: containers it fetches from us; fetch: containers we fetch from it;
        # unchoked: who lets whom fetch (both, by us, by them, -).
        for column in ("peer", "down/s", "up/s", "serve", "fetch", "unchoked"):
            table.add_column(column, no_wrap=True, justify="left" if column == "peer" else "right")
        for session in sessions:
            by_us, by_them = not session.get("choking_them"), not session.get("choked_by_them")
            unchoked = {
                (True, True): "both",
                (True, False): "by us",
                (False, True): "by them",
            }.get((by_us, by_them), "-")
            table.add_row(
                escape(str(session.get("node_id", "?"))[:16]),
                format_bytes(session.get("download_rate")),
                format_bytes(session.get("upload_rate")),
                str(session.get("serving_count", 0)),
                str(session.get("fetching_count", 0)),
                unchoked,
            )
        console.print(table)


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
