"""Control commands for the DHT: `dht.status`, `dht.lookup`, `dht.providers`, `dht.announce`.

They run inside the node (registered on its control server when the DHT is on) and are what
`kinswarm dht status` and `kinswarm dht lookup KEY` call."""

from __future__ import annotations

from typing import Any

from dht.service import DhtService
from node.control import ControlServer
from node.errors import UserError


def _key(params: dict[str, Any]) -> bytes:
    text = params.get("key")
    if not isinstance(text, str):
        raise UserError("give a key: 64 hex digits")
    text = text.removeprefix("ks:")
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise UserError(f"key {text!r} is not hex") from exc
    if len(key) != 32:
        raise UserError("a key is 32 bytes (64 hex digits)")
    return key


def register_dht_commands(server: ControlServer, dht: DhtService) -> None:
    async def status(params: dict[str, Any]) -> dict[str, Any]:
        return dht.status()

    async def lookup(params: dict[str, Any]) -> dict[str, Any]:
        key = _key(params)
        providers = await dht.find_providers(key, want=int(params.get("want", 20)))
        return {
            "key": key.hex(),
            "providers": [
                {"node_id": p.node_id.hex(), "host": p.host, "port": p.port}
                for p in providers.providers
            ],
            "closest": [
                {"node_id": c.node_id.hex(), "host": c.host, "port": c.port}
                for c in providers.closest
            ],
            "rpcs": providers.stats.rpcs,
            "hops": providers.stats.hops,
            "seconds": round(providers.stats.seconds, 4),
        }

    async def announce(params: dict[str, Any]) -> dict[str, Any]:
        key = _key(params)
        return {"key": key.hex(), "stored_on": await dht.announce(key)}

    server.register("dht.status", status)
    server.register("dht.lookup", lookup)
    server.register("dht.announce", announce)
