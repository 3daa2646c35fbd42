"""The swarm engine: downloading and seeding containers over the node's connections.

BitTorrent keeps a swarm per torrent. Here one authenticated connection per remote node carries
every container both sides care about: the `ks.swarm` extension (docs/protocol.md §5) runs an
index exchange (a Bloom summary of what each side holds, then increments and wants), per-file
availability (HaveAll / Bitfield / Have), block requests with Merkle proofs, and choking, which
is decided per connection. The algorithms are sans-IO cores: `PiecePicker` (rarest first,
partial pieces first, endgame), `Choker` (tit-for-tat with an optimistic slot), `IndexExchange`.
This module is the Trio shell that feeds them.

A download goes through these states. **metadata**, then **layers**: the manifest, then the
piece layers of files longer than a piece, come from one peer that holds the container (the
next one when it fails), each checked against its hash; **adding**: the store records the
container; **transfer**: blocks arrive with proofs, each verified before it is kept,
complete pieces go to the store in batches (verified again, written, fsynced, then marked
held); **complete**: the store moved the files into place, the container is announced (DHT
provider record) and seeded.

Tasks (in the engine's nursery, itself a supervised node service): the piece writer, the choker,
request timeouts, Haves, PEX, the metadata server (answers in order) and metadata loop (slow
holders), one uploader per connection, and discovery per download.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from node.choker import Choker, PeerRecord
from node.network import StreamAddress
from node.node import Node
from node.peer import PeerConnection, PeerGone
from node.picker import BlockRequest, BlockStatus, PickerError, PiecePicker
from node.store.records import WouldBlock
from node.swarm.capacity import UploadCapacityEstimate
from node.swarm.metaqueue import MetadataQueue
from node.swarm.pacer import UploadPacer
from node.swarm.pex import contacts_to_add, due_for_pex
from node.swarm.pipeline import SCARCE_BLOCKS, request_depth
from node.swarm.reveal import MIN_WINDOW_PIECES, PeerReveal, RevealedFile
from node.swarm.session import ALL_PIECES, IDLE_UNCHOKE_SECONDS, STRIKES_TO_BAN, Session
from node.swarm.storeapi import SwarmStore
from node.swarm.transfer import FileDownload, PieceCache, check_manifest
from wire.container import Manifest, decode_manifest
from wire.errors import DecodeError, ProtocolError
from wire.index import IndexExchange, LocalIndex, PeerHolds, PeerWants
from wire.merkle import BLOCK_SIZE, MAX_PIECE_LENGTH, check_piece_layer
from wire.swarm import (
    EXTENSION_NAME,
    EXTENSION_VERSION,
    MANIFEST_CHUNK,
    MAX_CAPACITY,
    MAX_HAVE_FILES,
    MAX_HAVE_PIECES,
    MAX_LAYER_HASHES,
    MAX_PEX_PEERS,
    Bitfield,
    Block,
    Cancel,
    Capacity,
    Choke,
    FileAlias,
    GetLayer,
    GetManifest,
    Have,
    HaveAll,
    HaveByAlias,
    HaveContainer,
    HaveNone,
    Holding,
    Interested,
    Layer,
    NotInterested,
    PeerAddress,
    Pex,
    Reject,
    RejectReason,
    Request,
    Summary,
    Unchoke,
    UnknownMessage,
    Wants,
    decode,
    encode,
    encode_block_header,
)
from wire.swarm import Manifest as ManifestChunk

log = logging.getLogger("kinswarm.swarm")

PieceWrite = tuple[FileDownload, int, bytes | bytearray | memoryview]
"""A verified piece on its way to the writer: file, piece, bytes."""

REQUEST_TIMEOUT_SECONDS: Final = 30.0
TIMEOUT_CHECK_SECONDS: Final = 5.0
PEX_TICK_SECONDS: Final = 1.0
DIAL_RETRY_SECONDS: Final = 60.0
"""A candidate that could not be dialled is not tried again for this long."""
DISCOVERY_PERIOD_SECONDS: Final = 30.0
METADATA_RETRY_SECONDS: Final = 60.0
"""A peer that could not give us a container's metadata is not asked again for this long."""
METADATA_PATIENCE_SECONDS: Final = 0.5
"""A metadata request unanswered this long (or `METADATA_PATIENCE_ROUND_TRIPS` round trips to
that holder, if longer) is asked of another holder, or asked again (holders drop requests
that waited over `metaqueue.STALE_SECONDS`). A flash crowd's first askers all queue at the
seed; the sooner they turn to the peers already served, the sooner the seed's uplink is free
for pieces: at 1,000 leechers (the seed taking 200), with 1.5 s the last had the metadata at
3.75 s, with 0.5 s and holders picked at random at 1.75 s."""
METADATA_PATIENCE_ROUND_TRIPS: Final = 4
METADATA_SLOW_RETRY_SECONDS: Final = 3.0
"""A holder we left for being slow is not asked again for this long (if others hold it)."""
METADATA_CHECK_SECONDS: Final = 0.5
METADATA_UPLOAD_SHARE: Final = 0.25
"""While Block requests wait, metadata answers get at most this share of the upload rate we
were told. Spaced at the full rate, a 1,000-leecher flash crowd's seed spent 0.5-4 s sending
piece layers (1.3 MB) and its Blocks went out at a quarter of its rate; the peers it gives the
metadata to serve the rest."""
PUSH_MANIFEST_BYTES: Final = 2048
"""While we download a container whose manifest is this small, it goes with our answer to a
peer's want (before the HaveContainer), unasked: a peer that wants a container usually lacks
its manifest and would ask for it next, a round trip later. In a flash crowd the metadata
spreads from downloader to downloader, a round trip less per hop, while their uplinks have
nothing else to carry. A complete holder does not push: a crowd's seed answers every
newcomer's want at once, and its uplink is the scarcest in the crowd's first second (200
pushes were 0.1 s of a 500 KB/s seed's; at 1,000 leechers the median first piece came at
1.59 s with the seed pushing and 1.45 s without). Larger manifests go only when asked."""
BAN_SECONDS: Final = 3600.0
REFILL_BATCH: Final = 64
"""With requests in flight, wait until this many blocks (or as many as are in flight) can go
before asking the picker again: one pick then hands out whole pieces, sent as long runs."""
WRITE_BATCH_BYTES: Final = 8 * 1024 * 1024
MAX_PEERS_PER_DOWNLOAD: Final = 40
"""Discovery dials until this many connections are in a download's swarm."""
MAX_PEX_KEPT: Final = 500
HAVE_BATCH_SECONDS: Final = 0.01
"""After a Have goes, the pieces verified within this long wait to go in one message. Each
hop of a piece through a starting crowd waits on its Have, and a hop takes ~0.2 s (a round
trip and a block), so the wait is kept short: with 0.1 s, a 100-leecher flash crowd finished
0.14 s later at the median (mean of seeds 4-8; last finish 1.262 of the bound against 1.253;
1,000 leechers, seed 1: 1.330 against 1.318). At 0.01 s hardly any Haves share a message in
the crowd (no window at all sent as many), but a fast transfer, hundreds of pieces a second,
still sends at most ~100 Have messages a second to a peer. Haves to peers we choke wait
longer (below)."""
HAVE_BATCH_CHOKED_SECONDS: Final = 1.0
"""The same for a peer we choke while our slots are full: it cannot ask us for anything, so
our Haves only keep its counts of who holds what (its rarest-first, its need slots) and its
interest up to date, which a second's delay hardly changes. Haves were most of a flash
crowd's control traffic, ~12 KB/s per node whatever its uplink: a tenth of a 125 KB/s one,
whose Blocks then went at 0.83 of its upload limit (100 leechers, seed 4, 5-15 s)."""
INDEX_BATCH_SECONDS: Final = 0.25
"""How long index increments (Holding, Wants) wait for company before they go."""
READ_AHEAD_BYTES: Final = 8 * 1024 * 1024
READ_AHEAD_REQUESTS: Final = 64
"""Queued requests the uploader looks through for pieces to read along with the one due."""
STATUS_IDS: Final = 20
"""Container ids listed per peer in `status()` (the counts are complete)."""


@attrs.define(eq=False)
class Download:
    """One container being fetched."""

    container_id: bytes
    download_dir: Path
    state: str = "metadata"
    manifest: Manifest | None = None
    manifest_bytes: bytearray = attrs.Factory(bytearray)
    manifest_total: int | None = None
    layers: dict[bytes, list[bytes]] = attrs.Factory(dict)
    """Piece layers being fetched (root → hashes so far)."""
    files: dict[bytes, FileDownload] = attrs.Factory(dict)
    total_bytes: int = 0
    held_bytes: int = 0
    received_bytes: int = 0
    started_at: float = 0.0
    finished_at: float | None = None
    done: trio.Event = attrs.Factory(trio.Event)
    error: str | None = None
    peers_hint: list[StreamAddress] = attrs.Factory(list)
    pex: dict[bytes, PeerAddress] = attrs.Factory(dict)
    """Candidates learned by peer exchange (verified by handshake when dialled)."""
    metadata_from: bytes | None = None
    """The peer we are fetching the manifest or piece layers from."""
    metadata_heard_at: float = 0.0
    """When that peer was asked, or last answered: silent for METADATA_PATIENCE_SECONDS,
    another holder is asked, or the same one again; after REQUEST_TIMEOUT_SECONDS without an
    answer it is given up on."""
    metadata_asked_at: float = 0.0
    """When the unanswered request to `metadata_from` was first made."""
    metadata_failed: dict[bytes, float] = attrs.Factory(dict)
    """Peers that could not give us the metadata (refused, lied, timed out) → when they
    may be asked again (discovery retries every round)."""
    rediscover: trio.Event = attrs.Factory(trio.Event)
    """Set to look for peers now rather than at the next discovery round."""

    def progress(self) -> dict[str, Any]:
        return {
            "container_id": self.container_id.hex(),
            "name": self.manifest.name if self.manifest else None,
            "state": self.state,
            "total_bytes": self.total_bytes,
            "held_bytes": self.held_bytes,
            "received_bytes": self.received_bytes,
            "error": self.error,
        }


class SwarmEngine:
    def __init__(
        self,
        node: Node,
        store: SwarmStore,
        *,
        download_dir: Path,
        upload_capacity: float | None = None,
        upload_limit: float | None = None,
    ) -> None:
        self.node = node
        self.network = node.network
        self.store = store
        self.download_dir = download_dir
        self.local = LocalIndex()
        self.picker = PiecePicker(seed=node.network.random.getrandbits(64))
        self.choker = Choker(upload_capacity=upload_capacity or upload_limit, seeding=True)
        self._told_capacity = upload_capacity
        self._capacity = (
            UploadCapacityEstimate() if upload_capacity is None and upload_limit is None else None
        )
        """Told neither our capacity nor a limit, we learn it from our uploads (`capacity`)."""
        self._capacity_announced = self._capacity_figure()
        """The upload capacity our Capacity messages state (0: none sent while unknown)."""
        self._pacer = UploadPacer(upload_limit) if upload_limit else None
        """Block data goes out at most at `upload_limit` bytes/s (`node.swarm.pacer`)."""
        self._pacer_turn = trio.Lock()
        """Paced uploaders wait for the pacer one at a time, in the order they came (a
        trio.Lock is FIFO), so a request cancelled while it waits frees its turn at once."""
        self._metadata_requests: MetadataQueue[GetManifest | GetLayer] = MetadataQueue()
        """Manifest and layer requests from peers, answered in order (`metaqueue`)."""
        self._metadata_requested = trio.Event()
        self._metadata_wanted = trio.Event()
        """Set when a download starts: the metadata loop has work."""
        self.cache = PieceCache()
        self.sessions: dict[bytes, Session] = {}
        self.downloads: dict[bytes, Download] = {}
        self.files: dict[bytes, FileDownload] = {}
        self.banned: dict[bytes, float] = {}
        self._before_transfer: dict[bytes, frozenset[bytes] | None] = {}
        """Downloads fetching their metadata or recording it → their file roots (None until
        the manifest is in): peers' Haves for those files are kept until the transfer
        begins (`Session.keep_early`)."""
        self._revealed: dict[bytes, RevealedFile] = {}
        """Files we seed a window at a time, by root (`node.swarm.reveal`)."""
        self._dial_failed: dict[bytes, float] = {}
        self.blocks_rejected = 0
        self.pieces_written = 0
        self._root_downloads: dict[bytes, list[Download]] = {}
        self._writes_send, self._writes_receive = trio.open_memory_channel[PieceWrite](64)
        self._nursery: trio.Nursery | None = None
        self._choke_wakeup = trio.Event()
        self._haves_due = trio.Event()
        self._listeners: list[Callable[[Download], None]] = []
        node.register_extension(EXTENSION_NAME, EXTENSION_VERSION, self._on_message)
        node.on_peer_connected(self._on_connected)
        node.on_peer_disconnected(self._on_disconnected)
        node.add_service("swarm", self.run)

    # -- the service ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        records = await self.network.run_blocking(self.store.list_containers)
        complete = [r.id for r in records if r.state == "complete"]
        self.local.held_added(complete)
        for container_id in complete:
            self.node.provided_keys[container_id] = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                nursery.start_soon(self._writer)
                nursery.start_soon(self._choke_loop)
                nursery.start_soon(self._timeout_loop)
                nursery.start_soon(self._have_loop)
                nursery.start_soon(self._pex_loop)
                nursery.start_soon(self._metadata_server)
                nursery.start_soon(self._metadata_loop)
                for record in records:
                    if record.state != "complete":
                        self._start(record.id, [], have_manifest=True)
                for session in list(self.sessions.values()):
                    nursery.start_soon(self._uploader, session)
                    await self._flush_index(session)
                task_status.started()
                await trio.sleep_forever()
            finally:
                # Closed to new tasks as soon as we stop, before our tasks have ended: the
                # node's disconnect callbacks (`_on_disconnected`) run meanwhile and start
                # tasks here when they may (a flash crowd cut short with peers unchoked
                # failed with "Nursery is closed to new arrivals").
                self._nursery = None

    async def share(self, container_id: bytes) -> None:
        """Seed a complete container the store gained while we run (`kinswarm add`)."""
        if self.local.holds(container_id):
            return
        self.local.held_added([container_id])
        self.node.provided_keys[container_id] = None
        for session in list(self.sessions.values()):
            await self._sync_index(session)
        if self.node.dht is not None and self._nursery is not None:
            self._nursery.start_soon(self._announce_provider, container_id)

    def on_progress(self, listener: Callable[[Download], None]) -> None:
        self._listeners.append(listener)

    async def get(self, container_id: bytes, *, peers: Sequence[StreamAddress] = ()) -> Download:
        """Start (or join) fetching a container; returns its Download (await `done`)."""
        existing = self.downloads.get(container_id)
        if existing is not None:
            existing.peers_hint.extend(peers)
            existing.rediscover.set()
            return existing
        record = await self.network.run_blocking(self.store.get, container_id)
        if record is not None and record.state == "complete":
            download = Download(container_id, self.download_dir, state="complete")
            download.done.set()
            return download
        return self._start(container_id, peers, have_manifest=record is not None)

    def _start(
        self, container_id: bytes, peers: Sequence[StreamAddress], *, have_manifest: bool
    ) -> Download:
        download = Download(container_id, self.download_dir, peers_hint=list(peers))
        download.started_at = self.network.now()
        self.downloads[container_id] = download
        self._before_transfer[container_id] = None
        self.local.want([container_id], everywhere=not have_manifest)
        self._metadata_wanted.set()
        if self._nursery is not None:
            if have_manifest:
                self._nursery.start_soon(self._resume, download)
            self._nursery.start_soon(self._discover, download)
            for session in list(self.sessions.values()):
                self._nursery.start_soon(self._flush_index, session)
        return download

    async def _resume(self, download: Download) -> None:
        """A download the store already knows (imported, or interrupted): skip metadata."""
        manifest = await self.network.run_blocking(self.store.manifest, download.container_id)
        download.manifest = manifest
        self._before_transfer[download.container_id] = frozenset(self._roots_of(download))
        await self._begin_transfer(download, added=True)

    # -- connections --------------------------------------------------------------------------

    async def _on_connected(self, peer: PeerConnection) -> None:
        if self.banned.get(peer.node_id, -math.inf) > self.network.now():
            if self._nursery is not None:
                self._nursery.start_soon(peer.aclose, "banned for sending bad blocks")
            return
        if EXTENSION_NAME not in peer.core.extensions:
            return
        session = Session(peer, IndexExchange(self.local), self.network.now())
        self.sessions[peer.node_id] = session
        if self._nursery is not None:
            self._nursery.start_soon(self._uploader, session)
            self._nursery.start_soon(self._flush_index, session)
            if self._capacity_announced:
                self._nursery.start_soon(self._send, session, Capacity(self._capacity_announced))

    async def _on_disconnected(self, peer: PeerConnection) -> None:
        session = self.sessions.get(peer.node_id) if peer.remote else None
        if session is None or session.peer is not peer:
            return  # a duplicate connection that lost the tie-break: not this session's
        del self.sessions[peer.node_id]
        session.index.close()
        for root in list(session.reveals):
            self._stop_revealing(session, root)
        self.picker.peer_left(peer.node_id)
        for download in self.downloads.values():
            lost_a_source = download.container_id in session.holdings or (
                download.metadata_from == peer.node_id
            )
            if download.state != "complete" and lost_a_source:
                download.rediscover.set()
        session.in_flight.clear()
        session.blocks_in_flight = 0
        session.upload_wakeup.set()
        self._choke_wakeup.set()  # a slot may have come free
        for other in list(self.sessions.values()):
            if other.am_interested and not other.peer_choking and self._nursery is not None:
                self._nursery.start_soon(self._fill_requests, other)
        for download in list(self.downloads.values()):
            if download.metadata_from == peer.node_id:  # another holder is asked
                download.metadata_from = None
                await self._fetch_metadata(download)

    async def _send(self, session: Session, *messages: Any) -> None:
        """Queue `messages` together: nothing else on the connection goes between them."""
        if log.isEnabledFor(logging.DEBUG):
            for message in messages:
                log.debug("to %s: %s", session.node_id.hex()[:8], type(message).__name__)
        with contextlib.suppress(PeerGone):
            await session.peer.send_extension(EXTENSION_NAME, *map(encode, messages))

    async def _flush_index(self, session: Session) -> None:
        for message in session.index.flush():
            await self._send(session, message)

    async def _sync_index(self, session: Session) -> None:
        """After our held set changed: answer the peer's wants it now covers at once, and
        send the increments within INDEX_BATCH_SECONDS, so containers completing one after
        the other share a Holding and a Wants message instead of one each."""
        await self._index_events(session)
        if not session.index_flush_due and self._nursery is not None:
            session.index_flush_due = True
            self._nursery.start_soon(self._flush_index_later, session)

    async def _flush_index_later(self, session: Session) -> None:
        await trio.sleep(INDEX_BATCH_SECONDS)
        session.index_flush_due = False
        if self.sessions.get(session.node_id) is session:
            await self._flush_index(session)

    async def _now_serving(self, download: Download) -> None:
        """A download has its metadata: peers that want the container can fetch that from us,
        and pieces as we get them (docs/protocol.md 5.4), so it joins our held set. Waiting
        for a first piece left the seed to serve every newcomer's metadata behind its block
        traffic: a 100-leecher flash crowd took 2.0 s (median) to get it, 0.5 s now."""
        self.local.settle([download.container_id])
        if self.local.holds(download.container_id):
            return
        self.local.held_added([download.container_id])
        for session in list(self.sessions.values()):
            await self._sync_index(session)

    # -- incoming messages --------------------------------------------------------------------

    async def _on_message(self, peer: PeerConnection, payload: memoryview) -> None:
        session = self.sessions.get(peer.node_id)
        if session is None:
            return
        try:
            message = decode(payload)
        except UnknownMessage:
            return  # a newer peer's message: skip it
        if log.isEnabledFor(logging.DEBUG) and not isinstance(message, Block):
            log.debug("from %s: %s", session.node_id.hex()[:8], type(message).__name__)
        now = self.network.now()
        if isinstance(message, HaveByAlias):
            root, piece_length = session.aliases_in.resolve(message)
            message = Have(root, piece_length, message.pieces)
        if isinstance(message, Block):
            await self._on_block(session, message, now)
        elif isinstance(message, Request):
            self._on_request(session, message)
        elif isinstance(message, Summary | Holding | Wants):
            session.index.receive(message)
            await self._index_events(session)
            await self._flush_index(session)
        elif isinstance(message, HaveContainer):
            session.index.receive(message)
            await self._index_events(session)
        elif isinstance(message, HaveAll | HaveNone | Bitfield | Have):
            early = message.root not in self.files and self._metadata_pending(message.root)
            if not (early and session.keep_early(message)):  # kept: applied when known
                self._on_availability(session, message)
            await self._update_interest(session)
            reveal = session.reveals.get(message.root)
            if reveal is not None and not isinstance(message, HaveNone):
                if isinstance(message, HaveAll):
                    self._stop_revealing(session, message.root)
                elif message.piece_length == reveal.file.piece_length:
                    if isinstance(message, Bitfield):
                        reveal.peer_bitfield(message.bits)
                    else:
                        for piece in message.pieces:
                            reveal.peer_has(piece)
                    await self._reveal_more(session, message.root)
        elif isinstance(message, FileAlias):
            session.aliases_in.declare(message)
        elif isinstance(message, Choke):
            session.peer_choking = True
            for root, first in list(session.in_flight):
                self._release(session, root, first)
        elif isinstance(message, Unchoke):
            session.peer_choking = False
            await self._fill_requests(session)
        elif isinstance(message, Interested):
            session.peer_interested = True
            session.interest_expected = False
            self._choke_wakeup.set()  # a free slot can be filled now, not at the next round
        elif isinstance(message, NotInterested):
            session.peer_interested = False
            session.interest_expected = False
            self._choke_wakeup.set()  # its slot goes to someone who wants data, now
        elif isinstance(message, Cancel):
            session.cancel_upload(message.root, message.block_index)
        elif isinstance(message, Capacity):
            session.peer_upload_capacity = float(message.upload) or None
        elif isinstance(message, Reject):
            self._release(session, message.root, message.block_index)
            await self._fill_requests(session)
        elif isinstance(message, GetManifest | GetLayer):
            if self._metadata_requests.push(session.node_id, message, now):
                self._metadata_requested.set()
        elif isinstance(message, ManifestChunk):
            await self._on_manifest(session, message)
        elif isinstance(message, Layer):
            await self._on_layer(session, message)
        elif isinstance(message, Pex):
            self._on_pex(message)

    async def _index_events(self, session: Session) -> None:
        for event in session.index.take_events():
            if isinstance(event, PeerWants):
                for container_id in event.container_ids:
                    if self.local.holds(container_id):
                        await self._send_holdings(session, container_id)
            elif isinstance(event, PeerHolds):
                await self._peer_holds(session, event)

    async def _send_holdings(self, session: Session, container_id: bytes) -> None:
        """Answer a want for a container we hold: all of it, or what a download has so far."""
        download = self.downloads.get(container_id)
        if download is None or download.state == "complete":
            await self._send_revealed(session, container_id)
            return
        if download.state != "transfer":
            return
        assert download.manifest is not None
        await self._push_manifest(session, download.manifest)
        # Built and queued without an await in between, so every Have sent from here on
        # follows it: the picker marks a piece verified only once the store holds it.
        have_all: list[bytes] = []
        partial: list[Bitfield] = []
        for root in self._roots_of(download):
            session.roots_seen.add(root)
            file = self.files.get(root)
            if file is None:
                have_all.append(root)  # held before this download began
                continue
            bits = self.picker.held_bits(root)
            if any(bits):
                partial.append(Bitfield(root, file.piece_length, bits))
        await self._send_have_container(session, container_id, have_all, partial)

    async def _push_manifest(self, session: Session, manifest: Manifest) -> None:
        """Send a small manifest of a container we download with our answer to a want,
        unasked (PUSH_MANIFEST_BYTES, docs/protocol.md 5.8)."""
        data = manifest.encode()
        if len(data) > PUSH_MANIFEST_BYTES or session.index.peer_may_hold(manifest.id):
            return  # a peer that holds the container (its index says so) has the manifest
        await self._send(session, ManifestChunk(manifest.id, 0, len(data), data))

    async def _send_have_container(
        self, session: Session, container_id: bytes, have_all: list[bytes], partial: list[Bitfield]
    ) -> None:
        """HaveContainer (nothing held by default), spilling into HaveAll and Bitfield
        messages beyond what one message may list."""
        listed = have_all[:MAX_HAVE_FILES]
        room = MAX_HAVE_FILES - len(listed)
        await self._send(
            session,
            HaveContainer(container_id, False, tuple(listed), (), tuple(partial[:room])),
        )
        for root in have_all[len(listed) :]:
            await self._send(session, HaveAll(root))
        for bitfield in partial[room:]:
            await self._send(session, bitfield)

    async def _send_revealed(self, session: Session, container_id: bytes) -> None:
        """Answer a want for a container we hold whole: small files whole, larger ones a
        window of pieces at a time (`node.swarm.reveal`)."""
        try:
            manifest = await self.network.run_blocking(self.store.manifest, container_id)
        except Exception:  # our store's trouble, not the peer's: keep the connection
            log.exception("cannot read the manifest of %s", container_id.hex()[:16])
            return
        now = self.network.now()
        waiting = session.wants_from_us
        have_all: list[bytes] = []
        partial: list[Bitfield] = []
        for entry in manifest.files:
            root = entry.root
            if root is None or root in session.roots_seen:
                continue
            session.roots_seen.add(root)
            pieces = -(-entry.length // manifest.piece_length)
            if pieces <= MIN_WINDOW_PIECES or root in self.files:
                have_all.append(root)
                continue
            file = self._revealed.get(root)
            if file is None:
                file = self._revealed[root] = RevealedFile(manifest.piece_length, entry.length)
            reveal = session.reveals.get(root)
            if reveal is None:
                reveal = session.reveals[root] = PeerReveal(file)
                file.peers += 1
            bits = bytearray(-(-pieces // 8))
            start = self.network.random.getrandbits(32)
            for piece in [] if session.am_choking else reveal.top_up(now, from_piece=start):
                bits[piece >> 3] |= 0x80 >> (piece & 7)
            partial.append(Bitfield(root, manifest.piece_length, bytes(bits)))
        await self._send_have_container(session, container_id, have_all, partial)
        if session.wants_from_us and not waiting:
            self._choke_wakeup.set()  # it wants what we show only to peers we unchoke

    async def _reveal_more(self, session: Session, root: bytes) -> None:
        """Top up the peer's window, if we unchoke it: a piece shown to a peer that waits
        for a slot is a piece another is not shown, and the peer asks for it once unchoked,
        when we may have sent it elsewhere since (a crowd's seed sent ~1.8 copies of a file
        before every piece had gone out once when it showed every peer a window)."""
        reveal = session.reveals.get(root)
        if reveal is None:
            return
        if reveal.done:
            self._stop_revealing(session, root)
            return
        if session.am_choking:
            return
        now = self.network.now()
        rate, round_trip = session.recent_up.rate(now), session.peer.round_trip_seconds or 0.0
        capacity = self.choker.upload_capacity
        slot_rate = capacity / self.choker.slots if capacity else 0.0
        start = self.network.random.getrandbits(32)
        shown = reveal.top_up(now, rate, round_trip, start, slot_rate)
        await self._send_haves(session, root, reveal.file.piece_length, shown)

    async def _send_haves(
        self, session: Session, root: bytes, piece_length: int, pieces: list[int]
    ) -> None:
        """Haves name the file by this connection's alias for it (declared first if new)."""
        pieces = sorted(pieces)
        for start in range(0, len(pieces), MAX_HAVE_PIECES):
            chunk = tuple(pieces[start : start + MAX_HAVE_PIECES])
            number, declaration = session.aliases_out.number_for(root, piece_length)
            have = HaveByAlias(number, chunk)
            # Together, so that no other Have rebinds the number between the two.
            await self._send(session, *((declaration, have) if declaration else (have,)))

    def _stop_revealing(self, session: Session, root: bytes) -> None:
        reveal = session.reveals.pop(root, None)
        if reveal is not None:
            reveal.file.peers -= 1
            if reveal.file.peers == 0 and root in self._revealed:
                del self._revealed[root]

    async def _peer_holds(self, session: Session, event: PeerHolds) -> None:
        download = self.downloads.get(event.container_id)
        if download is None:
            return
        session.holdings[event.container_id] = event.have
        await self._fetch_metadata(download)
        await self._apply_holdings(session, download)

    def _metadata_pending(self, root: bytes) -> bool:
        """Could `root` be a file of a download whose transfer has not begun? (Asked per
        Have for a file we are not fetching: a set lookup per such download.)"""
        return any(roots is None or root in roots for roots in self._before_transfer.values())

    async def _apply_holdings(self, session: Session, download: Download) -> None:
        """Feed what the peer holds of `download` to the picker (once its roots are known):
        its HaveContainer, then what it told us of each file since, while we fetched the
        metadata."""
        if download.state != "transfer":
            return
        early = [m for root in self._roots_of(download) for m in session.take_early(root)]
        have = session.holdings.get(download.container_id)
        if have is None:
            for message in early:
                self._on_availability(session, message)
            if early:
                await self._update_interest(session)
            return
        listed = {*have.have_all, *have.have_none, *(b.root for b in have.partial)}
        for root in self._roots_of(download):
            session.roots_seen.add(root)
            if root in have.have_all or (have.held_default and root not in listed):
                self._peer_has_all(session, root)
        for message in [*have.partial, *early]:
            self._on_availability(session, message)
        await self._update_interest(session)
        if have.partial and download.container_id not in session.told_held:
            # A peer that shows us part of a file (a download, or a seed revealing a window)
            # chooses what to show from what we have: tell it.
            session.told_held.add(download.container_id)
            for bitfield in have.partial:
                file = self.files.get(bitfield.root)
                if file is not None and bitfield.piece_length == file.piece_length:
                    bits = self.picker.held_bits(bitfield.root)
                    if any(bits):
                        await self._send(session, Bitfield(bitfield.root, file.piece_length, bits))

    def _roots_of(self, download: Download) -> list[bytes]:
        if download.manifest is None:
            return []
        return [e.root for e in download.manifest.files if e.root is not None]

    # -- availability and interest ------------------------------------------------------------

    def _peer_has_all(self, session: Session, root: bytes) -> None:
        session.peer_holds(root, ALL_PIECES)
        session.roots_seen.add(root)
        if root in self.files:
            self.picker.peer_has_all(session.node_id, root)
            lacking = self.files[root].piece_count - self.picker.completed_pieces(root)
            if lacking > 0:
                session.useful[root] = lacking

    def _on_availability(self, session: Session, message: Any) -> None:
        root = message.root
        if not isinstance(message, HaveNone):  # saying "nothing" tells nothing
            session.last_told = self.network.now()
        session.roots_seen.add(root)
        if isinstance(message, HaveNone):
            session.peer_holds(root, 0)
        elif isinstance(message, Bitfield):
            session.peer_holds(root, int.from_bytes(message.bits).bit_count())
        elif isinstance(message, Have):
            session.peer_holds(root, len(message.pieces), added=True)
        file = self.files.get(root)
        if isinstance(message, HaveAll):
            self._peer_has_all(session, root)
            return
        if file is None or isinstance(message, HaveNone):
            return
        if message.piece_length != file.piece_length:
            return  # counted in another piece length: ask again later (rare)
        lacking = session.useful.get(root, 0)
        try:
            if isinstance(message, Bitfield):
                self.picker.peer_bitfield(session.node_id, root, message.bits)
                bits, has_piece = message.bits, self.picker.has_piece
                lacking = sum(
                    1
                    for p in range(file.piece_count)
                    if bits[p // 8] & (0x80 >> (p % 8)) and not has_piece(root, p)
                )
            else:
                for piece in message.pieces:
                    if not self.picker.peer_has_piece(session.node_id, root, piece):
                        self.picker.peer_has(session.node_id, root, piece)
                        lacking += not self.picker.has_piece(root, piece)
        except (PickerError, IndexError):
            pass  # a piece beyond the file, or a bitfield of the wrong size: the rest is ignored
        if lacking > 0:
            session.useful[root] = lacking
        else:
            session.useful.pop(root, None)

    async def _update_interest(self, session: Session) -> None:
        for root in [r for r in session.useful if r not in self.files]:
            del session.useful[root]
        interested = bool(session.useful)
        if interested != session.am_interested:
            session.am_interested = interested
            await self._send(session, Interested() if interested else NotInterested())
        if interested and not session.peer_choking:
            await self._fill_requests(session)

    # -- requesting -------------------------------------------------------------------------

    def _depth(self, session: Session) -> int:
        rtt = session.peer.round_trip_seconds or 0.2
        rate = session.recent_down.rate(self.network.now())
        scarce = self.picker.requestable_blocks < SCARCE_BLOCKS
        return request_depth(rate, rtt, scarce=scarce)

    async def _fill_requests(self, session: Session) -> None:
        if session.peer_choking or not session.am_interested:
            return
        # The picker counts in request units (`FileDownload.unit_blocks`); ask it for as many
        # as the smallest unit of what this peer offers would fit, and stop when room is out.
        # Two units at least stay in flight, so large units do not leave the pipe empty.
        files = self.files
        unit = min((files[r].unit_blocks for r in session.useful if r in files), default=1)
        in_flight = session.blocks_in_flight
        depth = max(self._depth(session), 2 * unit)
        room = depth - in_flight
        # Top up in batches once the pipe is primed: one pick and a run of Requests the
        # writer sends together, rather than a pick and a send per arriving block; but
        # never let a shallow pipe drain by more than a quarter.
        if room <= 0 or (in_flight and room < min(REFILL_BATCH, max(unit, depth // 4))):
            return
        now = self.network.now()
        for request in self.picker.pick(session.node_id, room // unit, now, self.network.random):
            file = self.files.get(request.root)
            if file is None:
                continue
            blocks = file.unit_blocks_in(request.piece, request.block)
            if blocks > room and session.blocks_in_flight:
                break
            try:
                self.picker.mark_requested(session.node_id, request, now)
            except PickerError:
                continue
            first = file.unit_start(request.piece, request.block)
            session.track(file.root, first, blocks, now)
            room -= blocks
            await self._send(session, Request(file.root, first, file.height, file.unit_blocks))

    def _release(self, session: Session, root: bytes, first_block: int) -> None:
        """The request for the unit at `first_block` will not be answered: pick it again."""
        if not session.untrack(root, first_block):
            return
        file = self.files.get(root)
        if file is not None:
            piece, block = file.split(first_block)
            unit = block // file.unit_blocks
            self.picker.request_failed(session.node_id, BlockRequest(root, piece, unit))

    async def _on_block(self, session: Session, message: Block, now: float) -> None:
        size = len(message.data)
        session.bytes_down += size
        session.downloaded.add(size, now)
        session.recent_down.add(size, now)
        root, first = message.root, message.block_index
        session.untrack(root, first)
        file = self.files.get(root)
        if file is None:
            return
        located = file.locate(first, message.block_count)
        if located is None:
            return  # not a unit we ask for: nobody requested it
        piece, unit = located
        request = BlockRequest(root, piece, unit)
        if not file.verify(first, message.data, message.proof):
            self.blocks_rejected += 1
            with contextlib.suppress(PickerError):  # ask someone else for it
                self.picker.request_failed(session.node_id, request)
            await self._strike(session, f"blocks {first}+{message.block_count} failed their proof")
            if session.strikes < STRIKES_TO_BAN:
                # A failed answer is an answer: the pipe has room again. Asking on is how a
                # liar earns its ban (the strikes bound what it can waste); left unasked, it
                # would keep its connection, and with nobody else to ask stall the download.
                await self._fill_requests(session)
            return
        try:
            outcome = self.picker.block_received(session.node_id, request)
        except PickerError:
            return
        if outcome.status is BlockStatus.ACCEPTED:
            file.keep(piece, unit, message.data)
            for download in self._root_downloads.get(root, []):
                download.received_bytes += size
            for other in outcome.cancel:
                other_session = self.sessions.get(other)
                if other_session is not None:
                    other_session.untrack(root, first)
                    await self._send(other_session, Cancel(root, first))
            if outcome.piece_complete:
                whole = file.complete_piece(piece)
                if whole is not None:
                    await self._queue_write(file, piece, whole)
        await self._fill_requests(session)

    async def _queue_write(
        self, file: FileDownload, piece: int, data: bytes | bytearray | memoryview
    ) -> None:
        """Hand a verified piece to the writer. This runs in the reader of the connection
        that brought the piece's last block, which is cancelled when that connection
        closes; a piece that cannot be queued then goes back to the picker, to be fetched
        again, rather than stay received and never written (a download that never ends)."""
        try:
            self._writes_send.send_nowait((file, piece, data))
        except trio.WouldBlock:
            try:
                await self._writes_send.send((file, piece, data))
            except BaseException:
                with contextlib.suppress(PickerError):  # nobody to blame: not a strike
                    self.picker.piece_failed(file.root, piece)
                raise

    async def _strike(self, session: Session, reason: str) -> None:
        session.strikes += 1
        log.info("peer %s: %s (strike %d)", session.node_id.hex()[:16], reason, session.strikes)
        if session.strikes >= STRIKES_TO_BAN:
            self.banned[session.node_id] = self.network.now() + BAN_SECONDS
            await session.peer.aclose(f"banned: {reason}")

    # -- writing ----------------------------------------------------------------------------

    async def _writer(self) -> None:
        """Batch verified pieces into the store (one fsync per file, one commit per batch)."""
        while True:
            batch = [await self._writes_receive.receive()]
            size = len(batch[0][2])
            while size < WRITE_BATCH_BYTES:
                try:
                    item = self._writes_receive.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(item)
                size += len(item[2])
            by_length: dict[int, list[PieceWrite]] = {}
            for item in batch:
                by_length.setdefault(item[0].piece_length, []).append(item)
            for piece_length, items in by_length.items():
                pieces = [(file.root, piece, data) for file, piece, data in items]
                result = await self.network.run_blocking(
                    functools.partial(self.store.write_pieces, pieces, piece_length=piece_length)
                )
                refused = set(result.refused)
                for file, piece, data in items:
                    if (file.root, piece) in refused:
                        for peer in self.picker.piece_failed(file.root, piece):
                            offender = self.sessions.get(peer)
                            if offender is not None:
                                await self._strike(offender, f"piece {piece} failed")
                        continue
                    self.pieces_written += 1
                    self.picker.piece_verified(file.root, piece)
                    drained = self._count_held(file.root, piece)  # before any await
                    await self._announce_piece(file, piece, len(data), drained)
                for container_id in result.completed:
                    await self._finished(container_id)

    def _count_held(self, root: bytes, piece: int) -> list[Session]:
        """We hold `piece` now: each peer that has it has one piece fewer we lack. Runs in
        the same step as `piece_verified`, so a Have arriving in between is not counted
        twice. Returns the sessions left with nothing we lack."""
        drained = []
        for session in self.sessions.values():
            if root in session.useful and self.picker.peer_has_piece(session.node_id, root, piece):
                lacking = session.useful[root] - 1
                if lacking > 0:
                    session.useful[root] = lacking
                else:
                    del session.useful[root]
                    drained.append(session)
        return drained

    async def _announce_piece(
        self, file: FileDownload, piece: int, size: int, drained: list[Session]
    ) -> None:
        for download in self._root_downloads.get(file.root, []):
            download.held_bytes += size
            self._notify(download)
            await self._now_serving(download)
        key = (file.root, file.piece_length)
        for session in self.sessions.values():
            # A peer that has the piece would never ask us for it: it needs no Have (most of
            # a flash crowd's Haves, late in the download).
            if file.root in session.roots_seen and not self.picker.peer_has_piece(
                session.node_id, file.root, piece
            ):
                session.pending_haves.setdefault(key, []).append(piece)
                self._haves_due.set()
        for session in drained:
            if session.node_id in self.sessions:
                await self._update_interest(session)
        if self.picker.is_complete(file.root):
            for session in list(self.sessions.values()):
                if file.root in session.useful:
                    await self._update_interest(session)

    async def _finished(self, container_id: bytes) -> None:
        download = self.downloads.get(container_id)
        self.local.unwant([container_id])
        self.local.held_added([container_id])
        self.node.provided_keys[container_id] = None
        if download is not None:
            download.state = "complete"
            download.finished_at = self.network.now()
            download.rediscover.set()
            for root in self._roots_of(download):
                waiting = [d for d in self._root_downloads.get(root, []) if d is not download]
                if waiting:
                    self._root_downloads[root] = waiting
                else:
                    self._root_downloads.pop(root, None)
                    self.files.pop(root, None)
            self._notify(download)
            download.done.set()
        for session in list(self.sessions.values()):
            await self._sync_index(session)
            await self._update_interest(session)
        if self.node.dht is not None and self._nursery is not None:
            self._nursery.start_soon(self._announce_provider, container_id)

    async def _announce_provider(self, container_id: bytes) -> None:
        dht = self.node.dht
        if dht is not None and dht.engine is not None and dht.announce_port is not None:
            with contextlib.suppress(RuntimeError, trio.ClosedResourceError):
                await dht.announce(container_id)

    def _notify(self, download: Download) -> None:
        for listener in self._listeners:
            listener(download)

    # -- metadata: manifests and layers -------------------------------------------------------

    async def _metadata_server(self) -> None:
        """Answer manifest and layer requests one at a time, in the order asked
        (`node.swarm.metaqueue` says why). With our upload rate given, each answer holds the
        next back for the time it takes on the link, and counts against the upload pacer."""
        while True:
            item = self._metadata_requests.pop(self.network.now())
            if item is None:
                self._metadata_requested = trio.Event()
                await self._metadata_requested.wait()
                continue
            node_id, message = item
            if isinstance(message, GetManifest):
                answer: ManifestChunk | Layer | None = await self._manifest_chunk(message)
            else:
                answer = await self._layer_part(message)
            session = self.sessions.get(node_id)
            if answer is None or session is None:
                continue
            payload = encode(answer)
            # The answer is queued at once; a peer slow to read must not hold up the line
            # (waiting for its queue to drain is all a cancelled send skips).
            with trio.move_on_after(0), contextlib.suppress(PeerGone):
                await session.peer.send_extension(EXTENSION_NAME, payload)
            # Spaced at a rate we were told, never at a learnt one: that is a floor (what we
            # managed to send so far), and would throttle a node serving many containers.
            rate = self._pacer.rate if self._pacer is not None else self._told_capacity
            if rate:
                if self._pacer is not None:
                    self._pacer.take(len(payload), self.network.now())
                if any(s.uploads for s in self.sessions.values()):
                    rate *= METADATA_UPLOAD_SHARE
                await trio.sleep(len(payload) / rate)

    async def _manifest_chunk(self, message: GetManifest) -> ManifestChunk | None:
        """The answer to a GetManifest ("not held" when we cannot read it). Runs in the
        metadata server, for every peer: a store error must not end it."""
        not_held = ManifestChunk(message.container_id, 0, 0, b"")
        if not self.local.holds(message.container_id):
            return not_held
        try:
            manifest = await self.network.run_blocking(self.store.manifest, message.container_id)
        except Exception:
            log.exception("cannot read the manifest of %s", message.container_id.hex()[:16])
            return not_held
        data = manifest.encode()
        if message.offset > len(data):
            return None
        chunk = data[message.offset : message.offset + MANIFEST_CHUNK]
        return ManifestChunk(message.container_id, message.offset, len(data), chunk)

    async def _layer_part(self, message: GetLayer) -> Layer:
        try:
            layer = await self.network.run_blocking(
                self.store.piece_layer, message.root, message.piece_length
            )
        except Exception:
            layer = []
        hashes = tuple(layer[message.offset : message.offset + MAX_LAYER_HASHES])
        return Layer(message.root, message.piece_length, message.offset, hashes)

    async def _fetch_metadata(self, download: Download) -> None:
        """Ask one peer that holds the container for the metadata still missing: the
        manifest (from its start), or the piece layers not yet complete (from where they
        stopped). Called when a peer says it holds the container, when the peer we asked
        leaves, cannot help or stays silent, and each discovery round; a peer that failed
        is not asked again for METADATA_RETRY_SECONDS."""
        if download.state not in ("metadata", "layers") or download.metadata_from is not None:
            return
        source = next(self._metadata_sources(download, self.network.now()), None)
        if source is None:
            return  # the next peer that says it holds the container is asked
        download.metadata_from = source.node_id
        # From the start: a manifest of one peer's chunks is blamed on that peer alone.
        download.manifest_bytes = bytearray()
        await self._ask_metadata(source, download)

    def _metadata_sources(self, download: Download, now: float) -> Iterator[Session]:
        """Connected peers that hold the container and may be asked for its metadata now,
        in random order: in connection order, a crowd's members all asked the one they
        dialled first (the seed) and queued there while others who held it sat idle."""
        sources = [
            session
            for session in self.sessions.values()
            if download.container_id in session.holdings
            and download.metadata_failed.get(session.node_id, -math.inf) <= now
        ]
        self.network.random.shuffle(sources)
        return iter(sources)

    async def _ask_metadata(self, session: Session, download: Download) -> None:
        """Ask `session` for what is missing of the metadata, from where it stopped."""
        now = self.network.now()
        download.metadata_heard_at = download.metadata_asked_at = now
        if download.state == "metadata":
            offset = len(download.manifest_bytes)
            await self._send(session, GetManifest(download.container_id, offset))
        else:
            await self._fetch_layers(session, download)

    async def _metadata_loop(self) -> None:
        """Keep metadata fetches moving: a holder that leaves a request unanswered for
        METADATA_PATIENCE_SECONDS (busy serving others, in a flash crowd) is left for another
        holder if there is one, or asked again; one silent for REQUEST_TIMEOUT_SECONDS is
        given up on. Downloads with no holder asked yet try the holders known now."""
        while True:
            waiting = [d for d in self.downloads.values() if d.state in ("metadata", "layers")]
            if not waiting:
                self._metadata_wanted = trio.Event()
                await self._metadata_wanted.wait()
                continue
            now = self.network.now()
            for download in waiting:
                session = self.sessions.get(download.metadata_from or b"")
                if session is None:
                    await self._fetch_metadata(download)
                elif download.metadata_asked_at + REQUEST_TIMEOUT_SECONDS <= now:
                    await self._metadata_failed(download, session)
                elif download.metadata_heard_at + _metadata_patience(session) <= now:
                    await self._metadata_slow(download, session, now)
            await trio.sleep(METADATA_CHECK_SECONDS)

    async def _metadata_slow(self, download: Download, session: Session, now: float) -> None:
        if all(other is session for other in self._metadata_sources(download, now)):
            asked_at = download.metadata_asked_at
            await self._ask_metadata(session, download)  # our request may have been dropped
            download.metadata_asked_at = asked_at
            return
        download.metadata_failed[session.node_id] = now + METADATA_SLOW_RETRY_SECONDS
        download.metadata_from = None
        await self._fetch_metadata(download)

    async def _metadata_failed(self, download: Download, session: Session) -> None:
        """`session` cannot give us the metadata: ask another holder."""
        download.metadata_failed[session.node_id] = self.network.now() + METADATA_RETRY_SECONDS
        if download.metadata_from == session.node_id:
            download.metadata_from = None
            await self._fetch_metadata(download)

    async def _on_manifest(self, session: Session, message: ManifestChunk) -> None:
        download = self.downloads.get(message.container_id)
        if download is None or download.state != "metadata":
            return
        if download.metadata_from != session.node_id:
            whole = message.offset == 0 and 0 < len(message.data) == message.total_length
            if not whole:
                return  # a late answer from a peer we gave up on
            # Pushed with a downloader's answer to our want (or a late answer): whole, and
            # checked against the id below, so take it, and ask its sender for the layers.
            download.metadata_from = session.node_id
            download.manifest_bytes = bytearray()
        if message.total_length == 0:
            await self._metadata_failed(download, session)  # it does not hold it (any more)
            return
        if message.offset != len(download.manifest_bytes):
            return  # not what we asked for
        download.metadata_heard_at = download.metadata_asked_at = self.network.now()
        download.manifest_bytes += message.data
        download.manifest_total = message.total_length
        if len(download.manifest_bytes) < message.total_length:
            await self._send(
                session, GetManifest(message.container_id, len(download.manifest_bytes))
            )
            return
        data = bytes(download.manifest_bytes)
        download.manifest_bytes = bytearray()
        if not check_manifest(download.container_id, data):
            await self._strike(session, "sent a manifest that does not match the id")
            await self._metadata_failed(download, session)
            return
        try:
            download.manifest = decode_manifest(data)
        except DecodeError as exc:
            await self._strike(session, f"sent a bad manifest: {exc}")
            await self._metadata_failed(download, session)
            return
        self._before_transfer[download.container_id] = frozenset(self._roots_of(download))
        download.state = "layers"
        await self._fetch_layers(session, download)

    async def _fetch_layers(self, session: Session, download: Download) -> None:
        """Ask `session` for every piece layer not yet complete, from where it stopped."""
        manifest = download.manifest
        assert manifest is not None
        for entry in manifest.files:
            if entry.root is not None and entry.length > manifest.piece_length:
                so_far = download.layers.setdefault(entry.root, [])
                if not self._layer_done(download, entry.root):
                    await self._send(
                        session, GetLayer(entry.root, manifest.piece_length, len(so_far))
                    )
        if all(self._layer_done(download, root) for root in download.layers):
            self._transfer_soon(download)

    def _layer_done(self, download: Download, root: bytes) -> bool:
        manifest = download.manifest
        assert manifest is not None
        entry = next(e for e in manifest.files if e.root == root)
        return len(download.layers[root]) == -(-entry.length // manifest.piece_length)

    async def _on_layer(self, session: Session, message: Layer) -> None:
        for download in list(self.downloads.values()):
            so_far = download.layers.get(message.root)
            if so_far is None or download.state != "layers" or download.manifest is None:
                continue
            if download.metadata_from != session.node_id or message.offset != len(so_far):
                continue  # a late answer from a peer we gave up on, or not what we asked
            if not message.hashes:
                await self._metadata_failed(download, session)  # it does not have the layer
                continue
            download.metadata_heard_at = download.metadata_asked_at = self.network.now()
            so_far.extend(message.hashes)
            entry = next(e for e in download.manifest.files if e.root == message.root)
            pieces = -(-entry.length // download.manifest.piece_length)
            if len(so_far) < pieces:
                await self._send(session, GetLayer(message.root, message.piece_length, len(so_far)))
                continue
            try:
                check_piece_layer(
                    so_far, message.root, entry.length, download.manifest.piece_length
                )
            except DecodeError:
                await self._strike(session, "sent a piece layer that does not match the root")
                download.layers[message.root] = []
                await self._metadata_failed(download, session)
                continue
            if all(self._layer_done(download, root) for root in download.layers):
                self._transfer_soon(download)

    def _transfer_soon(self, download: Download) -> None:
        """The metadata is complete: record the container and start the transfer, in the
        engine's nursery. Not in the reader of the connection that brought the last layer,
        which is cancelled when that connection closes, half way through the store's work."""
        download.state = "adding"
        download.metadata_from = None
        if self._nursery is not None:
            self._nursery.start_soon(functools.partial(self._begin_transfer, download, added=False))

    async def _begin_transfer(self, download: Download, *, added: bool) -> None:
        manifest = download.manifest
        assert manifest is not None
        try:
            await self._add_and_begin(download, manifest, added=added)
        finally:
            self._before_transfer.pop(download.container_id, None)

    async def _add_and_begin(self, download: Download, manifest: Manifest, *, added: bool) -> None:
        if not added:
            now = self.network.now()  # read here: the call below runs on a worker thread
            try:
                await self.network.run_blocking(
                    lambda: self.store.add_container(
                        manifest, download.layers, download.download_dir, complete=False, now=now
                    )
                )
            except Exception as exc:  # a store error ends this download only
                download.state = "failed"
                download.error = str(exc)
                download.done.set()
                return
        download.state = "transfer"
        download.total_bytes = manifest.total_length
        piece_length = manifest.piece_length
        for entry in manifest.files:
            if entry.root is None:
                continue
            held = await self.network.run_blocking(self.store.held, entry.root, piece_length)
            done = sum(
                min(piece_length, entry.length - p * piece_length)
                for p in range(held.count)
                if held.bits[p // 8] & (0x80 >> (p % 8))
            )
            download.held_bytes += done
            self._root_downloads.setdefault(entry.root, []).append(download)
            if entry.root in self.files or done == entry.length:
                continue
            layer = (
                [entry.root]
                if entry.length <= piece_length
                else await self.network.run_blocking(
                    self.store.piece_layer, entry.root, piece_length
                )
            )
            file = FileDownload(entry.root, entry.length, piece_length, layer)
            self.files[entry.root] = file
            count, per_piece, last = file.picker_layout()
            self.picker.add_file(
                entry.root, count, per_piece, last_piece_blocks=last, have=held.bits
            )
        self._notify(download)
        if download.held_bytes == download.total_bytes:
            await self._finished(download.container_id)
            return
        await self._now_serving(download)
        for session in list(self.sessions.values()):
            await self._apply_holdings(session, download)
            await self._flush_index(session)  # our want goes out; HaveContainer answers it

    # -- uploading ----------------------------------------------------------------------------

    def _on_request(self, session: Session, message: Request) -> None:
        session.last_asked = self.network.now()
        if session.am_choking:
            self._reject_soon(session, message, RejectReason.CHOKED)
        elif not session.queue_upload(message):
            self._reject_soon(session, message, RejectReason.OVERLOADED)

    def _reject_soon(self, session: Session, message: Request, reason: RejectReason) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(
                self._send, session, Reject(message.root, message.block_index, int(reason))
            )

    async def _uploader(self, session: Session) -> None:
        """Serve one peer's requests in order, from the piece cache. The request being served
        stays at the head of `session.uploads` until its Block goes, so a Cancel or a Choke
        that arrives while it waits for the pacer still stops it: in a flash crowd's endgame
        most cancelled duplicates were Blocks already waiting for their turn here."""
        uploads = session.uploads
        while session.node_id in self.sessions:
            if not uploads:
                session.upload_wakeup = trio.Event()
                await session.upload_wakeup.wait()
                continue
            request = uploads[0]
            if session.am_choking:
                uploads.popleft()
                await self._send(
                    session, Reject(request.root, request.block_index, int(RejectReason.CHOKED))
                )
                continue
            payload = await self._block_payload(request, session)
            if not uploads or uploads[0] is not request:
                continue  # cancelled, or the peer choked, while we read it
            if payload is None:
                uploads.popleft()
                await self._send(
                    session, Reject(request.root, request.block_index, int(RejectReason.NOT_HELD))
                )
                continue
            if self._pacer is not None and not await self._paced_turn(session, request, payload):
                continue
            uploads.popleft()
            try:
                await session.peer.send_extension(EXTENSION_NAME, payload)
            except PeerGone:
                return
            size, now = len(payload), self.network.now()
            if self._capacity is not None:
                self._capacity.add(size, now)
            session.bytes_up += size
            session.uploaded.add(size, now)
            session.recent_up.add(size, now)
            reveal = session.reveals.get(request.root)
            if reveal is not None and reveal.run_served(request.block_index, request.count):
                await self._reveal_more(session, request.root)

    async def _paced_turn(self, session: Session, request: Request, payload: bytes) -> bool:
        """Wait until the pacer lets `payload` go and take its bytes; False (nothing taken)
        if the request was cancelled or the peer choked while we waited. The send itself
        happens outside the turn, so a peer slow to read never holds up the others."""
        assert self._pacer is not None
        async with self._pacer_turn:
            wait = self._pacer.ready_in(self.network.now())
            if wait > 0:
                await trio.sleep(wait)
            uploads = session.uploads
            if not uploads or uploads[0] is not request or session.am_choking:
                return False
            self._pacer.take(len(payload), self.network.now())
            return True

    async def _block_payload(self, request: Request, session: Session) -> bytes | None:
        """The Block message for a request (its run of blocks), or None if we cannot serve it.

        The proof height names the requester's piece: 16 KiB << height bytes (for a file no
        longer than that, the whole file). Serving in that piece length needs nothing but
        the request, whatever piece length we store the file in."""
        located = _piece_of(request)
        if located is None:
            return None
        piece_length, piece, block = located
        cached = self.cache.lookup(request.root, piece_length, piece)
        if cached is None:
            # What the OS holds in memory is read here and now (`read_piece_nowait` never
            # waits on the disk): a trip to a worker thread per piece made serving a warm
            # file cost a third more CPU, on both ends (bench_transfer). What is on disk is
            # read in a worker thread, with the pieces the next queued requests need.
            try:
                data = self.store.read_piece_nowait(request.root, piece, piece_length=piece_length)
            except WouldBlock:
                await self._read_ahead(request.root, piece_length, piece, session)
            except Exception:
                return None  # not held (any more), or unreadable: Reject it
            else:
                self.cache.insert(request.root, piece_length, piece, data)
            cached = self.cache.lookup(request.root, piece_length, piece)
            if cached is None:
                return None
        height = request.proof_height
        if block * BLOCK_SIZE >= len(cached.data):
            return None
        view, proof = PieceCache.run_with_proof(cached, block, request.count, height)
        return b"".join((encode_block_header(request.root, request.block_index, proof), view))

    async def _read_ahead(
        self, root: bytes, piece_length: int, piece: int, session: Session
    ) -> None:
        """Read a piece into the cache, with the pieces the next queued requests need (up to
        READ_AHEAD_BYTES)."""
        wanted = [(root, piece_length, piece)]
        budget = READ_AHEAD_BYTES - piece_length
        for queued in itertools.islice(session.uploads, READ_AHEAD_REQUESTS):
            located = _piece_of(queued)
            if located is None or located[0] > budget:
                continue
            key = (queued.root, located[0], located[1])
            if key not in wanted and self.cache.lookup(*key) is None:
                wanted.append(key)
                budget -= located[0]
        await self._read_pieces(wanted)

    async def _read_pieces(self, wanted: list[tuple[bytes, int, int]]) -> None:
        """Read pieces (root, piece length, piece) into the cache in one trip to a worker
        thread; those we cannot read (not held any more, storage errors) are left out."""

        def read_all() -> list[bytes | None]:
            out: list[bytes | None] = []
            for key_root, key_length, key_piece in wanted:
                try:
                    out.append(self.store.read_piece(key_root, key_piece, piece_length=key_length))
                except Exception:
                    out.append(None)  # not held (any more) or unreadable: Reject it
            return out

        for (key_root, key_length, key_piece), read in zip(
            wanted, await self.network.run_blocking(read_all), strict=True
        ):
            if read is not None:
                self.cache.insert(key_root, key_length, key_piece, read)

    # -- choking, timeouts, PEX, discovery -----------------------------------------------------

    def _capacity_figure(self) -> int:
        """Our upload capacity as we tell peers (`Capacity`): 0 while unknown."""
        capacity = self.choker.upload_capacity
        return 0 if capacity is None else min(MAX_CAPACITY, round(capacity))

    async def _announce_capacity(self) -> None:
        """Tell every peer our upload capacity again once it moved by a quarter or more from
        what we told them (a measured estimate settles within seconds, then rarely moves)."""
        figure, told = self._capacity_figure(), self._capacity_announced
        if not figure or (told and abs(figure - told) * 4 < told):
            return
        self._capacity_announced = figure
        for session in list(self.sessions.values()):
            await self._send(session, Capacity(figure))

    async def _choke_loop(self) -> None:
        while True:
            now = self.network.now()
            seeding = self.choker.seeding = not self.files
            if self._capacity is not None:
                self.choker.upload_capacity = self._capacity.estimate(now)
                await self._announce_capacity()
            # The choker decides among interested peers and chokes unchoked ones; a choked
            # peer that wants nothing from us plays no part, and leaving it out leaves every
            # decision (and draw) the same. This loop runs on every change of interest:
            # building records for all peers was 8 % of a flash crowd's run time.
            records = [
                PeerRecord(
                    node_id=session.node_id,
                    interested=session.wants_from_us,
                    choked=session.am_choking,
                    download_rate_from_them=session.downloaded.rate(now)
                    if session.wants_from_us
                    else 0.0,
                    upload_rate_to_them=session.uploaded.rate(now)
                    if session.wants_from_us
                    else 0.0,
                    last_unchoked=session.last_unchoked,
                    connected_at=session.connected_at,
                    idle=session.unchoke_unused(now),
                    pieces_held=session.pieces_held_total,
                    silent=session.silent(now),
                    upload_capacity=session.peer_upload_capacity,
                    progress=session.seed_progress() if seeding else None,
                )
                for session in self.sessions.values()
                if session.wants_from_us or not session.am_choking
            ]
            decision = self.choker.update(records, now, self.network.random)
            for node_id in decision.choke:
                session = self.sessions.get(node_id)
                if session is not None:
                    session.am_choking = True
                    session.interest_expected = False
                    session.uploads.clear()
                    await self._send(session, Choke())
            for node_id in decision.unchoke:
                session = self.sessions.get(node_id)
                if session is not None:
                    session.am_choking = False
                    session.last_unchoked = now
                    await self._flush_haves(session)  # what it may ask for, before it asks
                    await self._send(session, Unchoke())
            for session in list(self.sessions.values()):
                if not session.am_choking:  # just unchoked, or windows gone stale
                    for root in list(session.reveals):
                        await self._reveal_more(session, root)
            wake = decision.next_update
            if any(not s.am_choking for s in self.sessions.values()):
                wake = min(wake, now + IDLE_UNCHOKE_SECONDS)  # a slot may go unused
            with trio.move_on_at(max(wake, now + 0.5)):
                await self._choke_wakeup.wait()
            self._choke_wakeup = trio.Event()

    async def _have_loop(self) -> None:
        """Send Haves, one message per file and peer: the first piece after a quiet spell
        at once (each hop of a piece through a crowd waits on it), those verified in the
        HAVE_BATCH_SECONDS after it together at the end of that time. To a peer we choke
        while every slot is taken, at most one message per HAVE_BATCH_CHOKED_SECONDS; its
        Haves go at once when we unchoke it, ahead of the Unchoke."""
        deferred_until = math.inf
        while True:
            with trio.move_on_at(deferred_until):
                await self._haves_due.wait()
            self._haves_due = trio.Event()
            now = self.network.now()
            deferred_until = math.inf
            sessions = list(self.sessions.values())
            free_slots = self.choker.slots - sum(
                not s.am_choking or s.interest_expected for s in sessions
            )
            for session in sessions:
                if not session.pending_haves:
                    continue
                due = session.haves_sent_at + HAVE_BATCH_CHOKED_SECONDS
                choked = session.am_choking and not session.interest_expected
                if choked and free_slots <= 0 and due > now:
                    deferred_until = min(deferred_until, due)
                    continue
                sent = await self._flush_haves(session)
                if sent and free_slots > 0 and self._expect_interest(session):
                    free_slots -= 1
            await trio.sleep(HAVE_BATCH_SECONDS)

    async def _flush_haves(self, session: Session) -> bool:
        """Send the Haves waiting for `session`; True if any went."""
        pending, session.pending_haves = session.pending_haves, {}
        sent = False
        for (root, piece_length), pieces in pending.items():
            if root in self.files:  # what the peer got meanwhile needs no Have
                has = self.picker.peer_has_piece
                pieces = [p for p in pieces if not has(session.node_id, root, p)]
            if pieces:
                await self._send_haves(session, root, piece_length, pieces)
                sent = True
        if sent:
            session.haves_sent_at = self.network.now()
        return sent

    def _expect_interest(self, session: Session) -> bool:
        """A peer told of pieces it lacks will be interested: with a slot free, the choker
        may unchoke it now, so that our Unchoke follows the Have and its Request comes a
        round trip sooner than after its Interested (each hop of a piece through a starting
        crowd waits on that round trip). If it asks nothing, the slot goes back as any
        unused one does. True if it now counts as interested."""
        if not session.am_choking or session.peer_interested or session.interest_expected:
            return False
        session.interest_expected = True
        self._choke_wakeup.set()
        return True

    async def _timeout_loop(self) -> None:
        while True:
            await trio.sleep(TIMEOUT_CHECK_SECONDS)
            now = self.network.now()
            for session in list(self.sessions.values()):
                late = [
                    key
                    for key, (sent, _) in session.in_flight.items()
                    if sent + REQUEST_TIMEOUT_SECONDS <= now
                ]
                for root, first in late:
                    self._release(session, root, first)  # a late answer is still accepted
                if late:
                    await self._fill_requests(session)

    async def _pex_loop(self) -> None:
        """Tell each connection, per container it shares with us, which other members of
        that swarm we are connected to: everyone we know at first (PEX_FIRST_SECONDS after
        connecting), then who joined and left, at most every PEX_PERIOD_SECONDS."""
        while True:
            await trio.sleep(PEX_TICK_SECONDS)
            now = self.network.now()
            due = due_for_pex(self.sessions.values(), now)
            if not due:
                continue
            swarms = self._swarm_members()
            for session in due:
                session.last_pex = now
                for container_id, members in swarms.items():
                    if session.node_id in members:
                        await self._send_pex(session, container_id, members)

    def _swarm_members(self) -> dict[bytes, dict[bytes, PeerAddress]]:
        """Swarms worth gossiping about (what we fetch, what peers fetch from us) → their
        members among our connections (node id → listen address): peers that hold or want
        the container."""
        wants = {s.node_id: set(s.index.peer_wants_held()) for s in self.sessions.values()}
        ids = {cid for cid, d in self.downloads.items() if d.state != "complete"}
        for wanted in wants.values():
            ids.update(wanted)
        swarms: dict[bytes, dict[bytes, PeerAddress]] = {}
        for container_id in ids:
            members: dict[bytes, PeerAddress] = {}
            for session in self.sessions.values():
                in_swarm = container_id in wants[session.node_id] or (
                    session.index.peer_may_hold(container_id)
                )
                address = self._address_of(session) if in_swarm else None
                if address is not None:
                    members[session.node_id] = address
            if len(members) >= 2:  # someone to tell, and someone to tell them about
                swarms[container_id] = members
        return swarms

    async def _send_pex(
        self, session: Session, container_id: bytes, members: dict[bytes, PeerAddress]
    ) -> None:
        told = session.pex_told.setdefault(container_id, set())
        added = tuple(contacts_to_add(members, told, session.node_id, self.network.random))
        dropped = tuple(node_id for node_id in told if node_id not in members)[:MAX_PEX_PEERS]
        if added or dropped:
            told.update(address.node_id for address in added)
            told.difference_update(dropped)
            await self._send(session, Pex(container_id, added, dropped))

    def _address_of(self, session: Session) -> PeerAddress | None:
        hello = session.peer.hello
        if hello is None:
            return None
        try:  # "tcp://host:port" when we dialled, "host:port" when it dialled us
            host = StreamAddress.parse(session.peer.remote_address).host
        except ValueError:
            return None
        for text in hello.listen:
            try:
                address = StreamAddress.parse(text)
            except ValueError:
                continue
            if address.transport == "tcp":
                try:
                    return PeerAddress(session.node_id, host, address.port)
                except (ValueError, DecodeError):
                    return None
        return None

    def _on_pex(self, message: Pex) -> None:
        download = self.downloads.get(message.container_id)
        if download is None or download.state == "complete":
            return
        learned = False
        for address in message.added:
            fresh = address.node_id not in download.pex and address.node_id not in self.sessions
            if fresh and address.node_id != self.node.node_id and len(download.pex) < MAX_PEX_KEPT:
                download.pex[address.node_id] = address
                learned = True
        if learned and self._swarm_size(download) < MAX_PEERS_PER_DOWNLOAD:
            download.rediscover.set()

    def _swarm_size(self, download: Download) -> int:
        """Connections that hold or may hold the container."""
        cid = download.container_id
        return sum(
            cid in s.holdings or s.index.peer_may_hold(cid) or download.metadata_from == s.node_id
            for s in self.sessions.values()
        )

    async def _discover(self, download: Download) -> None:
        """Find and dial peers for a download: given addresses, DHT providers, PEX."""
        while download.state not in ("complete", "failed"):
            await self._fetch_metadata(download)  # if nobody is asked: a holder's turn came
            candidates: list[tuple[StreamAddress, bytes | None]] = [
                (address, None) for address in download.peers_hint
            ]
            dht = self.node.dht
            if dht is not None and dht.engine is not None:
                try:
                    found = await dht.find_providers(download.container_id, want=30)
                    candidates += [
                        (StreamAddress("tcp", p.host, p.port), p.node_id) for p in found.providers
                    ]
                except (RuntimeError, trio.ClosedResourceError):
                    pass
            candidates += [
                (StreamAddress("tcp", a.host, a.port), a.node_id) for a in download.pex.values()
            ]
            now = self.network.now()
            room = MAX_PEERS_PER_DOWNLOAD - self._swarm_size(download)
            dialled = {s.peer.remote_address for s in self.sessions.values()}
            dials: list[tuple[StreamAddress, bytes | None]] = []
            for address, node_id in candidates:
                if str(address) in dialled:
                    continue
                if node_id is not None and (
                    node_id in self.sessions
                    or node_id == self.node.node_id
                    or self._dial_failed.get(node_id, -math.inf) + DIAL_RETRY_SECONDS > now
                ):
                    continue
                if node_id is None or len(dials) < room:  # given addresses are always tried
                    dials.append((address, node_id))
            async with trio.open_nursery() as nursery:
                for address, node_id in dials:
                    nursery.start_soon(self._dial, address, node_id)
            with trio.move_on_after(DISCOVERY_PERIOD_SECONDS):
                await download.rediscover.wait()
            download.rediscover = trio.Event()

    async def _dial(self, address: StreamAddress, node_id: bytes | None) -> None:
        if node_id is not None and self.banned.get(node_id, -math.inf) > self.network.now():
            return
        connected = False
        try:
            with trio.move_on_after(20):
                await self.node.connect(address, expected_node_id=node_id)
                connected = True
        except (OSError, PeerGone, ProtocolError):
            pass
        if not connected and node_id is not None:
            self._dial_failed[node_id] = self.network.now()

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.network.now()
        return {
            "downloads": [d.progress() for d in self.downloads.values()],
            "held_containers": self.local.held_count,
            "peers": [
                {
                    "node_id": s.node_id.hex(),
                    "address": s.peer.remote_address,
                    "choking_them": s.am_choking,
                    "choked_by_them": s.peer_choking,
                    "interested": s.am_interested,
                    "interesting": s.peer_interested,
                    "download_rate": round(s.downloaded.rate(now)),
                    "upload_rate": round(s.uploaded.rate(now)),
                    "bytes_down": s.bytes_down,
                    "bytes_up": s.bytes_up,
                    "in_flight": len(s.in_flight),
                    "serving": [c.hex() for c in s.index.peer_wants_held()[:STATUS_IDS]],
                    "serving_count": len(s.index.peer_wants_held()),
                    "fetching": [c.hex() for c in list(s.holdings)[:STATUS_IDS]],
                    "fetching_count": len(s.holdings),
                }
                for s in self.sessions.values()
            ],
            "pieces_written": self.pieces_written,
            "blocks_rejected": self.blocks_rejected,
            "upload_capacity": None
            if self.choker.upload_capacity is None
            else round(self.choker.upload_capacity),
            "upload_capacity_measured": self._capacity is not None,
            "unchoke_slots": self.choker.slots,
            "spreading": self.choker.spreading,
        }


def _metadata_patience(session: Session) -> float:
    """How long a metadata request to `session` may go unanswered before we look elsewhere."""
    round_trip = session.peer.round_trip_seconds or 0.0
    return max(METADATA_PATIENCE_SECONDS, METADATA_PATIENCE_ROUND_TRIPS * round_trip)


def _piece_of(request: Request) -> tuple[int, int, int] | None:
    """(piece length, piece, block within it) a request is about, in the requester's piece
    length (16 KiB << proof height); None if no such piece length exists."""
    piece_length = BLOCK_SIZE << request.proof_height
    if piece_length > MAX_PIECE_LENGTH:
        return None
    piece, block = divmod(request.block_index, piece_length // BLOCK_SIZE)
    return piece_length, piece, block
