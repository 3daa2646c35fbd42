"""The "ks.swarm" extension: the messages a swarm engine exchanges with one remote node.

One authenticated connection per remote node carries every container both sides share, so
messages name what they are about (a container id or a file root) instead of the connection
doing so, as a BitTorrent connection does for its one torrent. Choking and interest are the
exception: one decision per connection covers all containers, because what is scarce is the
connection's (the node's) upload, not a container's.

An extension message payload is one **type byte** followed by a body. Bodies are canonical
msgpack maps checked against the `wire.schema` records below (one schema drives encoder and
decoder), except `Block`, which is hot: 16 KiB of data per message, tens of thousands per
second. Putting that in msgpack would copy the data into the packer, copy it out again and
re-encode it for the canonical check; its fixed binary layout (`encode_block_header`) lets the
decoder hand back a zero-copy view of the payload instead.

Everything is bounded so a hostile peer cannot make us allocate much: id lists (4,096 per
message), Bloom filters (1 MiB, one frame), bitfields (1 MiB), piece layers and manifests
(sent in chunks of at most 1 MiB), proofs (32 hashes: block indices are < 2^32), PEX (50 added,
50 dropped). Piece lengths are powers of two from 16 KiB to 64 MiB. What the decoder cannot
know (a file's piece count) is left to helpers the engine calls once it knows the length
(`check_bitfield`), and to `wire.merkle.check_piece_layer` for layers.

`decode` raises `DecodeError` (a `ProtocolError`: close the connection) on anything malformed,
and its subclass `UnknownMessage` on a type byte this version does not know. The engine must
**skip** `UnknownMessage` rather than close, so a newer peer may add message types without a
new extension version (as BEP 10 extensions and our core ids 5-31 do). The byte-exact format is
docs/protocol.md, section 5.

This module only encodes and decodes; what to send when is `wire.index` (the index exchange)
and the engine's business. No I/O, no state.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs
import msgpack

from wire.bloom import MAX_HASHES, MAX_TWEAK, BloomFilter
from wire.canonical import pack_canonical, unpack_canonical
from wire.connection import MAX_MESSAGE_BODY
from wire.container import MAX_MANIFEST_BYTES
from wire.errors import DecodeError
from wire.merkle import BLOCK_SIZE, HASH_SIZE, check_piece_length
from wire.schema import (
    Bool,
    Bytes,
    FixedBytes,
    ListOf,
    Nested,
    Record,
    UInt,
    from_wire,
    spec,
    to_wire,
)

EXTENSION_NAME: Final = "ks.swarm"
EXTENSION_VERSION: Final = 1

MAX_PAYLOAD: Final = MAX_MESSAGE_BODY
"""An extension message travels in one frame, so this is the largest payload (type byte
included): 1 MiB + 4 KiB. Every limit below keeps its message under it."""
MAX_IDS_PER_MESSAGE: Final = 4096
"""Container ids per Wants/Holding message (added + removed): ~140 KB, so a big change is
split into several messages instead of one that holds the connection for a second."""
MAX_SUMMARY_BLOOM_BYTES: Final = 1024 * 1024
"""A Summary's Bloom filter fits in one frame: up to ~870,000 held containers at 1 %
false positives; beyond that the filter is capped and its false-positive rate rises."""
MAX_HELD_COUNT: Final = (1 << 32) - 1
MAX_HAVE_FILES: Final = 4096
"""File roots listed in one HaveContainer (have_all + have_none + partial). A container with
more exceptions to `held_default` follows up with per-root messages."""
MAX_HAVE_PIECES: Final = 4096
"""Pieces named in one Have (at most ~20 KB); a longer list goes in several messages."""
MAX_FILE_ALIASES: Final = 1024
"""File aliases one side of a connection may have at once (`FileAlias`): 1,024 roots at most
~150 KB of table per connection; a sender with more files in play rebinds the least used."""
MAX_BITFIELD_BYTES: Final = 1024 * 1024
"""8,388,608 pieces: a file up to 128 GiB at 16 KiB pieces. Larger files are described at a
coarser piece length, which a Bitfield may choose freely."""
MAX_BLOCK_INDEX: Final = (1 << 32) - 1
"""Block indices travel as u32: files up to 2^32 blocks (64 TiB) are transferable."""
MAX_PIECE_INDEX: Final = (1 << 32) - 1
MAX_PROOF_HASHES: Final = 32
"""A tree over at most 2^32 blocks is at most 32 levels high."""
MAX_RUN_BLOCKS: Final = 64
"""Blocks one Request may ask for and one Block may carry (1 MiB, so with its header and a
full proof a Block still fits in one frame): a run of blocks is one message each way instead
of one per 16 KiB, which is most of the per-byte cost in Python."""
MAX_BLOCK_DATA: Final = MAX_RUN_BLOCKS * BLOCK_SIZE
MAX_LAYER_HASHES: Final = 32 * 1024
"""Piece-layer hashes per Layer message (exactly 1 MiB); longer layers come in chunks."""
MANIFEST_CHUNK: Final = 1024 * 1024
"""Manifest bytes per Manifest message; manifests (up to 64 MiB) come in chunks."""
MAX_PEX_PEERS: Final = 50
"""Per PEX message, as BEP 11 recommends: enough to grow a swarm, too few to flood one."""
MAX_CAPACITY: Final = (1 << 40) - 1
"""Bytes per second a Capacity message may state (about 1 TB/s)."""
ID_SIZE: Final = 32

_ID = FixedBytes(ID_SIZE)
_ROOT = FixedBytes(HASH_SIZE)


class UnknownMessage(DecodeError):
    """A type byte this version does not know. Skip the message: a newer peer may send it."""

    def __init__(self, message_type: int) -> None:
        super().__init__(f"unknown ks.swarm message type 0x{message_type:02x}")
        self.message_type = message_type


class RejectReason(enum.IntEnum):
    """Why a Request was refused. Other values (up to 255) may appear from newer peers."""

    UNSPECIFIED = 0
    NOT_HELD = 1
    """We do not hold that block (any more)."""
    CHOKED = 2
    """The requester is choked."""
    OVERLOADED = 3
    """Too many requests queued from this peer; retry later."""
    INVALID = 4
    """Block index beyond the file, or a proof height beyond its tree."""
    UNAVAILABLE = 5
    """We hold it but could not read it (storage error)."""


# -- schema kinds this extension adds ------------------------------------------------------------


@attrs.frozen
class PieceLength:
    """A power of two from 16 KiB to 64 MiB (`wire.merkle.check_piece_length`)."""

    def check(self, value: Any, where: str) -> int:
        if type(value) is not int:
            raise DecodeError(f"{where}: expected an integer, got {type(value).__name__}")
        try:
            return check_piece_length(value)
        except DecodeError as exc:
            raise DecodeError(f"{where}: {exc}") from None

    def to_wire(self, value: Any) -> Any:
        return value


@attrs.frozen
class HashList:
    """Hashes sent as one `bin` of 32·n bytes (as BEP 52 piece layers are): 2 to 5 bytes of
    framing for the whole list instead of 2 per hash. Decodes to a tuple of 32-byte hashes."""

    max_hashes: int

    def check(self, value: Any, where: str) -> tuple[bytes, ...]:
        if type(value) is not bytes:
            raise DecodeError(f"{where}: expected bytes, got {type(value).__name__}")
        if len(value) % HASH_SIZE:
            raise DecodeError(f"{where}: {len(value)} bytes is not a whole number of hashes")
        if len(value) > self.max_hashes * HASH_SIZE:
            raise DecodeError(
                f"{where}: {len(value) // HASH_SIZE} hashes, at most {self.max_hashes} allowed"
            )
        return tuple(value[start : start + HASH_SIZE] for start in range(0, len(value), HASH_SIZE))

    def to_wire(self, value: Any) -> Any:
        return b"".join(value)


@attrs.frozen
class PeerAddress:
    """A peer for PEX: its node id and the TCP address it accepts connections on."""

    node_id: bytes
    host: str
    """Numeric IPv4 or IPv6 address in Python's canonical spelling (`ipaddress`)."""
    port: int

    def to_compact(self) -> bytes:
        """`node id (32) ‖ address (4 or 16) ‖ port (2)`, as the DHT's compact contacts."""
        if len(self.node_id) != ID_SIZE:
            raise ValueError("a node id is 32 bytes")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 1..65535")
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError as exc:
            raise ValueError(f"PEX host {self.host!r} is not a numeric address") from exc
        if str(address) != self.host:
            raise ValueError(f"PEX host {self.host!r} is not spelled canonically ({address})")
        return self.node_id + address.packed + self.port.to_bytes(2, "big")

    @classmethod
    def from_compact(cls, data: bytes, where: str = "peer") -> PeerAddress:
        if len(data) not in (ID_SIZE + 6, ID_SIZE + 18):
            raise DecodeError(f"{where}: a compact peer is 38 or 50 bytes, not {len(data)}")
        port = int.from_bytes(data[-2:], "big")
        if port == 0:
            raise DecodeError(f"{where}: port 0")
        address = ipaddress.ip_address(data[ID_SIZE:-2])
        if address.is_unspecified or address.is_multicast:
            raise DecodeError(f"{where}: {address} cannot be connected to")
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            raise DecodeError(f"{where}: an IPv4-mapped address must be sent as IPv4")
        return cls(data[:ID_SIZE], str(address), port)


@attrs.frozen
class CompactPeer:
    """Schema kind for a `PeerAddress` travelling as its compact bytes."""

    def check(self, value: Any, where: str) -> PeerAddress:
        if type(value) is not bytes:
            raise DecodeError(f"{where}: expected bytes, got {type(value).__name__}")
        return PeerAddress.from_compact(value, where)

    def to_wire(self, value: Any) -> Any:
        if not isinstance(value, PeerAddress):
            raise ValueError(f"expected a PeerAddress, got {type(value).__name__}")
        return value.to_compact()


@attrs.frozen
class Code:
    """A one-byte code; an `IntEnum` member (`RejectReason`) is sent as its value."""

    def check(self, value: Any, where: str) -> int:
        return UInt(maximum=255).check(value, where)

    def to_wire(self, value: Any) -> Any:
        return int(value)


# -- helpers for cross-field rules -----------------------------------------------------------------


def _unique(where: str, *groups: Sequence[Any]) -> None:
    seen: set[Any] = set()
    total = 0
    for group in groups:
        seen.update(group)
        total += len(group)
    if len(seen) != total:
        raise DecodeError(f"{where}: an id appears twice")


class SwarmRecord(Record):
    """Base of the msgpack-bodied messages: `validate` adds the rules a single field's kind
    cannot express (uniqueness across lists, sizes that depend on other fields)."""

    __slots__ = ()

    def validate(self) -> None:
        """Raise DecodeError if the fields break a cross-field rule."""


# -- index exchange (driven by wire.index) ---------------------------------------------------------


@attrs.frozen
class Summary(SwarmRecord):
    """Everything we hold, as a Bloom filter (`wire.bloom`): sent once when a connection opens
    and again only when the increments since the last one grew too many (`wire.index`)."""

    version: int = attrs.field(metadata=spec(UInt()))
    """The sender's index version; strictly greater than the previous Summary's on this
    connection."""
    count: int = attrs.field(metadata=spec(UInt(maximum=MAX_HELD_COUNT)))
    """How many container ids the filter holds."""
    bloom: bytes = attrs.field(metadata=spec(Bytes(MAX_SUMMARY_BLOOM_BYTES, min_length=1)))
    hashes: int = attrs.field(metadata=spec(UInt(maximum=MAX_HASHES, minimum=1)))
    tweak: int = attrs.field(metadata=spec(UInt(maximum=MAX_TWEAK)))

    def filter(self) -> BloomFilter:
        return BloomFilter.from_bytes(self.bloom, self.hashes, self.tweak)


@attrs.frozen
class Wants(SwarmRecord):
    """Containers we are downloading (added) or stopped wanting (removed), as increments."""

    added: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_ID, MAX_IDS_PER_MESSAGE)))
    removed: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_ID, MAX_IDS_PER_MESSAGE)))

    def validate(self) -> None:
        if len(self.added) + len(self.removed) > MAX_IDS_PER_MESSAGE:
            raise DecodeError(f"Wants: more than {MAX_IDS_PER_MESSAGE} ids in one message")
        _unique("Wants", self.added, self.removed)


@attrs.frozen
class Holding(SwarmRecord):
    """Containers we started (added) or stopped (removed) holding since the last Summary."""

    added: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_ID, MAX_IDS_PER_MESSAGE)))
    removed: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_ID, MAX_IDS_PER_MESSAGE)))

    def validate(self) -> None:
        if len(self.added) + len(self.removed) > MAX_IDS_PER_MESSAGE:
            raise DecodeError(f"Holding: more than {MAX_IDS_PER_MESSAGE} ids in one message")
        _unique("Holding", self.added, self.removed)


# -- per file root -------------------------------------------------------------------------------


@attrs.frozen
class HaveAll(SwarmRecord):
    """We hold every piece of the file with this root."""

    root: bytes = attrs.field(metadata=spec(_ROOT))


@attrs.frozen
class HaveNone(SwarmRecord):
    """We hold no piece of the file with this root."""

    root: bytes = attrs.field(metadata=spec(_ROOT))


@attrs.frozen
class Bitfield(SwarmRecord):
    """Which pieces of a file we hold, at a piece length the sender chooses (a coarser one
    than its own loses detail but keeps a huge file's bitfield small). Bit `i` is
    `bits[i // 8] & (0x80 >> (i % 8))`, as in BitTorrent; spare bits are zero
    (`check_bitfield` checks that once the file's length is known)."""

    root: bytes = attrs.field(metadata=spec(_ROOT))
    piece_length: int = attrs.field(metadata=spec(PieceLength()))
    bits: bytes = attrs.field(metadata=spec(Bytes(MAX_BITFIELD_BYTES, min_length=1)))


@attrs.frozen
class Have(SwarmRecord):
    """We now hold these pieces (of `piece_length`) of this file, in ascending order. The
    piece length travels with them so the message means the same thing whatever was said
    about the root before. One message carries the pieces completed within a short while
    (BitTorrent's Have names one): most of a swarm's messages are Haves."""

    root: bytes = attrs.field(metadata=spec(_ROOT))
    piece_length: int = attrs.field(metadata=spec(PieceLength()))
    pieces: tuple[int, ...] = attrs.field(
        metadata=spec(ListOf(UInt(maximum=MAX_PIECE_INDEX), MAX_HAVE_PIECES))
    )

    def validate(self) -> None:
        _check_have_pieces("Have", self.pieces)


@attrs.frozen
class FileAlias(SwarmRecord):
    """From now on, in the sender's `HaveByAlias` messages on this connection, `number` means
    this root counted in this piece length. Numbers are given from 0 up, each the next one or
    one already given (which rebinds it), and stay below MAX_FILE_ALIASES (`wire.aliases`).
    A Have names its file by a 32-byte root; by alias it is ~50 bytes shorter, and Haves are
    most of a swarm's messages."""

    number: int = attrs.field(metadata=spec(UInt(maximum=MAX_FILE_ALIASES - 1)))
    root: bytes = attrs.field(metadata=spec(_ROOT))
    piece_length: int = attrs.field(metadata=spec(PieceLength()))


@attrs.frozen
class HaveByAlias(SwarmRecord):
    """`Have` for the file and piece length the sender's `FileAlias` gave this number."""

    file: int = attrs.field(metadata=spec(UInt(maximum=MAX_FILE_ALIASES - 1)))
    pieces: tuple[int, ...] = attrs.field(
        metadata=spec(ListOf(UInt(maximum=MAX_PIECE_INDEX), MAX_HAVE_PIECES))
    )

    def validate(self) -> None:
        _check_have_pieces("HaveByAlias", self.pieces)


@attrs.frozen
class HaveContainer(SwarmRecord):
    """The answer to a want: what we hold of each file of the container. Every root of the
    container not listed is held completely (`held_default` true) or not at all (false);
    the lists give the exceptions. Per-root messages that follow override it."""

    container_id: bytes = attrs.field(metadata=spec(_ID))
    held_default: bool = attrs.field(metadata=spec(Bool()))
    have_all: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_ROOT, MAX_HAVE_FILES)))
    have_none: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_ROOT, MAX_HAVE_FILES)))
    partial: tuple[Bitfield, ...] = attrs.field(
        metadata=spec(ListOf(Nested(Bitfield), MAX_HAVE_FILES))
    )

    def validate(self) -> None:
        if len(self.have_all) + len(self.have_none) + len(self.partial) > MAX_HAVE_FILES:
            raise DecodeError(f"HaveContainer: more than {MAX_HAVE_FILES} roots listed")
        _unique(
            "HaveContainer", self.have_all, self.have_none, [entry.root for entry in self.partial]
        )


# -- per connection ------------------------------------------------------------------------------


@attrs.frozen
class Choke(SwarmRecord):
    """We will not serve your requests (on any container) until Unchoke."""


@attrs.frozen
class Unchoke(SwarmRecord):
    """We will serve your requests."""


@attrs.frozen
class Interested(SwarmRecord):
    """You hold something we want (on some container)."""


@attrs.frozen
class NotInterested(SwarmRecord):
    """You hold nothing we want."""


@attrs.frozen
class Capacity(SwarmRecord):
    """Bytes per second our uplink carries, as we know it (configured, our upload limit, or
    measured); 0 if we do not know. Peers weigh how far behind we are by it when they give
    their slots by need (`node.choker`). Sent when the connection opens and again when our
    figure changes by a quarter or more."""

    upload: int = attrs.field(metadata=spec(UInt(maximum=MAX_CAPACITY)))


# -- blocks --------------------------------------------------------------------------------------


@attrs.frozen
class Request(SwarmRecord):
    """Send the `count` blocks from `block_index` (16 KiB blocks of the file) with the
    sibling hashes from their subtree up to height `proof_height`: the layer the requester
    trusts (its piece layer, or the root for a proof of the tree's full height; 0 when it
    verifies whole pieces itself). The run is an aligned subtree inside that layer's node:
    `count` a power of two up to `MAX_RUN_BLOCKS` and `2**proof_height`, dividing
    `block_index`. At the file's end it may hold fewer blocks than `count`."""

    root: bytes = attrs.field(metadata=spec(_ROOT))
    block_index: int = attrs.field(metadata=spec(UInt(maximum=MAX_BLOCK_INDEX)))
    proof_height: int = attrs.field(metadata=spec(UInt(maximum=MAX_PROOF_HASHES)))
    count: int = attrs.field(default=1, metadata=spec(UInt(maximum=MAX_RUN_BLOCKS, minimum=1)))

    def validate(self) -> None:
        count = self.count
        height = min(max(self.proof_height, 0), MAX_PROOF_HASHES)
        if count < 1 or count & (count - 1) or count > 1 << height or self.block_index % count:
            raise DecodeError(
                f"Request: {count} blocks from {self.block_index} are not an aligned run "
                f"within height {self.proof_height}"
            )


@attrs.frozen
class Cancel(SwarmRecord):
    """Forget a Request (the block arrived from someone else)."""

    root: bytes = attrs.field(metadata=spec(_ROOT))
    block_index: int = attrs.field(metadata=spec(UInt(maximum=MAX_BLOCK_INDEX)))


@attrs.frozen
class Reject(SwarmRecord):
    """A Request that will not be answered with a Block (`RejectReason`)."""

    root: bytes = attrs.field(metadata=spec(_ROOT))
    block_index: int = attrs.field(metadata=spec(UInt(maximum=MAX_BLOCK_INDEX)))
    reason: int = attrs.field(metadata=spec(Code()))


_BLOCK_HEADER: Final = struct.Struct(">B32sIB")
BLOCK_HEADER_SIZE: Final = _BLOCK_HEADER.size  # 38
BLOCK: Final = 0x33


@attrs.frozen
class Block:
    """One block with its proof. Fixed layout, not msgpack (see the module docstring):
    type 0x33, root (32), block index (u32), proof count (u8), proof hashes (32 each, bottom
    first), then the data to the end of the payload (1..`MAX_BLOCK_DATA` bytes).

    The data is a run of blocks from `block_index`: ceil(len / 16 KiB) of them, forming an
    aligned subtree (the run rounded up to a power of two divides `block_index`); the proof
    starts at that subtree's node. One block is the run of one.

    A decoded Block's `data` is a read-only memoryview sharing the payload's buffer: hash it,
    write it, or `bytes()` it; it keeps the payload alive while it lives.
    """

    root: bytes
    block_index: int
    proof: tuple[bytes, ...]
    data: bytes | memoryview

    def validate(self) -> None:
        if len(self.root) != HASH_SIZE:
            raise DecodeError(f"Block: root of {len(self.root)} bytes")
        if not 0 <= self.block_index <= MAX_BLOCK_INDEX:
            raise DecodeError(f"Block: index {self.block_index} does not fit in 32 bits")
        if len(self.proof) > MAX_PROOF_HASHES:
            raise DecodeError(f"Block: {len(self.proof)} proof hashes, at most 32")
        if any(len(node) != HASH_SIZE for node in self.proof):
            raise DecodeError("Block: proof hashes must be 32 bytes")
        if not 1 <= len(self.data) <= MAX_BLOCK_DATA:
            raise DecodeError(f"Block: {len(self.data)} data bytes, expected 1..{MAX_BLOCK_DATA}")
        _check_run(self.block_index, len(self.data))

    @property
    def block_count(self) -> int:
        return -(-len(self.data) // BLOCK_SIZE)


def _check_run(block_index: int, size: int) -> None:
    span = 1 << (-(-size // BLOCK_SIZE) - 1).bit_length()
    if block_index % span:
        raise DecodeError(f"Block: a run of {size} bytes cannot start at block {block_index}")


def encode_block_header(root: bytes, block_index: int, proof: Sequence[bytes]) -> bytes:
    """Everything of a Block payload before the data, so a sender can write header and data
    (e.g. straight from a file read) without joining them first."""
    return _BLOCK_HEADER.pack(BLOCK, root, block_index, len(proof)) + b"".join(proof)


def _decode_block(view: memoryview) -> Block:
    size = len(view)
    if size < BLOCK_HEADER_SIZE:
        raise DecodeError(
            f"Block: {size} bytes is shorter than its {BLOCK_HEADER_SIZE}-byte header"
        )
    _, root, block_index, proof_count = _BLOCK_HEADER.unpack_from(view)
    if proof_count > MAX_PROOF_HASHES:
        raise DecodeError(f"Block: {proof_count} proof hashes, at most {MAX_PROOF_HASHES}")
    data_start = BLOCK_HEADER_SIZE + proof_count * HASH_SIZE
    if size <= data_start:
        raise DecodeError(
            f"Block: {size} bytes cannot hold {proof_count} proof hashes and at least one data byte"
        )
    if size - data_start > MAX_BLOCK_DATA:
        raise DecodeError(f"Block: {size - data_start} data bytes, at most {MAX_BLOCK_DATA}")
    _check_run(block_index, size - data_start)
    proof = tuple(
        bytes(view[start : start + HASH_SIZE])
        for start in range(BLOCK_HEADER_SIZE, data_start, HASH_SIZE)
    )
    return Block(root, block_index, proof, view[data_start:])


# -- metadata ------------------------------------------------------------------------------------


@attrs.frozen
class GetManifest(SwarmRecord):
    """Send the manifest of this container, from byte `offset` on."""

    container_id: bytes = attrs.field(metadata=spec(_ID))
    offset: int = attrs.field(metadata=spec(UInt(maximum=MAX_MANIFEST_BYTES)))


@attrs.frozen
class Manifest(SwarmRecord):
    """Manifest bytes `[offset, offset + len(data))` of a manifest of `total_length` bytes.
    `data` is exactly `min(MANIFEST_CHUNK, total_length - offset)` bytes, so the requester
    always knows what to ask next. `total_length == 0` (with offset 0 and no data) means the
    sender does not have it. The receiver assembles the chunks and accepts the manifest only
    if its SHA-256 is the container id (then decodes it with `wire.container`)."""

    container_id: bytes = attrs.field(metadata=spec(_ID))
    offset: int = attrs.field(metadata=spec(UInt(maximum=MAX_MANIFEST_BYTES)))
    total_length: int = attrs.field(metadata=spec(UInt(maximum=MAX_MANIFEST_BYTES)))
    data: bytes = attrs.field(metadata=spec(Bytes(MANIFEST_CHUNK)))

    def validate(self) -> None:
        if self.total_length == 0:
            if self.offset or self.data:
                raise DecodeError("Manifest: 'not available' must have offset 0 and no data")
            return
        if self.offset >= self.total_length:
            raise DecodeError(
                f"Manifest: offset {self.offset} is not within {self.total_length} bytes"
            )
        expected = min(MANIFEST_CHUNK, self.total_length - self.offset)
        if len(self.data) != expected:
            raise DecodeError(
                f"Manifest: chunk at {self.offset} has {len(self.data)} bytes, expected {expected}"
            )


@attrs.frozen
class GetLayer(SwarmRecord):
    """Send the piece layer of this file for `piece_length`, from piece `offset` on."""

    root: bytes = attrs.field(metadata=spec(_ROOT))
    piece_length: int = attrs.field(metadata=spec(PieceLength()))
    offset: int = attrs.field(metadata=spec(UInt(maximum=MAX_PIECE_INDEX)))


@attrs.frozen
class Layer(SwarmRecord):
    """Piece-layer hashes `[offset, offset + len(hashes))`: `min(MAX_LAYER_HASHES, pieces -
    offset)` of them, or none if the sender cannot serve that layer. Nothing here can be
    trusted alone: the receiver assembles the whole layer (its piece count follows from the
    file length in the manifest) and accepts it only if `wire.merkle.check_piece_layer`
    hashes it up to the root; a peer whose layer fails is the one to blame."""

    root: bytes = attrs.field(metadata=spec(_ROOT))
    piece_length: int = attrs.field(metadata=spec(PieceLength()))
    offset: int = attrs.field(metadata=spec(UInt(maximum=MAX_PIECE_INDEX)))
    hashes: tuple[bytes, ...] = attrs.field(metadata=spec(HashList(MAX_LAYER_HASHES)))


# -- peer exchange -------------------------------------------------------------------------------


@attrs.frozen
class Pex(SwarmRecord):
    """Peers we know in this container's swarm (BEP 11-like): added since our last Pex to
    you, and dropped (by node id). At most 50 of each per message."""

    container_id: bytes = attrs.field(metadata=spec(_ID))
    added: tuple[PeerAddress, ...] = attrs.field(
        metadata=spec(ListOf(CompactPeer(), MAX_PEX_PEERS))
    )
    dropped: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_ID, MAX_PEX_PEERS)))

    def validate(self) -> None:
        _unique("Pex", [peer.node_id for peer in self.added], self.dropped)


def _check_have_pieces(name: str, pieces: tuple[int, ...]) -> None:
    if not pieces:
        raise DecodeError(f"{name}: no pieces")
    if any(a >= b for a, b in itertools.pairwise(pieces)):
        raise DecodeError(f"{name}: pieces not in strictly ascending order")


# -- the codec -----------------------------------------------------------------------------------

IndexMessage = Summary | Wants | Holding | HaveContainer
SwarmMessage = (
    Summary
    | Wants
    | Holding
    | HaveContainer
    | HaveAll
    | HaveNone
    | Bitfield
    | Have
    | FileAlias
    | HaveByAlias
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | Capacity
    | Request
    | Cancel
    | Reject
    | Block
    | GetManifest
    | Manifest
    | GetLayer
    | Layer
    | Pex
)

MESSAGE_TYPES: Final[dict[type[Any], int]] = {
    Summary: 0x01,
    Wants: 0x02,
    Holding: 0x03,
    HaveContainer: 0x04,
    HaveAll: 0x10,
    HaveNone: 0x11,
    Bitfield: 0x12,
    Have: 0x13,
    FileAlias: 0x14,
    HaveByAlias: 0x15,
    Choke: 0x20,
    Unchoke: 0x21,
    Interested: 0x22,
    NotInterested: 0x23,
    Capacity: 0x24,
    Request: 0x30,
    Cancel: 0x31,
    Reject: 0x32,
    Block: BLOCK,
    GetManifest: 0x40,
    Manifest: 0x41,
    GetLayer: 0x42,
    Layer: 0x43,
    Pex: 0x50,
}
_RECORD_TYPES: Final[dict[int, type[SwarmRecord]]] = {
    code: cls for cls, code in MESSAGE_TYPES.items() if issubclass(cls, SwarmRecord)
}


def encode(message: SwarmMessage) -> bytes:
    """The extension payload for `message`. Raises ValueError if our own code built an
    invalid message or one that does not fit in a frame (split it)."""
    try:
        message.validate()
    except DecodeError as exc:
        raise ValueError(f"refusing to encode an invalid message: {exc}") from exc
    if isinstance(message, Block):
        payload = encode_block_header(message.root, message.block_index, message.proof) + bytes(
            message.data
        )
    elif type(message) is Request:
        payload = _encode_request(message)
    else:
        payload = bytes([MESSAGE_TYPES[type(message)]]) + pack_canonical(to_wire(message))
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(
            f"{type(message).__name__} of {len(payload)} bytes exceeds {MAX_PAYLOAD}: split it"
        )
    return payload


def _encode_request(request: Request) -> bytes:
    """The canonical encoding of a Request without the generic schema walk (one per block
    fetched: the hottest message after Block). Keys in canonical (sorted) order; msgpack
    packs ints in their shortest form and bytes as bin, as `pack_canonical` does; a test
    checks the two agree."""
    root, block, height, count = (
        request.root,
        request.block_index,
        request.proof_height,
        request.count,
    )
    if not (
        type(root) is bytes
        and len(root) == HASH_SIZE
        and type(block) is int
        and 0 <= block <= MAX_BLOCK_INDEX
        and type(height) is int
        and 0 <= height <= MAX_PROOF_HASHES
        and type(count) is int
        and 1 <= count <= MAX_RUN_BLOCKS
    ):
        raise ValueError(f"refusing to encode an invalid record: {request!r}")
    body: bytes = msgpack.packb(
        {"block_index": block, "count": count, "proof_height": height, "root": root},
        use_bin_type=True,
    )
    return _REQUEST_TYPE + body


_REQUEST_TYPE: Final = bytes([MESSAGE_TYPES[Request]])


def decode(payload: bytes | bytearray | memoryview) -> SwarmMessage:
    """Decode one extension payload. Raises `UnknownMessage` for a type byte we do not know
    (skip it) and `DecodeError` for anything malformed (close the connection)."""
    view = memoryview(payload).cast("B").toreadonly()
    if not view:
        raise DecodeError("empty ks.swarm message")
    if len(view) > MAX_PAYLOAD:
        raise DecodeError(f"ks.swarm message of {len(view)} bytes exceeds {MAX_PAYLOAD}")
    kind = view[0]
    if kind == BLOCK:
        return _decode_block(view)
    cls = _RECORD_TYPES.get(kind)
    if cls is None:
        raise UnknownMessage(kind)
    record = from_wire(cls, unpack_canonical(bytes(view[1:]), max_container_items=MAX_HAVE_FILES))
    record.validate()
    return record  # type: ignore[return-value]  # every SwarmRecord subclass is a SwarmMessage


# -- bitfields -----------------------------------------------------------------------------------


def bitfield_length(piece_count: int) -> int:
    return (piece_count + 7) // 8


def check_bitfield(bits: bytes, piece_count: int) -> None:
    """Raise DecodeError unless `bits` is a bitfield for exactly `piece_count` pieces: the
    right length and no spare bit set. Call once the file's length is known."""
    if len(bits) != bitfield_length(piece_count):
        raise DecodeError(
            f"bitfield of {len(bits)} bytes for {piece_count} pieces "
            f"(expected {bitfield_length(piece_count)})"
        )
    spare = len(bits) * 8 - piece_count
    if spare and bits[-1] & ((1 << spare) - 1):
        raise DecodeError("bitfield has bits set beyond the last piece")


def bitfield_has(bits: bytes, piece: int) -> bool:
    return bool(bits[piece >> 3] & (0x80 >> (piece & 7)))


def make_bitfield(pieces: Iterable[int], piece_count: int) -> bytes:
    """The bitfield with exactly `pieces` set."""
    bits = bytearray(bitfield_length(piece_count))
    for piece in pieces:
        if not 0 <= piece < piece_count:
            raise ValueError(f"piece {piece} is outside 0..{piece_count - 1}")
        bits[piece >> 3] |= 0x80 >> (piece & 7)
    return bytes(bits)
