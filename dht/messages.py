"""DHT datagrams: requests, responses and errors, strictly decoded.

A datagram is one canonical msgpack map (at most `MAX_DATAGRAM_BYTES`, so it is never
fragmented on an IPv6-minimum path):

    request   {"v": 1, "t": tx, "id": sender id, "q": method, "a": {args}}
    response  {"v": 1, "t": tx, "id": responder id, "r": {result}, "ip": requester as seen}
    error     {"v": 1, "t": tx, "id": responder id, "e": {"code": n, "message": text}}

`t` is 4 bytes chosen by the requester and echoed back. `ip` is the requester's address as
the responder saw it (a compact 6- or 18-byte address), so a node learns its public address.
The argument and result maps of every method are schema records below, checked field by
field; anything else is a `DecodeError`. Contacts travel compact (`dht.contacts`).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final

import attrs

from dht.contacts import IPV4_CONTACT_BYTES, IPV6_CONTACT_BYTES
from dht.records import MutableRecord
from wire.canonical import pack_canonical, unpack_canonical
from wire.errors import DecodeError
from wire.schema import (
    Bytes,
    FixedBytes,
    ListOf,
    Nested,
    Optional,
    Record,
    Text,
    UInt,
    from_wire,
    spec,
    to_wire,
)

VERSION: Final = 1
MAX_DATAGRAM_BYTES: Final = 1280
TX_BYTES: Final = 4
MAX_CONTACTS: Final = 16
MAX_PROVIDERS: Final = 20
MAX_VALUE_BYTES: Final = 1000
MAX_TOKEN_BYTES: Final = 32

_COMPACT = Bytes(max_length=IPV6_CONTACT_BYTES, min_length=IPV4_CONTACT_BYTES)
_KEY = FixedBytes(32)
_TOKEN = Bytes(max_length=MAX_TOKEN_BYTES, min_length=1)


# -- requests -------------------------------------------------------------------------------


@attrs.frozen
class Ping(Record):
    challenge: bytes = attrs.field(metadata=spec(FixedBytes(16)))


_CHALLENGE = Optional(FixedBytes(16))
"""On lookup requests: set when the requester has not verified the responder yet. The
response then carries the proof a ping would, so the lookup query itself verifies the node."""


@attrs.frozen
class FindNode(Record):
    target: bytes = attrs.field(metadata=spec(_KEY))
    challenge: bytes | None = attrs.field(default=None, metadata=spec(_CHALLENGE))


@attrs.frozen
class GetProviders(Record):
    key: bytes = attrs.field(metadata=spec(_KEY))
    challenge: bytes | None = attrs.field(default=None, metadata=spec(_CHALLENGE))


@attrs.frozen
class Announce(Record):
    key: bytes = attrs.field(metadata=spec(_KEY))
    port: int = attrs.field(metadata=spec(UInt(minimum=1, maximum=65535)))
    token: bytes = attrs.field(metadata=spec(_TOKEN))


@attrs.frozen
class Get(Record):
    key: bytes = attrs.field(metadata=spec(_KEY))
    challenge: bytes | None = attrs.field(default=None, metadata=spec(_CHALLENGE))


@attrs.frozen
class Put(Record):
    """Store a record: exactly one of `mutable` and `immutable`."""

    token: bytes = attrs.field(metadata=spec(_TOKEN))
    mutable: MutableRecord | None = attrs.field(
        default=None, metadata=spec(Optional(Nested(MutableRecord)))
    )
    immutable: bytes | None = attrs.field(
        default=None, metadata=spec(Optional(Bytes(max_length=MAX_VALUE_BYTES, min_length=1)))
    )
    cas: int | None = attrs.field(default=None, metadata=spec(Optional(UInt())))


# -- results --------------------------------------------------------------------------------


@attrs.frozen
class Pong(Record):
    """Proof that the responder holds the key its id derives from (see `ping_statement`)."""

    public_key: bytes = attrs.field(metadata=spec(FixedBytes(32)))
    signature: bytes = attrs.field(metadata=spec(FixedBytes(64)))


_PROOF = Optional(Nested(Pong))


@attrs.frozen
class Nodes(Record):
    nodes: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_COMPACT, MAX_CONTACTS)))
    proof: Pong | None = attrs.field(default=None, metadata=spec(_PROOF))


@attrs.frozen
class Providers(Record):
    providers: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_COMPACT, MAX_PROVIDERS)))
    nodes: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_COMPACT, MAX_CONTACTS)))
    token: bytes = attrs.field(metadata=spec(_TOKEN))
    proof: Pong | None = attrs.field(default=None, metadata=spec(_PROOF))


@attrs.frozen
class Value(Record):
    nodes: tuple[bytes, ...] = attrs.field(metadata=spec(ListOf(_COMPACT, MAX_CONTACTS)))
    token: bytes = attrs.field(metadata=spec(_TOKEN))
    mutable: MutableRecord | None = attrs.field(
        default=None, metadata=spec(Optional(Nested(MutableRecord)))
    )
    immutable: bytes | None = attrs.field(
        default=None, metadata=spec(Optional(Bytes(max_length=MAX_VALUE_BYTES, min_length=1)))
    )
    proof: Pong | None = attrs.field(default=None, metadata=spec(_PROOF))


@attrs.frozen
class Stored(Record):
    """Acknowledges an announce or a put."""


@attrs.frozen
class Error(Record):
    code: int = attrs.field(metadata=spec(UInt(maximum=999)))
    message: str = attrs.field(metadata=spec(Text(max_bytes=200)))


METHODS: Final[dict[str, tuple[type[Record], type[Record]]]] = {
    "ping": (Ping, Pong),
    "find_node": (FindNode, Nodes),
    "get_providers": (GetProviders, Providers),
    "announce": (Announce, Stored),
    "get": (Get, Value),
    "put": (Put, Stored),
}
REQUEST_METHOD: Final[dict[type[Record], str]] = {args: name for name, (args, _) in METHODS.items()}

ERROR_GENERIC: Final = 201
ERROR_PROTOCOL: Final = 203
ERROR_BAD_TOKEN: Final = 204
ERROR_REJECTED: Final = 205
"""A put or announce refused by the store (seq too old, cas mismatch, quota): see message."""


def ping_statement(challenge: bytes, requester_id: bytes) -> bytes:
    """What a ping responder signs: domain, the requester's challenge and id (so a proof is
    good for one requester and one challenge only)."""
    return b"kinswarm-dht/v1 ping:" + challenge + requester_id


# -- datagrams ------------------------------------------------------------------------------


@attrs.frozen
class Datagram:
    """A decoded datagram before its body is checked against the method's schema."""

    tx: bytes
    sender: bytes
    kind: str
    """"q" (request), "r" (response) or "e" (error)."""
    method: str | None
    body: dict[str, Any]
    seen_as: tuple[str, int] | None = None


def encode_request(tx: bytes, sender: bytes, args: Record) -> bytes:
    return _encode(
        {
            "v": VERSION,
            "t": tx,
            "id": sender,
            "q": REQUEST_METHOD[type(args)],
            "a": to_wire(args),
        }
    )


def encode_response(
    tx: bytes, sender: bytes, result: Record, requester: tuple[str, int] | None
) -> bytes:
    message: dict[str, Any] = {"v": VERSION, "t": tx, "id": sender}
    if isinstance(result, Error):
        message["e"] = to_wire(result)
    else:
        message["r"] = to_wire(result)
        if requester is not None:
            message["ip"] = _pack_address(requester)
    return _encode(message)


def _encode(message: dict[str, Any]) -> bytes:
    data = pack_canonical(message)
    if len(data) > MAX_DATAGRAM_BYTES:
        raise ValueError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM_BYTES}")
    return data


def decode_datagram(data: bytes) -> Datagram:
    """Decode the envelope. Raises DecodeError for anything malformed."""
    if len(data) > MAX_DATAGRAM_BYTES:
        raise DecodeError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM_BYTES}")
    value = unpack_canonical(data, max_container_items=64)
    if type(value) is not dict:
        raise DecodeError("a datagram is a map")
    if value.get("v") != VERSION:
        raise DecodeError(f"unsupported DHT version {value.get('v')!r}")
    tx, sender = value.get("t"), value.get("id")
    if type(tx) is not bytes or len(tx) != TX_BYTES:
        raise DecodeError("bad transaction id")
    if type(sender) is not bytes or len(sender) != 32:
        raise DecodeError("bad sender id")
    kinds = [kind for kind in ("q", "r", "e") if kind in value]
    if len(kinds) != 1:
        raise DecodeError("a datagram is exactly one of request, response, error")
    kind = kinds[0]
    allowed = (
        {"v", "t", "id", kind}
        | ({"a"} if kind == "q" else set())
        | ({"ip"} if kind == "r" else set())
    )
    extra = sorted(set(value) - allowed)
    if extra:
        raise DecodeError(f"unknown datagram field(s) {extra}")
    if kind == "q":
        method = value["q"]
        if type(method) is not str or method not in METHODS:
            raise DecodeError(f"unknown method {method!r}")
        body = value.get("a")
        if type(body) is not dict:
            raise DecodeError("request arguments must be a map")
        return Datagram(tx, sender, kind, method, body)
    body = value[kind]
    if type(body) is not dict:
        raise DecodeError("a response body must be a map")
    seen_as = _unpack_address(value["ip"]) if "ip" in value else None
    return Datagram(tx, sender, kind, None, body, seen_as)


def decode_args(datagram: Datagram) -> Record:
    assert datagram.method is not None
    args = from_wire(METHODS[datagram.method][0], datagram.body, where=datagram.method)
    _check_put(args)
    return args


def decode_result(datagram: Datagram, method: str) -> Record:
    """The checked result (or Error) of a response to a `method` request."""
    if datagram.kind == "e":
        return from_wire(Error, datagram.body)
    result = from_wire(METHODS[method][1], datagram.body, where=f"{method} result")
    _check_put(result)
    return result


def _check_put(record: Record) -> None:
    if isinstance(record, Put) and (record.mutable is None) == (record.immutable is None):
        raise DecodeError("a put carries exactly one of a mutable and an immutable record")
    if isinstance(record, Value) and record.mutable is not None and record.immutable is not None:
        raise DecodeError("a value is mutable or immutable, not both")


def _pack_address(address: tuple[str, int]) -> bytes:
    return ipaddress.ip_address(address[0]).packed + address[1].to_bytes(2, "big")


def _unpack_address(data: Any) -> tuple[str, int]:
    if type(data) is not bytes or len(data) not in (6, 18):
        raise DecodeError("a compact address is 6 or 18 bytes")
    return (str(ipaddress.ip_address(data[:-2])), int.from_bytes(data[-2:], "big"))
