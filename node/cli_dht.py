"""`kinswarm dht status | lookup KEY | announce KEY`: ask the running node's DHT."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from node.control import call_sync
from node.datadir import resolve_data_dir


def register(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    dht = commands.add_parser("dht", help="the DHT of the running node")
    actions = dht.add_subparsers(dest="dht_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="routing table, buckets, traffic")
    add_common(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=command_status)
    lookup = actions.add_parser("lookup", help="find the providers of a key (a container id)")
    add_common(lookup)
    lookup.add_argument("key", metavar="KEY", help="64 hex digits (or ks:<hex>)")
    lookup.add_argument("--json", action="store_true")
    lookup.set_defaults(handler=command_lookup)
    announce = actions.add_parser("announce", help="announce that this node provides KEY")
    add_common(announce)
    announce.add_argument("key", metavar="KEY")
    announce.set_defaults(handler=command_announce)


def command_status(args: argparse.Namespace) -> int:
    result = call_sync(resolve_data_dir(args.data_dir), "dht.status")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console = Console()
    console.print(f"node [bold]{result['node_id'][:16]}…[/bold] at {result['address']}")
    if result.get("external_address"):
        console.print(f"seen by others as {result['external_address']}")
    console.print(
        f"routing table: {result['table_size']} contacts in {len(result['buckets'])} buckets"
    )
    buckets = Table("bucket", "contacts", "replacements")
    for bucket in result["buckets"]:
        if bucket["contacts"] or bucket["replacements"]:
            buckets.add_row(
                str(bucket["index"]), str(bucket["contacts"]), str(bucket["replacements"])
            )
    console.print(buckets)
    traffic = Table("traffic", "count")
    for key, value in result["traffic"].items():
        traffic.add_row(key.replace("_", " "), f"{value:,}")
    console.print(traffic)
    store = result["store"]
    console.print("stored: " + ", ".join(f"{k} {v:,}" for k, v in store.items()))
    console.print(f"lookups {result['lookups']:,}, announces {result['announces']:,}")
    return 0


def command_lookup(args: argparse.Namespace) -> int:
    result = call_sync(resolve_data_dir(args.data_dir), "dht.lookup", {"key": args.key}, timeout=60)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console = Console()
    console.print(
        f"{len(result['providers'])} providers; {result['rpcs']} queries, "
        f"{result['hops']} hops, {result['seconds']:.2f} s"
    )
    for provider in result["providers"]:
        console.print(f"  {provider['node_id'][:16]}…  {provider['host']}:{provider['port']}")
    return 0 if result["providers"] else 1


def command_announce(args: argparse.Namespace) -> int:
    result = call_sync(
        resolve_data_dir(args.data_dir), "dht.announce", {"key": args.key}, timeout=60
    )
    Console().print(f"announced on {result['stored_on']} nodes")
    return 0
