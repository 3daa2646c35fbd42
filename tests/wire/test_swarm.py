"""ks.swarm messages: every type round-trips, the Block layout is byte-exact, every bound is
enforced, and arbitrary or mutated bytes only ever raise ProtocolError."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.canonical import pack_canonical
from wire.errors import DecodeError, ProtocolError
from wire.merkle import BLOCK_SIZE, MerkleTree, check_piece_layer, piece_height, verify_block
from wire.schema import to_wire
from wire.swarm import (
    BLOCK_HEADER_SIZE,
    MANIFEST_CHUNK,
    MAX_BLOCK_DATA,
    MAX_FILE_ALIASES,
    MAX_HAVE_FILES,
    MAX_HAVE_PIECES,
    MAX_IDS_PER_MESSAGE,
    MAX_LAYER_HASHES,
    MAX_PAYLOAD,
    MAX_PEX_PEERS,
    MAX_RUN_BLOCKS,
    MESSAGE_TYPES,
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
    Manifest,
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
    bitfield_has,
    check_bitfield,
    decode,
    encode,
    encode_block_header,
    make_bitfield,
)

from .strategies import records

ids = st.binary(min_size=32, max_size=32)
piece_lengths = st.integers(14, 26).map(lambda exponent: 1 << exponent)
u32 = st.integers(0, 2**32 - 1)


@st.composite
def _split_ids(draw: st.DrawFn, cls: Any) -> Any:
    items = draw(st.lists(ids, unique=True, max_size=10))
    cut = draw(st.integers(0, len(items)))
    return cls(added=tuple(items[:cut]), removed=tuple(items[cut:]))


bitfields = st.builds(
    Bitfield, root=ids, piece_length=piece_lengths, bits=st.binary(min_size=1, max_size=40)
)


@st.composite
def _have_containers(draw: st.DrawFn) -> HaveContainer:
    roots = draw(st.lists(ids, unique=True, max_size=9))
    a, b = sorted(draw(st.tuples(st.integers(0, len(roots)), st.integers(0, len(roots)))))
    partial = tuple(
        Bitfield(root, draw(piece_lengths), draw(st.binary(min_size=1, max_size=8)))
        for root in roots[b:]
    )
    return HaveContainer(
        draw(ids), draw(st.booleans()), tuple(roots[:a]), tuple(roots[a:b]), partial
    )


@st.composite
def _manifests(draw: st.DrawFn) -> Manifest:
    total = draw(st.integers(0, 3 * MANIFEST_CHUNK))
    if total == 0:
        return Manifest(draw(ids), 0, 0, b"")
    offset = draw(st.integers(0, total - 1))
    size = min(MANIFEST_CHUNK, total - offset)
    return Manifest(draw(ids), offset, total, bytes([draw(st.integers(0, 255))]) * size)


def _usable(address: Any) -> bool:
    return not (
        address.is_unspecified
        or address.is_multicast
        or (address.version == 6 and address.ipv4_mapped is not None)
    )


peer_addresses = st.builds(
    PeerAddress,
    node_id=ids,
    host=st.ip_addresses().filter(_usable).map(str),
    port=st.integers(1, 65535),
)


@st.composite
def _pex(draw: st.DrawFn) -> Pex:
    added = draw(st.lists(peer_addresses, max_size=6, unique_by=lambda peer: peer.node_id))
    taken = {peer.node_id for peer in added}
    dropped = draw(st.lists(ids.filter(lambda i: i not in taken), unique=True, max_size=6))
    return Pex(draw(ids), tuple(added), tuple(dropped))


@st.composite
def _blocks(draw: st.DrawFn) -> Block:
    """A run of 1..64 blocks (the last may be short) at an index its span divides."""
    size = draw(st.integers(1, MAX_BLOCK_DATA))
    span = 1 << (-(-size // BLOCK_SIZE) - 1).bit_length()
    index = draw(st.integers(0, (2**32 - 1) // span)) * span
    proof = tuple(draw(st.lists(ids, max_size=32)))
    return Block(draw(ids), index, proof, draw(st.binary(min_size=size, max_size=size)))


@st.composite
def _requests(draw: st.DrawFn) -> Request:
    """A run of 2**k blocks inside the layer it is checked against, at an aligned index."""
    height = draw(st.integers(0, 32))
    count = 1 << draw(st.integers(0, min(height, MAX_RUN_BLOCKS.bit_length() - 1)))
    index = draw(st.integers(0, (2**32 - 1) // count)) * count
    return Request(draw(ids), index, height, count)


blocks = _blocks()

STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    Summary: records(Summary),
    Wants: _split_ids(Wants),
    Holding: _split_ids(Holding),
    HaveContainer: _have_containers(),
    HaveAll: records(HaveAll),
    HaveNone: records(HaveNone),
    Bitfield: bitfields,
    Have: st.builds(
        Have,
        root=ids,
        piece_length=piece_lengths,
        pieces=st.lists(u32, min_size=1, max_size=50, unique=True).map(lambda p: tuple(sorted(p))),
    ),
    FileAlias: st.builds(
        FileAlias,
        number=st.integers(0, MAX_FILE_ALIASES - 1),
        root=ids,
        piece_length=piece_lengths,
    ),
    HaveByAlias: st.builds(
        HaveByAlias,
        file=st.integers(0, MAX_FILE_ALIASES - 1),
        pieces=st.lists(u32, min_size=1, max_size=50, unique=True).map(lambda p: tuple(sorted(p))),
    ),
    Choke: st.just(Choke()),
    Unchoke: st.just(Unchoke()),
    Interested: st.just(Interested()),
    NotInterested: st.just(NotInterested()),
    Capacity: records(Capacity),
    Request: _requests(),
    Cancel: records(Cancel),
    Reject: st.builds(Reject, root=ids, block_index=u32, reason=st.integers(0, 255)),
    Block: blocks,
    GetManifest: records(GetManifest),
    Manifest: _manifests(),
    GetLayer: st.builds(GetLayer, root=ids, piece_length=piece_lengths, offset=u32),
    Layer: st.builds(
        Layer,
        root=ids,
        piece_length=piece_lengths,
        offset=u32,
        hashes=st.lists(ids, max_size=20).map(tuple),
    ),
    Pex: _pex(),
}
messages = st.one_of(*STRATEGIES.values())


def test_every_message_type_has_a_strategy_and_a_unique_type_byte() -> None:
    assert set(STRATEGIES) == set(MESSAGE_TYPES)
    assert len(set(MESSAGE_TYPES.values())) == len(MESSAGE_TYPES)
    assert 0 not in MESSAGE_TYPES.values()


@settings(max_examples=300)
@given(messages)
def test_every_message_round_trips(message: Any) -> None:
    payload = encode(message)
    assert payload[0] == MESSAGE_TYPES[type(message)]
    assert len(payload) <= MAX_PAYLOAD
    assert decode(payload) == message
    assert encode(decode(payload)) == payload


@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_protocol_errors(payload: bytes) -> None:
    try:
        decode(payload)
    except ProtocolError:
        pass


@given(st.sampled_from(sorted(MESSAGE_TYPES.values())), st.binary(max_size=200))
def test_arbitrary_bodies_only_raise_protocol_errors(kind: int, body: bytes) -> None:
    try:
        decode(bytes([kind]) + body)
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(messages, st.data())
def test_mutated_messages_only_raise_protocol_errors(message: Any, data: st.DataObject) -> None:
    payload = bytearray(encode(message))
    how = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if how == "flip":
        index = data.draw(st.integers(0, min(len(payload), 4000) - 1))
        payload[index] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del payload[data.draw(st.integers(0, len(payload) - 1)) :]
    else:
        payload += data.draw(st.binary(min_size=1, max_size=40))
    try:
        decode(bytes(payload))
    except ProtocolError:
        pass


# -- byte-exact layouts --------------------------------------------------------------------------


def test_block_layout_byte_for_byte() -> None:
    root = bytes(range(32))
    proof = (b"\xaa" * 32, b"\xbb" * 32)
    payload = encode(Block(root, 0x01020304, proof, b"hello"))
    assert payload == (
        b"\x33" + root + b"\x01\x02\x03\x04" + b"\x02" + b"\xaa" * 32 + b"\xbb" * 32 + b"hello"
    )
    assert BLOCK_HEADER_SIZE == 38
    assert encode_block_header(root, 0x01020304, proof) + b"hello" == payload


def test_decoded_block_data_is_a_view_of_the_payload() -> None:
    payload = encode(Block(bytes(32), 7, (), b"x" * BLOCK_SIZE))
    block = decode(payload)
    assert isinstance(block, Block)
    assert isinstance(block.data, memoryview) and block.data.readonly
    assert block.data.obj is payload  # no copy of the 16 KiB
    assert hashlib.sha256(block.data).digest() == hashlib.sha256(b"x" * BLOCK_SIZE).digest()


def test_msgpack_body_layout_byte_for_byte() -> None:
    # The example in docs/protocol.md 5.2: keys sorted, shortest integers, bin for bytes.
    root = bytes(32)
    assert encode(Have(root, 16384, (5, 300))) == (
        b"\x13\x83"
        + b"\xacpiece_length\xcd\x40\x00"
        + b"\xa6pieces\x92\x05\xcd\x01\x2c"
        + b"\xa4root\xc4\x20"
        + root
    )
    assert encode(Choke()) == b"\x20\x80"


def test_a_have_by_alias_is_a_quarter_of_a_have() -> None:
    # The example in docs/protocol.md 5.5: the same pieces as above, the file named by alias 3.
    assert encode(HaveByAlias(3, (5, 300))) == (
        b"\x15\x82" + b"\xa4file\x03" + b"\xa6pieces\x92\x05\xcd\x01\x2c"
    )
    assert len(encode(HaveByAlias(3, (5, 300)))) == 20
    assert len(encode(Have(bytes(32), 16384, (5, 300)))) == 69


def test_a_block_verifies_against_the_piece_layer_with_the_requested_proof() -> None:
    data = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(37 * 512))
    tree = MerkleTree.from_data(data)
    piece_length = 4 * BLOCK_SIZE
    layer = tree.piece_layer(piece_length)
    received = decode(encode(Layer(tree.root, piece_length, 0, tuple(layer))))
    assert isinstance(received, Layer)
    check_piece_layer(received.hashes, tree.root, len(data), piece_length)  # the receiver's check
    with pytest.raises(DecodeError):
        check_piece_layer(received.hashes[::-1], tree.root, len(data), piece_length)
    height = piece_height(piece_length)
    request = decode(encode(Request(tree.root, 13, height)))
    assert isinstance(request, Request)
    chunk = data[13 * BLOCK_SIZE : 14 * BLOCK_SIZE]
    block = decode(encode(Block(tree.root, 13, tuple(tree.proof(13, height)), chunk)))
    assert isinstance(block, Block) and len(block.proof) == 2
    assert verify_block(block.data, block.block_index, block.proof, layer[13 // 4])
    assert not verify_block(block.data, 12, block.proof, layer[13 // 4])


# -- bounds --------------------------------------------------------------------------------------

R = bytes(32)


def _raw(kind: type[Any], body: Any) -> bytes:
    return bytes([MESSAGE_TYPES[kind]]) + pack_canonical(body)


def _id(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(4, "big", signed=True)).digest()


def _peer(host: bytes, port: int = 7420) -> bytes:
    return _id(1) + host + port.to_bytes(2, "big")


BAD_PAYLOADS = {
    "empty": b"",
    "oversize": b"\x30" + bytes(MAX_PAYLOAD),
    "non-canonical key order": b"\x31\x82\xa4root\xc4\x20" + R + b"\xabblock_index\x00",
    "unknown field": _raw(Cancel, {"root": R, "block_index": 1, "extra": 1}),
    "missing field": _raw(Cancel, {"root": R}),
    "body not a map": _raw(Choke, [1]),
    "trailing bytes": encode(Choke()) + b"\x00",
    "root too short": _raw(HaveAll, {"root": R[:31]}),
    "too many wants": _raw(
        Wants,
        {"added": [_id(i) for i in range(2049)], "removed": [_id(-i - 1) for i in range(2048)]},
    ),
    "duplicate want": _raw(Wants, {"added": [R, R], "removed": []}),
    "wanted and unwanted": _raw(Holding, {"added": [R], "removed": [R]}),
    "piece length not a power of two": _raw(
        Have, {"root": R, "piece_length": 3 << 14, "pieces": [0]}
    ),
    "piece length too small": _raw(Have, {"root": R, "piece_length": 8192, "pieces": [0]}),
    "piece length too large": _raw(Have, {"root": R, "piece_length": 1 << 27, "pieces": [0]}),
    "piece index of 33 bits": _raw(Have, {"root": R, "piece_length": 1 << 14, "pieces": [2**32]}),
    "no pieces": _raw(Have, {"root": R, "piece_length": 1 << 14, "pieces": []}),
    "pieces out of order": _raw(Have, {"root": R, "piece_length": 1 << 14, "pieces": [2, 1]}),
    "a piece twice": _raw(Have, {"root": R, "piece_length": 1 << 14, "pieces": [1, 1]}),
    "too many pieces": _raw(
        Have, {"root": R, "piece_length": 1 << 14, "pieces": list(range(MAX_HAVE_PIECES + 1))}
    ),
    "empty bitfield": _raw(Bitfield, {"root": R, "piece_length": 1 << 14, "bits": b""}),
    "oversize bitfield": _raw(
        Bitfield, {"root": R, "piece_length": 1 << 14, "bits": bytes(1024 * 1024 + 1)}
    ),
    "block index of 33 bits": _raw(
        Request, {"root": R, "block_index": 2**32, "proof_height": 0, "count": 1}
    ),
    "proof height 33": _raw(Request, {"root": R, "block_index": 0, "proof_height": 33, "count": 1}),
    "run of 0 blocks": _raw(Request, {"root": R, "block_index": 0, "proof_height": 4, "count": 0}),
    "run of 128 blocks": _raw(
        Request, {"root": R, "block_index": 0, "proof_height": 7, "count": 128}
    ),
    "run of 3 blocks": _raw(Request, {"root": R, "block_index": 0, "proof_height": 4, "count": 3}),
    "misaligned run": _raw(Request, {"root": R, "block_index": 2, "proof_height": 4, "count": 4}),
    "run above its piece": _raw(
        Request, {"root": R, "block_index": 0, "proof_height": 1, "count": 4}
    ),
    "request without a count": _raw(Request, {"root": R, "block_index": 0, "proof_height": 0}),
    "reject reason 256": _raw(Reject, {"root": R, "block_index": 0, "reason": 256}),
    "summary without hashes": _raw(
        Summary, {"version": 1, "count": 1, "bloom": b"\0", "hashes": 0, "tweak": 0}
    ),
    "summary with 17 hashes": _raw(
        Summary, {"version": 1, "count": 1, "bloom": b"\0", "hashes": 17, "tweak": 0}
    ),
    "summary with an empty filter": _raw(
        Summary, {"version": 1, "count": 1, "bloom": b"", "hashes": 1, "tweak": 0}
    ),
    "summary with an oversize filter": _raw(
        Summary,
        {"version": 1, "count": 1, "bloom": bytes(1024 * 1024 + 1), "hashes": 1, "tweak": 0},
    ),
    "summary tweak of 33 bits": _raw(
        Summary, {"version": 1, "count": 1, "bloom": b"\0", "hashes": 1, "tweak": 2**32}
    ),
    "root listed twice in HaveContainer": _raw(
        HaveContainer,
        {
            "container_id": R,
            "held_default": False,
            "have_all": [_id(1)],
            "have_none": [],
            "partial": [{"root": _id(1), "piece_length": 1 << 14, "bits": b"\x80"}],
        },
    ),
    "too many roots in HaveContainer": _raw(
        HaveContainer,
        {
            "container_id": R,
            "held_default": True,
            "have_all": [_id(i) for i in range(MAX_HAVE_FILES)],
            "have_none": [_id(-1)],
            "partial": [],
        },
    ),
    "held_default not a boolean": _raw(
        HaveContainer,
        {"container_id": R, "held_default": 1, "have_all": [], "have_none": [], "partial": []},
    ),
    "manifest chunk too short": _raw(
        Manifest, {"container_id": R, "offset": 0, "total_length": 10, "data": b"123456789"}
    ),
    "manifest chunk past the end": _raw(
        Manifest, {"container_id": R, "offset": 10, "total_length": 10, "data": b""}
    ),
    "manifest 'not available' with data": _raw(
        Manifest, {"container_id": R, "offset": 0, "total_length": 0, "data": b"x"}
    ),
    "manifest too long": _raw(
        Manifest, {"container_id": R, "offset": 0, "total_length": 2**26 + 1, "data": b"x"}
    ),
    "layer with a partial hash": _raw(
        Layer, {"root": R, "piece_length": 1 << 15, "offset": 0, "hashes": bytes(33)}
    ),
    "layer with too many hashes": _raw(
        Layer,
        {
            "root": R,
            "piece_length": 1 << 15,
            "offset": 0,
            "hashes": bytes(32 * MAX_LAYER_HASHES + 32),
        },
    ),
    "too many pex peers": _raw(
        Pex,
        {
            "container_id": R,
            "added": [_id(i) + b"\x0a\0\0\x01\x1c\xfc" for i in range(MAX_PEX_PEERS + 1)],
            "dropped": [],
        },
    ),
    "too many pex drops": _raw(
        Pex, {"container_id": R, "added": [], "dropped": [_id(i) for i in range(51)]}
    ),
    "pex port 0": _raw(
        Pex, {"container_id": R, "added": [_peer(b"\x0a\0\0\x01", 0)], "dropped": []}
    ),
    "pex unspecified address": _raw(
        Pex, {"container_id": R, "added": [_peer(bytes(4))], "dropped": []}
    ),
    "pex multicast address": _raw(
        Pex, {"container_id": R, "added": [_peer(b"\xe0\0\0\x01")], "dropped": []}
    ),
    "pex IPv4-mapped address": _raw(
        Pex,
        {"container_id": R, "added": [_peer(bytes(10) + b"\xff\xff\x0a\0\0\x01")], "dropped": []},
    ),
    "pex address of 5 bytes": _raw(
        Pex, {"container_id": R, "added": [_peer(bytes(5))], "dropped": []}
    ),
    "pex peer added and dropped": _raw(
        Pex, {"container_id": R, "added": [_peer(b"\x0a\0\0\x01")], "dropped": [_id(1)]}
    ),
    "block header cut": encode(Block(R, 1, (), b"x"))[:37],
    "block without data": encode_block_header(R, 1, (R,)),
    "block with a cut proof": encode_block_header(R, 1, (R, R))[:-1],
    "block with 33 proof hashes": encode_block_header(R, 1, (R,) * 33) + b"x",
    "block with 1 MiB + 1": encode_block_header(R, 0, ()) + bytes(MAX_BLOCK_DATA + 1),
    "misaligned run of blocks": encode_block_header(R, 1, ()) + bytes(BLOCK_SIZE + 1),
    "run of 3 blocks at 4 + 2": encode_block_header(R, 6, ()) + bytes(3 * BLOCK_SIZE),
}


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_bounds_are_enforced_with_a_reason(payload: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload)
    assert not isinstance(caught.value, UnknownMessage)
    assert str(caught.value)


def test_at_the_bounds_messages_are_accepted() -> None:
    half = MAX_IDS_PER_MESSAGE // 2
    wants = Wants(tuple(_id(i) for i in range(half)), tuple(_id(-i - 1) for i in range(half)))
    assert decode(encode(wants)) == wants
    layer = Layer(R, 1 << 26, 2**32 - 1, (R,) * MAX_LAYER_HASHES)
    assert len(encode(layer)) <= MAX_PAYLOAD and decode(encode(layer)) == layer
    chunk = Manifest(R, 0, 2**26, bytes(MANIFEST_CHUNK))
    assert decode(encode(chunk)) == chunk
    block = Block(R, 2**32 - 1, (R,) * 32, bytes(BLOCK_SIZE))
    assert decode(encode(block)) == block
    run = Block(R, 2**32 - MAX_RUN_BLOCKS, (R,) * 32, bytes(MAX_BLOCK_DATA))
    assert len(encode(run)) <= MAX_PAYLOAD and decode(encode(run)) == run
    request = Request(R, 2**32 - MAX_RUN_BLOCKS, 32, MAX_RUN_BLOCKS)
    assert decode(encode(request)) == request
    summary = Summary(2**64 - 1, 2**32 - 1, bytes(1024 * 1024), 16, 2**32 - 1)
    assert decode(encode(summary)) == summary


@pytest.mark.parametrize("kind", [0x00, 0x05, 0x34, 0xFF])
def test_unknown_types_are_reported_for_skipping(kind: int) -> None:
    with pytest.raises(UnknownMessage) as caught:
        decode(bytes([kind]) + b"\x80")
    assert caught.value.message_type == kind
    assert isinstance(caught.value, DecodeError)


@pytest.mark.parametrize(
    "message",
    [
        Block(R, 0, (), b""),
        Block(R, 2**32, (), b"x"),
        Block(R, 0, (R,) * 33, b"x"),
        Block(R, 2, (), bytes(3 * BLOCK_SIZE)),
        Request(R, 4, 4, 3),
        Request(R, 4, 1, 4),
        Block(R[:5], 0, (), b"x"),
        Wants((R, R), ()),
        Have(R, 1000, (0,)),
        Have(R, 1 << 14, ()),
        Have(R, 1 << 14, (3, 3)),
        HaveByAlias(0, ()),
        HaveByAlias(0, (4, 2)),
        HaveByAlias(MAX_FILE_ALIASES, (1,)),
        FileAlias(MAX_FILE_ALIASES, R, 1 << 14),
        FileAlias(0, R, 1000),
        Manifest(R, 0, 5, b"1234"),
        Pex(R, (PeerAddress(R, "2001:DB8::1", 1),), ()),
        Pex(R, (PeerAddress(R, "example.org", 1),), ()),
        Pex(R, (PeerAddress(R, "10.0.0.1", 0),), ()),
        HaveContainer(
            R, False, (), (), tuple(Bitfield(_id(i), 1 << 14, bytes(300_000)) for i in range(4))
        ),
    ],
)
def test_encoding_an_invalid_or_oversize_message_is_our_bug(message: Any) -> None:
    with pytest.raises(ValueError):
        encode(message)


def test_reject_reasons_are_open_ended() -> None:
    assert decode(encode(Reject(R, 1, RejectReason.CHOKED))) == Reject(R, 1, 2)
    assert decode(encode(Reject(R, 1, 200))) == Reject(R, 1, 200)


def test_pex_addresses_are_compact() -> None:
    pex = Pex(
        R, (PeerAddress(_id(1), "192.0.2.7", 7420), PeerAddress(_id(2), "2001:db8::1", 1)), ()
    )
    decoded = decode(encode(pex))
    assert decoded == pex
    assert PeerAddress(_id(1), "192.0.2.7", 7420).to_compact() == _id(1) + bytes([192, 0, 2, 7]) + (
        7420
    ).to_bytes(2, "big")


def test_bitfield_helpers() -> None:
    bits = make_bitfield([0, 9], 10)
    assert bits == b"\x80\x40"
    assert bitfield_has(bits, 0) and bitfield_has(bits, 9) and not bitfield_has(bits, 1)
    check_bitfield(bits, 10)
    with pytest.raises(DecodeError, match="beyond the last piece"):
        check_bitfield(b"\x80\x60", 10)
    with pytest.raises(DecodeError, match="for 17 pieces"):
        check_bitfield(bits, 17)
    with pytest.raises(ValueError):
        make_bitfield([10], 10)


@given(
    root=st.binary(min_size=31, max_size=33),
    block_index=st.integers(min_value=-1, max_value=2**40),
    proof_height=st.integers(min_value=-1, max_value=40),
    count=st.sampled_from([-1, 0, 1, 2, 3, 4, 8, 16, 32]),
)
def test_the_request_fast_path_encodes_exactly_as_the_schema(
    root: bytes, block_index: int, proof_height: int, count: int
) -> None:
    request = Request(root, block_index, proof_height, count)
    try:
        expected = bytes([MESSAGE_TYPES[Request]]) + pack_canonical(to_wire(request))
        request.validate()
    except (ValueError, DecodeError):
        with pytest.raises(ValueError):
            encode(request)
        return
    assert encode(request) == expected
    assert decode(expected) == request
