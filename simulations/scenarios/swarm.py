"""What the swarm scenarios share: nodes running the real `SwarmEngine` over a `MemoryStore`,
and the instruments that watch them without changing what they do.

* `SwarmNodes.factory()` builds, per host, a real `Node` listening on the host's address and a
  `SwarmEngine(node, MemoryStore(content))` with the host's upload capacity; the engine and
  store of each host are kept for the scenario's metrics.
* `MessageTap` counts every `ks.swarm` message a node *receives*, by type (the type byte
  leads every payload), with bytes and the simulated time the first of each type arrived
  from each peer. It wraps the engine's handler; the engine sees the same calls.
* `FirstCopy` (through the tap) follows the Blocks one node (a seed) sends: when every block
  of the file had arrived from it somewhere, and how many it had sent by then.
* `Ledger` keeps each session's byte counters after the session ends (the engine forgets a
  session on disconnect), so bytes per (node, peer) survive reconnections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs

from node.network import StreamAddress
from node.node import DEFAULT_MAX_PEERS, Node, NodeConfig
from node.peer import PeerConnection
from node.swarm.engine import SwarmEngine
from simulations.harness import SimHost
from simulations.memstore import Content, MemoryStore
from simulations.virtualnet import HostNetwork
from wire.identity import LocalIdentity
from wire.merkle import BLOCK_SIZE
from wire.swarm import BLOCK, EXTENSION_NAME, EXTENSION_VERSION, MESSAGE_TYPES, Block, decode

PORT: Final = 7420

MESSAGE_NAMES: Final[dict[int, str]] = {code: cls.__name__ for cls, code in MESSAGE_TYPES.items()}
INDEX_MESSAGES: Final = ("Summary", "Wants", "Holding", "HaveContainer")
"""The index exchange (docs/protocol.md 5.4)."""


@attrs.define
class FirstCopy:
    """Blocks of one file sent by one node, until each block had arrived somewhere once.

    BEP 16 judges a seed by this: how much it must upload before the swarm holds one whole
    copy (super-seeding aims at about 105 % of the file); after that, what it uploads only
    adds capacity."""

    sender: bytes
    blocks: int
    """Blocks in the file."""
    seen: bytearray = attrs.field(init=False)
    distinct: int = 0
    sent: int = 0
    """Blocks received from `sender`, duplicates included."""
    done_at: float | None = None
    sent_by_then: int | None = None

    def __attrs_post_init__(self) -> None:
        self.seen = bytearray(self.blocks)

    def on_block(self, block: Block, now: float) -> None:
        run = -(-len(block.data) // BLOCK_SIZE)
        self.sent += run
        for index in range(block.block_index, min(block.block_index + run, self.blocks)):
            if not self.seen[index]:
                self.seen[index] = 1
                self.distinct += 1
        if self.done_at is None and self.distinct == self.blocks:
            self.done_at = now
            self.sent_by_then = self.sent

    def copies(self) -> float | None:
        """Blocks sent until the first whole copy was out, in copies of the file."""
        return None if self.sent_by_then is None else self.sent_by_then / self.blocks


@attrs.define
class MessageTap:
    """Messages received, by type, over every tapped node."""

    count: Counter[str] = attrs.Factory(Counter)
    sizes: Counter[str] = attrs.Factory(Counter)
    first_at: dict[tuple[int, bytes, str], float] = attrs.Factory(dict)
    """(receiving host, sender node id, type) → simulated time of the first such message."""
    keep_first: bool = False
    first_copy: FirstCopy | None = None

    def wrap(self, host_index: int, engine: SwarmEngine) -> None:
        handler = engine._on_message
        node = engine.node
        count, size = self.count, self.sizes
        first_at = self.first_at
        keep_first = self.keep_first

        async def tapped(peer: PeerConnection, payload: memoryview) -> None:
            name = MESSAGE_NAMES.get(payload[0], "Unknown") if payload else "Empty"
            count[name] += 1
            size[name] += len(payload)
            if keep_first:
                first_at.setdefault((host_index, peer.node_id, name), node.network.now())
            watch = self.first_copy
            if watch is not None and payload[0] == BLOCK and peer.node_id == watch.sender:
                message = decode(payload)
                assert isinstance(message, Block)
                watch.on_block(message, node.network.now())
            await handler(peer, payload)

        # Registering again replaces the handler for connections made from now on.
        node.register_extension(EXTENSION_NAME, EXTENSION_VERSION, tapped)

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            name: {"count": self.count[name], "bytes": self.sizes[name]}
            for name in sorted(self.count)
        }

    def index_bytes(self) -> int:
        return sum(self.sizes[name] for name in INDEX_MESSAGES)


assert MESSAGE_NAMES[BLOCK] == "Block"


@attrs.define
class Ledger:
    """Bytes each node received from / sent to each peer, across sessions."""

    closed_down: Counter[tuple[int, bytes]] = attrs.Factory(Counter)
    closed_up: Counter[tuple[int, bytes]] = attrs.Factory(Counter)
    disconnects: int = 0

    def watch(self, host_index: int, node: Node, engine: Callable[[], SwarmEngine | None]) -> None:
        """Call before the engine is built: this callback then runs before the engine's own
        (callbacks run in registration order), while the session still exists."""

        async def closed(peer: PeerConnection) -> None:
            current = engine()
            session = None if current is None else current.sessions.get(peer.node_id)
            if session is not None and session.peer is peer:
                self.disconnects += 1
                self.closed_down[host_index, peer.node_id] += session.bytes_down
                self.closed_up[host_index, peer.node_id] += session.bytes_up

        node.on_peer_disconnected(closed)

    def down(self, engines: dict[int, SwarmEngine]) -> Counter[tuple[int, bytes]]:
        """Block data bytes host i received from node id p: {(i, p): bytes}."""
        totals = Counter(self.closed_down)
        for index, engine in engines.items():
            for node_id, session in engine.sessions.items():
                totals[index, node_id] += session.bytes_down
        return totals


@attrs.define
class SwarmNodes:
    """Per-host engines and stores of a swarm scenario."""

    content: Content
    upload: dict[int, float] = attrs.Factory(dict)
    engines: dict[int, SwarmEngine] = attrs.Factory(dict)
    stores: dict[int, MemoryStore] = attrs.Factory(dict)
    tap: MessageTap = attrs.Factory(MessageTap)
    ledger: Ledger = attrs.Factory(Ledger)
    max_peers: int = DEFAULT_MAX_PEERS
    verify: str = "compare"
    upload_limit_share: float | None = None
    """Each node paces its Block data to this share of its upload capacity, as a user's
    upload limit would (None: no limit)."""
    engine_classes: dict[int, type[SwarmEngine]] = attrs.Factory(dict)
    """Host index → the engine class it runs, for adversaries (`simulations.adversaries`);
    a SwarmEngine where none is given."""

    def _limit(self, index: int) -> float | None:
        capacity = self.upload.get(index)
        if capacity is None or self.upload_limit_share is None:
            return None
        return capacity * self.upload_limit_share

    def store(self, index: int) -> MemoryStore:
        store = self.stores.get(index)
        if store is None:
            store = self.stores[index] = MemoryStore(self.content, verify=self.verify)  # type: ignore[arg-type]
        return store

    def factory(self) -> Callable[[SimHost, HostNetwork, LocalIdentity], Node]:
        def build(sim_host: SimHost, network: HostNetwork, identity: LocalIdentity) -> Node:
            index = sim_host.index
            node = Node(
                network=network,
                identity=identity,
                config=NodeConfig(
                    listen=(StreamAddress("tcp", sim_host.address, PORT),),
                    max_peers=self.max_peers,
                ),
            )
            self.ledger.watch(index, node, lambda: self.engines.get(index))
            engine = self.engine_classes.get(index, SwarmEngine)(
                node,
                self.store(index),
                download_dir=Path("/virtual") / f"host-{index:05d}" / "downloads",
                upload_capacity=self.upload.get(index),
                upload_limit=self._limit(index),
            )
            self.tap.wrap(index, engine)
            self.engines[index] = engine
            return node

        return build


def address_of(sim_host: SimHost) -> StreamAddress:
    return StreamAddress("tcp", sim_host.address, PORT)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def describe(doc: str | None) -> str:
    return (doc or "").split(": ", 1)[-1].split("\n\n")[0].replace("\n", " ")


def as_int(value: Any) -> int:
    return int(value)
