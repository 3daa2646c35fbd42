"""The Node: one nursery tree that owns every task of a running kinswarm node.

```
Node.run                      (the root nursery; cancelling it stops everything)
├── supervise("listen tcp://…")  → Network.serve_streams → one task per accepted connection
├── supervise("listen ws://…")   → …
├── supervise(<service>)         (DHT, swarm engine, … as later parts add them)
└── peer connections we dialled  (PeerConnection.run: reader, writer, keepalive)
```

Every connection, incoming or outgoing, ends up in the peer table keyed by the remote node id.
If two nodes dial each other at the same moment, both connections complete; both sides keep the
one dialled by the node with the smaller id and close the other, so they agree without talking.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import attrs
import trio

from dht.service import DhtService
from node.control import ControlServer, ControlStartError, register_node_commands
from node.dht_commands import register_dht_commands
from node.network import HostPort, Network, StreamAddress
from node.peer import KEEPALIVE_INTERVAL_SECONDS, ExtensionHandler, PeerConnection, PeerGone
from node.supervisor import Service, supervise
from wire.connection import SecureConnection
from wire.identity import LocalIdentity

log = logging.getLogger("kinswarm.node")

AGENT: Final = "kinswarm/0.1"
DEFAULT_TCP_LISTEN: Final = StreamAddress("tcp", "127.0.0.1", 7420)
DEFAULT_WS_LISTEN: Final = StreamAddress("ws", "127.0.0.1", 7421)

DEFAULT_MAX_PEERS: Final = 200
"""As libtorrent's connections_limit. Each connection costs its setup on our uplink (~0.65 KB:
handshake, index, holdings): a 500 KB/s seed that 1,000 leechers reach at once spends 0.65 s on
500 of them, 0.26 s on 200, and the others are served by the leechers it serves. 4.5 s into
that flash crowd, 999 leechers held a piece with 200, 762 with 500."""
DISCONNECT_CALLBACK_SECONDS: Final = 5.0
"""Disconnect callbacks run shielded (the node may be shutting down), so bound them."""


class NodeStartError(Exception):
    """The node could not start (a port is taken, a service failed to initialise)."""


PeerCallback = Callable[[PeerConnection], Awaitable[None]]


@attrs.frozen
class NodeConfig:
    listen: tuple[StreamAddress, ...] = (DEFAULT_TCP_LISTEN, DEFAULT_WS_LISTEN)
    capability_keys: tuple[bytes, ...] = ()
    """Network capability keys: we accept handshakes under any of them and dial with the
    first. With keys and `allow_open` false, only key holders can talk to us at all."""
    allow_open: bool = True
    max_peers: int = DEFAULT_MAX_PEERS
    """Connections we accept at most (handshakes under way count); dials are bounded by
    the engine (`MAX_PEERS_PER_DOWNLOAD`)."""
    agent: str = AGENT
    dht: DhtConfig | None = None
    """Run the Kademlia DHT (a datagram endpoint) when set."""
    control: bool = False
    """Serve the local control channel (`<data_dir>/control.sock`, see node.control) so
    commands like `kinswarm status` reach this node. Off by default: tests and the simulator
    run many nodes without data directories."""
    data_dir: Path | None = None


@attrs.frozen
class DhtConfig:
    bind: HostPort
    """Where the DHT's datagram endpoint listens (UDP on real networks)."""
    bootstrap: tuple[HostPort, ...] = ()
    state_file: Path | None = None
    """Where the routing table is saved at shutdown and reloaded at start."""
    announce_port: int | None = None
    """The stream port peers should dial when they find us as a provider."""
    paths: int = 1
    """Disjoint lookup paths (S/Kademlia); 1 is plain Kademlia."""
    announce_interval: float = 30 * 60.0
    """How often each provided key is announced again (spread over the interval)."""


class Node:
    """A running node. Create it, then `await nursery.start(node.run)`."""

    def __init__(self, *, network: Network, identity: LocalIdentity, config: NodeConfig) -> None:
        self.network = network
        self.identity = identity
        self.config = config
        self.peers: dict[bytes, PeerConnection] = {}
        self.listen_addresses: list[StreamAddress] = []
        self._extensions: dict[str, tuple[int, ExtensionHandler]] = {}
        self._services: list[tuple[str, Service]] = []
        self._on_connected: list[PeerCallback] = []
        self._on_disconnected: list[PeerCallback] = []
        self._nursery: trio.Nursery | None = None
        self.service_crashes = 0
        self._dialing: dict[StreamAddress, trio.Event] = {}
        self._accepting = 0
        """Incoming connections still in their handshake: they count towards `max_peers`."""
        self._dialled: dict[StreamAddress, bytes] = {}
        """The node id last reached at each dialled address (bounded by the peers we dial)."""
        self.provided_keys: dict[bytes, None] = {}
        """Keys (container ids) this node announces in the DHT, in insertion order."""
        self.dht: DhtService | None = None
        if config.dht is not None:
            self.dht = DhtService(
                network=network,
                identity=identity,
                bind=config.dht.bind,
                bootstrap=config.dht.bootstrap,
                state_file=config.dht.state_file,
                provided_keys=lambda: list(self.provided_keys),
                announce_port=config.dht.announce_port,
                paths=config.dht.paths,
                announce_interval=config.dht.announce_interval,
            )
            self.add_service("dht", self.dht.run)
        self.control: ControlServer | None = None
        """The control server when `config.control`: services register commands on it."""
        if config.control:
            if config.data_dir is None:
                raise ValueError("NodeConfig.control needs a data_dir")
            self.control = ControlServer(config.data_dir)
            register_node_commands(self.control, self)
            if self.dht is not None:
                register_dht_commands(self.control, self.dht)

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    # -- wiring (before run) ----------------------------------------------------------------

    def register_extension(self, name: str, version: int, handler: ExtensionHandler) -> None:
        """Speak extension `name` at `version` on every connection; `handler` gets its
        messages. Register before `run()`."""
        self._extensions[name] = (version, handler)

    def add_service(self, name: str, service: Service) -> None:
        """Run `service` under a supervisor in the node's nursery. Register before `run()`."""
        self._services.append((name, service))

    def on_peer_connected(self, callback: PeerCallback) -> None:
        self._on_connected.append(callback)

    def on_peer_disconnected(self, callback: PeerCallback) -> None:
        self._on_disconnected.append(callback)

    # -- running ----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[list[StreamAddress]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, start the services, and run until cancelled. Reports the bound listen
        addresses through `task_status`. A listener that cannot bind fails the start."""
        startup_error: tuple[str, OSError | ControlStartError] | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    if self.control is not None:
                        # First, so a second node on this data dir fails with that reason
                        # rather than with a port it cannot take.
                        what = "start the control channel"
                        await nursery.start(self._supervised, "control", self.control.serve)
                    for address in self.config.listen:
                        what = f"listen on {address}"
                        bound = await nursery.start(
                            self._supervised, f"listen {address}", self._listener(address)
                        )
                        self.listen_addresses.append(bound)
                    if self.dht is not None and self.dht.announce_port is None:
                        tcp = [a for a in self.listen_addresses if a.transport == "tcp"]
                        self.dht.announce_port = tcp[0].port if tcp else None
                    services = [("keepalive", self._keepalive), *self._services]
                    for name, service in services:
                        what = f"start {name}"
                        await nursery.start(self._supervised, name, service)
                except (OSError, ControlStartError) as error:
                    # Raised after the nursery closes, so the caller gets it bare rather than
                    # inside an exception group.
                    startup_error = (what, error)
                    nursery.cancel_scope.cancel()
                else:
                    log.info("node %s running", self.node_id.hex())
                    task_status.started(list(self.listen_addresses))
                    await trio.sleep_forever()  # until stop() or the caller cancels us
        finally:
            self._nursery = None
        if startup_error is not None:
            what, cause = startup_error
            reason = cause.strerror if isinstance(cause, OSError) else None
            raise NodeStartError(f"cannot {what}: {reason or cause}") from cause

    def stop(self) -> None:
        """Cancel the node's nursery: every service and connection stops."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _supervised(
        self, name: str, service: Service, *, task_status: trio.TaskStatus[object]
    ) -> None:
        await supervise(name, service, on_crash=self._count_crash, task_status=task_status)

    def _count_crash(self, name: str, error: BaseException) -> None:
        self.service_crashes += 1

    async def _keepalive(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Tick every peer's keepalive from one task (one timer per node, not per peer)."""
        task_status.started()
        # Start at a random phase, so a thousand nodes do not ping in the same instant.
        await trio.sleep(self.network.random.uniform(0, KEEPALIVE_INTERVAL_SECONDS))
        while True:
            for peer in list(self.peers.values()):
                reason = peer.tick()
                if reason is not None and self._nursery is not None:
                    self._nursery.start_soon(peer.aclose, reason)
            await trio.sleep(KEEPALIVE_INTERVAL_SECONDS)

    def _listener(self, address: StreamAddress) -> Service:
        async def serve(*, task_status: trio.TaskStatus[StreamAddress]) -> None:
            await self.network.serve_streams(address, self._accept, task_status=task_status)

        return serve

    # -- connections ------------------------------------------------------------------------

    def _core(self, *, initiator: bool, expected_node_id: bytes | None) -> SecureConnection:
        extensions = {name: version for name, (version, _) in self._extensions.items()}
        listen = [str(address) for address in self.listen_addresses]
        ephemeral = self.network.crypto_random(32)
        if initiator:
            key = self.config.capability_keys[0] if self.config.capability_keys else None
            return SecureConnection.initiator(
                self.identity,
                ephemeral_private_key=ephemeral,
                extensions=extensions,
                agent=self.config.agent,
                listen=listen,
                capability_key=key,
                expected_remote_id=expected_node_id,
            )
        return SecureConnection.responder(
            self.identity,
            ephemeral_private_key=ephemeral,
            extensions=extensions,
            agent=self.config.agent,
            listen=listen,
            capability_keys=self.config.capability_keys,
            allow_open=self.config.allow_open,
        )

    def _new_peer(
        self, stream: trio.abc.Stream, address: str, *, initiator: bool, expected: bytes | None
    ) -> PeerConnection:
        peer = PeerConnection(
            network=self.network,
            stream=stream,
            core=self._core(initiator=initiator, expected_node_id=expected),
            remote_address=address,
        )
        for name, (_, handler) in self._extensions.items():
            peer.set_extension_handler(name, handler)
        return peer

    async def _accept(self, stream: trio.abc.Stream, remote: HostPort) -> None:
        """Listener handler: runs one incoming connection to its end."""
        address = f"{remote[0]}:{remote[1]}"
        # Handshakes under way count: a thousand peers dialling at the same instant would
        # all pass a check of the established ones alone (a flash crowd's seed took 1,000
        # with a limit of 500, and its uplink carried their setup for over a second).
        if len(self.peers) + self._accepting >= self.config.max_peers:
            log.info("refusing connection from %s: %d peers already", address, len(self.peers))
            return
        peer = self._new_peer(stream, address, initiator=False, expected=None)
        self._accepting += 1
        try:
            await peer.handshake()
        except PeerGone as gone:
            log.info("handshake with %s failed: %s", address, gone.reason)
            return
        finally:
            self._accepting -= 1
        await self._run_peer(peer)

    async def connect(
        self, address: StreamAddress, *, expected_node_id: bytes | None = None
    ) -> PeerConnection:
        """Dial `address`, authenticate, and run the connection in the node's nursery.

        Returns the open connection (an existing one if we already have this peer). Raises
        OSError if unreachable and PeerGone if the handshake fails."""
        if self._nursery is None:
            raise RuntimeError("the node is not running")
        if expected_node_id is not None and expected_node_id in self.peers:
            return self.peers[expected_node_id]
        in_progress = self._dialing.get(address)
        if in_progress is not None:
            # Someone is dialling this address already: share that connection.
            await in_progress.wait()
            node_id = self._dialled.get(address)
            if node_id is not None and node_id in self.peers:
                return self.peers[node_id]
        done = self._dialing[address] = trio.Event()
        try:
            peer = await self._dial(address, expected_node_id)
            self._dialled[address] = peer.node_id
            return peer
        finally:
            del self._dialing[address]
            done.set()

    async def _dial(self, address: StreamAddress, expected_node_id: bytes | None) -> PeerConnection:
        assert self._nursery is not None
        stream = await self.network.open_stream(address)
        peer = self._new_peer(stream, str(address), initiator=True, expected=expected_node_id)
        try:
            await peer.handshake()
        except BaseException:
            await peer.aclose("handshake failed")
            raise
        existing = self.peers.get(peer.node_id)
        if existing is not None and not self._keep_new(peer, existing):
            await peer.aclose("duplicate connection")
            return existing
        await self._nursery.start(self._run_peer_started, peer)
        return self.peers.get(peer.node_id, peer)

    async def _run_peer_started(
        self, peer: PeerConnection, *, task_status: trio.TaskStatus[None]
    ) -> None:
        await self._run_peer(peer, task_status=task_status)

    def _keep_new(self, new: PeerConnection, existing: PeerConnection) -> bool:
        """Of two connections to one node: when they crossed (one dialled by each side),
        keep the one dialled by the smaller node id, so both sides agree without talking;
        when both go the same way, keep the older one."""
        if not existing.is_open:
            return True
        if new.is_initiator == existing.is_initiator:
            return False
        smaller_is_us = self.node_id < new.node_id
        return new.is_initiator == smaller_is_us

    async def _run_peer(
        self, peer: PeerConnection, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        node_id = peer.node_id
        existing = self.peers.get(node_id)
        if existing is not None:
            if not self._keep_new(peer, existing):
                task_status.started()
                await peer.aclose("duplicate connection")
                return
            await existing.aclose("duplicate connection")
        self.peers[node_id] = peer
        log.info("connected to %s at %s", node_id.hex()[:16], peer.remote_address)
        try:
            for callback in self._on_connected:
                await callback(peer)
            task_status.started()
            reason = await peer.run(own_keepalive=False)
            log.info("connection to %s ended: %s", node_id.hex()[:16], reason)
        finally:
            if self.peers.get(node_id) is peer:
                del self.peers[node_id]
            with trio.move_on_after(DISCONNECT_CALLBACK_SECONDS) as scope:
                scope.shield = True
                for callback in self._on_disconnected:
                    await callback(peer)
