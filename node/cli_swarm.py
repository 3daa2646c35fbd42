"""`kinswarm get NAME`: download a container, from the running node or in the foreground.

With a `kinswarm run` node on the same data directory, `get` asks it (control socket) and
shows the progress it streams. Without one, `get` runs a node itself until the download is
complete, then seeds until Ctrl-C (`--no-seed` stops instead).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from node.control import NodeNotRunning, call, stream
from node.datadir import resolve_data_dir
from node.errors import UserError
from node.network import StreamAddress
from node.node import Node
from node.swarm.engine import SwarmEngine
from node.swarm_commands import container_id_of

Serve = Callable[[argparse.Namespace, Any], Awaitable[int]]


def register(
    commands: Any,
    add_common: Callable[[argparse.ArgumentParser], None],
    add_node_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    get = commands.add_parser("get", help="download a container (id, ks:<id> or magnet link)")
    add_common(get)
    add_node_options(get)
    get.add_argument("name", metavar="NAME", help="container id, ks:<id>, or a magnet link")
    get.add_argument(
        "--peer",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="a peer to ask (repeatable)",
    )
    get.add_argument("--no-seed", action="store_true", help="stop once complete")
    get.set_defaults(handler=command_get)


def command_get(args: argparse.Namespace) -> int:
    container_id = container_id_of(args.name)
    try:
        peers = [str(StreamAddress.parse(text)) for text in args.peer]
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    data_dir = resolve_data_dir(args.data_dir)
    try:
        trio.run(lambda: call(data_dir, "ping", timeout=2))
    except NodeNotRunning:
        from node.cli import serve

        return trio.run(serve, args, _foreground_job(container_id, args))
    return trio.run(_through_node, data_dir, container_id, peers)


class _Display:
    def __init__(self) -> None:
        self.console = Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[peers]} peers"),
            console=self.console,
        )
        self.task: TaskID | None = None

    def update(self, event: dict[str, Any]) -> None:
        description = event.get("name") or event["container_id"][:16]
        if event["state"] != "transfer":
            description = f"{description} ({event['state']})"
        if self.task is None:
            self.task = self.progress.add_task(description, total=None, peers=0)
        self.progress.update(
            self.task,
            description=description,
            total=event["total_bytes"] or None,
            completed=event["held_bytes"],
            peers=event.get("peers", 0),
        )


async def _through_node(data_dir: Any, container_id: bytes, peers: list[str]) -> int:
    display = _Display()
    last: dict[str, Any] = {}
    with display.progress:
        async for event in stream(
            data_dir, "swarm.get", {"id": container_id.hex(), "peers": peers}
        ):
            display.update(event)
            last = event
    display.console.print(f"complete: {last.get('location')}")
    return 0


def _foreground_job(
    container_id: bytes, args: argparse.Namespace
) -> Callable[[Node, SwarmEngine], Awaitable[bool]]:
    async def job(node: Node, engine: SwarmEngine) -> bool:
        peers = [StreamAddress.parse(text) for text in args.peer]
        download = await engine.get(container_id, peers=peers)
        display = _Display()
        with display.progress:
            while not download.done.is_set():
                display.update({**download.progress(), "peers": len(engine.sessions)})
                with trio.move_on_after(0.5):
                    await download.done.wait()
            display.update({**download.progress(), "peers": len(engine.sessions)})
        if download.state != "complete":
            raise UserError(f"download failed: {download.error}")
        record = await node.network.run_blocking(engine.store.get, container_id)
        location = record.location if record is not None else "?"
        display.console.print(f"complete: {location}", highlight=False)
        if args.no_seed:
            return False
        display.console.print("seeding; Ctrl-C to stop")
        return True

    return job
