"""Fifty nodes, as `kinswarm run` builds them, on real loopback UDP in one process: they
join through each other and find each other's provider records."""

from __future__ import annotations

import hashlib

import trio

from node.node import DhtConfig, Node, NodeConfig
from node.realnet import TrioNetwork
from wire.identity import LocalIdentity

NODES = 50


def host(index: int) -> str:
    """Each node on its own loopback address (127.N.0.1): one /24 each, as on the internet,
    so the per-subnet table limits and per-host rate limits behave as they would there."""
    return f"127.{index + 1}.0.1"


async def test_fifty_nodes_on_loopback_udp_find_each_others_providers() -> None:
    keys = [hashlib.sha256(f"container {i}".encode()).digest() for i in range(NODES)]
    async with TrioNetwork(seed=5) as network, trio.open_nursery() as nursery:
        nodes: list[Node] = []
        for index in range(NODES):
            bootstrap = tuple(
                n.dht.local_address for n in nodes[-3:] if n.dht and n.dht.local_address
            )
            node = Node(
                network=network,
                identity=LocalIdentity(hashlib.sha256(f"node {index}".encode()).digest()),
                config=NodeConfig(
                    listen=(),
                    dht=DhtConfig(bind=(host(index), 0), bootstrap=bootstrap, announce_port=7420),
                ),
            )
            await nursery.start(node.run)
            nodes.append(node)
        with trio.fail_after(30):
            for node, key in zip(nodes, keys, strict=True):
                assert node.dht is not None
                assert await node.dht.announce(key) >= 1
            found = 0
            for index, node in enumerate(nodes):
                key = keys[(index * 7 + 3) % NODES]
                announcer = nodes[(index * 7 + 3) % NODES]
                assert node.dht is not None
                result = await node.dht.find_providers(key, want=1)
                found += any(p.node_id == announcer.node_id for p in result.providers)
        assert found == NODES
        tables = [len(n.dht.engine.table) for n in nodes if n.dht and n.dht.engine]
        assert min(tables) >= 5
        for node in nodes:
            node.stop()
