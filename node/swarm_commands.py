"""Control commands for the swarm: `swarm.get` (streams progress), `swarm.status`, `swarm.add`.

They run inside the node and are what `kinswarm get`, `kinswarm status` and (while a node runs)
`kinswarm add` call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from node.control import ControlServer
from node.errors import UserError
from node.hashing import ScanError, build_container
from node.network import StreamAddress
from node.store import Store
from node.swarm.engine import SwarmEngine
from wire.container import Metadata
from wire.errors import DecodeError
from wire.magnet import parse_magnet

PROGRESS_PERIOD_SECONDS = 0.5


def container_id_of(name: str) -> bytes:
    """The container id in `name`: 64 hex digits, `ks:<hex>`, or a magnet with urn:kinswarm."""
    if name.startswith("magnet:"):
        try:
            magnet = parse_magnet(name)
        except DecodeError as exc:
            raise UserError(f"bad magnet link: {exc}") from exc
        if magnet.kinswarm_id is None:
            raise UserError("this magnet link names no kinswarm container (xt=urn:kinswarm:…)")
        return magnet.kinswarm_id
    try:
        value = bytes.fromhex(name.removeprefix("ks:"))
    except ValueError as exc:
        raise UserError(f"{name!r} is not a container id, ks:<id> or magnet link") from exc
    if len(value) != 32:
        raise UserError("a container id is 64 hex digits")
    return value


def container_id_param(params: dict[str, Any]) -> bytes:
    text = params.get("id")
    if not isinstance(text, str):
        raise UserError("give a container id (64 hex digits)")
    return container_id_of(text)


def register_swarm_commands(server: ControlServer, engine: SwarmEngine, store: Store) -> None:
    async def get(params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        container_id = container_id_param(params)
        try:
            peers = [StreamAddress.parse(text) for text in params.get("peers", [])]
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        download = await engine.get(container_id, peers=peers)
        while not download.done.is_set():
            yield {**download.progress(), "peers": len(engine.sessions)}
            with trio.move_on_after(PROGRESS_PERIOD_SECONDS):
                await download.done.wait()
        if download.state != "complete":
            raise UserError(f"download failed: {download.error}")
        record = await engine.network.run_blocking(store.get, container_id)
        yield {
            **download.progress(),
            "peers": len(engine.sessions),
            "location": str(record.location) if record is not None else None,
        }

    async def status(params: dict[str, Any]) -> dict[str, Any]:
        return engine.status()

    async def add(params: dict[str, Any]) -> dict[str, Any]:
        path = Path(str(params.get("path", "")))
        if not path.is_absolute():
            raise UserError("give an absolute path")
        try:
            manifest, layers, _ = await build_container(
                path, run_blocking=engine.network.run_blocking, name=params.get("name")
            )
        except ScanError as exc:
            raise UserError(str(exc)) from exc
        metadata = Metadata(
            title=params.get("title"),
            description=params.get("description"),
            license=params.get("license"),
            categories=tuple(params.get("categories", ())),
            tags=tuple(params.get("tags", ())),
        )
        is_folder = await engine.network.run_blocking(path.is_dir)
        location = path if is_folder else path.parent
        urls = list(params.get("urls", []))
        _, new = await engine.network.run_blocking(
            lambda: store.share_in_place(
                manifest, layers, location, now=time.time(), metadata=metadata, urls=urls
            )
        )
        await engine.share(manifest.id)
        return {
            "status": "added" if new else "already added",
            "id": manifest.id.hex(),
            "name": manifest.name,
            "files": len(manifest.files),
            "bytes": manifest.total_length,
        }

    server.register("swarm.get", get)
    server.register("swarm.status", status)
    server.register("swarm.add", add)
