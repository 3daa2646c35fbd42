"""What the DHT stores: provider announcements, signed mutable records and immutable records.

* A `Provider` says "node `node_id` serves key K at `host`:`port`". The store keeps up to a
  bound of them per key; they expire unless re-announced.
* A `MutableRecord` follows BEP 44's mutable items, in our own encoding: a value of at most
  1000 bytes published under an Ed25519 key and an optional salt, ordered by a sequence number
  and signed. Its key is ``SHA-256(public_key || salt)`` (`mutable_key`); the public key has a
  fixed length, so the concatenation is unambiguous.
* An `ImmutableRecord` is a value of at most 1000 bytes whose key is ``SHA-256(value)``: the
  key itself proves the value, so it needs no signature.

**The signature.** A mutable record's signature is Ed25519 (RFC 8032, as libsodium implements
it) by `public_key` over::

    b"kinswarm-dht/v1 mutable:" || canonical_msgpack({"salt": salt, "seq": seq, "v": value})

where the map has exactly those three keys (`salt` and `v` as msgpack bin, `seq` as the
shortest msgpack unsigned integer; keys sorted, as `wire.canonical` always does, so the bytes are
``0x83 "salt" <bin> "seq" <uint> "v" <bin>``). The domain string binds the signature to this use
and carries the version: a signature made for anything else (a handshake proof, a future v2
record) can never verify here. Neither the public key nor the key is signed: the verifying key
*is* the public key, and the key is derived from it and the salt, which is signed.

**Travel.** All three are schema records (`wire.schema`): `to_wire`/`from_wire` encode and
decode them strictly (and `encode_record`/`decode_record` do it to and from canonical bytes), so
an RPC message can carry them with `Nested(...)`. Decoding is structural only: it never checks a
signature. `MutableRecord.verify` does, and `dht.storage.RecordStore` calls it before keeping a
record; a reader that got a record from the network must call it too.

**Hosts** are numeric IP addresses in their one canonical spelling (`NumericHost`): Python's
`ipaddress` form (lower case, RFC 5952 zero compression), never a name (resolving one would be
I/O, and in the simulator there is no resolver), never a scope id, an IPv4-mapped IPv6 address
(spelled differently by different Python versions; announce the IPv4 address), an unspecified
or a multicast address. One spelling per address lets the store recognise a re-announcement;
`canonical_host` turns a datagram's source address into that spelling.

This module does no I/O and keeps no state.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Callable
from typing import Any, Final, TypeVar

import attrs
import nacl.exceptions
import nacl.signing

from wire.canonical import pack_canonical, unpack_canonical
from wire.errors import DecodeError
from wire.schema import Bytes, FixedBytes, Kind, Record, UInt, from_wire, spec, to_wire

KEY_LEN: Final = 32
"""Every DHT key (and node id) is 32 bytes: a SHA-256 digest."""
PUBLIC_KEY_LEN: Final = 32
SIGNATURE_LEN: Final = 64
MAX_VALUE_BYTES: Final = 1000
"""As BEP 44: a record must fit in one datagram with room for the RPC around it."""
MAX_SALT_BYTES: Final = 64
MAX_SEQ: Final = (1 << 64) - 1
MAX_HOST_BYTES: Final = 45
"""Longest textual IPv6 address (with an embedded IPv4 tail); the canonical forms are shorter."""
MUTABLE_SIGNATURE_DOMAIN: Final = b"kinswarm-dht/v1 mutable:"

R = TypeVar("R", bound=Record)


MUTABLE_KEY_DOMAIN: Final = b"kinswarm-dht/v1 mutable key:"


def mutable_key(public_key: bytes, salt: bytes = b"") -> bytes:
    """The key a mutable record lives under: SHA-256(domain || public_key || salt).

    The domain string keeps mutable and immutable keys apart: without it an immutable value
    equal to `public_key || salt` would land on the mutable record's key (BEP 44 has that
    collision)."""
    return hashlib.sha256(MUTABLE_KEY_DOMAIN + public_key + salt).digest()


def immutable_key(value: bytes) -> bytes:
    """The key an immutable record lives under: SHA-256(value)."""
    return hashlib.sha256(value).digest()


def mutable_signed_bytes(salt: bytes, seq: int, value: bytes) -> bytes:
    """The exact bytes a mutable record's signature covers (see the module docstring)."""
    return MUTABLE_SIGNATURE_DOMAIN + pack_canonical({"salt": salt, "seq": seq, "v": value})


@functools.lru_cache(maxsize=4096)
def _host_problem(text: str) -> str | None:
    """Why `text` is not a canonical numeric host, or None. Cached: hosts repeat a lot, parsing
    costs microseconds, and the answer is a pure function of the text."""
    if "%" in text:
        return "scoped addresses are not allowed"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return "not a numeric IP address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return "IPv4-mapped IPv6 addresses are not allowed (use the IPv4 address)"
    if address.is_unspecified or address.is_multicast:
        return "unspecified and multicast addresses are not allowed"
    if str(address) != text:
        return f"not in canonical form (expected {str(address)!r})"
    return None


def canonical_host(host: str) -> str:
    """The canonical spelling of a numeric address as a `Provider` host, for the shell to apply
    to datagram source addresses: drops an IPv6 scope id, turns an IPv4-mapped IPv6 address
    (what a dual-stack socket reports for IPv4 peers) into the IPv4 address, and normalises
    the text. Raises ValueError for anything that can never be a provider's host."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    text = str(address)
    problem = _host_problem(text)
    if problem is not None:
        raise ValueError(f"{host!r}: {problem}")
    return text


@functools.lru_cache(maxsize=4096)
def address_group(host: str) -> str:
    """The unit a per-source bound applies to: an IPv4 address itself, an IPv6 address's /64.

    One IPv6 subscriber usually holds a whole /64 (2^64 addresses), so counting quotas, rate
    limits and bans per IPv6 address would bound nothing. IPv4-mapped IPv6 addresses count as
    the IPv4 address they map. Raises ValueError for a host that is not a numeric address (the
    shell only ever passes datagram source addresses, which are).
    """
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(((int(address) >> 64) << 64, 64)))
    return str(address)


@attrs.frozen
class NumericHost:
    """Schema kind for a host: text holding a canonical numeric IPv4 or IPv6 address."""

    def check(self, value: Any, where: str) -> str:
        if type(value) is not str:
            raise DecodeError(f"{where}: expected text, got {type(value).__name__}")
        if len(value) > MAX_HOST_BYTES:
            raise DecodeError(f"{where}: a host of {len(value)} characters is too long")
        problem = _host_problem(value)
        if problem is not None:
            raise DecodeError(f"{where}: {value!r}: {problem}")
        return value

    def to_wire(self, value: Any) -> Any:
        return value


def _checked(kind: Kind) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator enforcing a field's schema kind at construction, so an invalid record
    cannot exist in memory at all (our code building one is a bug: ValueError)."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            kind.check(value, f"{type(instance).__name__}.{attribute.name}")
        except DecodeError as exc:
            raise ValueError(str(exc)) from exc

    return validate


_KEY_KIND: Final = FixedBytes(KEY_LEN)
_HOST_KIND: Final = NumericHost()
_PORT_KIND: Final = UInt(maximum=65535, minimum=1)
_PUBLIC_KEY_KIND: Final = FixedBytes(PUBLIC_KEY_LEN)
_SALT_KIND: Final = Bytes(max_length=MAX_SALT_BYTES)
_SEQ_KIND: Final = UInt(maximum=MAX_SEQ)
_VALUE_KIND: Final = Bytes(max_length=MAX_VALUE_BYTES)
_SIGNATURE_KIND: Final = FixedBytes(SIGNATURE_LEN)


@attrs.frozen
class Provider(Record):
    """A node that serves a key, and where to reach it."""

    node_id: bytes = attrs.field(metadata=spec(_KEY_KIND), validator=_checked(_KEY_KIND))
    host: str = attrs.field(metadata=spec(_HOST_KIND), validator=_checked(_HOST_KIND))
    port: int = attrs.field(metadata=spec(_PORT_KIND), validator=_checked(_PORT_KIND))


@attrs.frozen
class MutableRecord(Record):
    """A signed, versioned value (BEP 44 mutable item semantics, our encoding).

    Construct with `MutableRecord.sign`; a record from the network must pass `verify` before
    anyone relies on it.
    """

    public_key: bytes = attrs.field(
        metadata=spec(_PUBLIC_KEY_KIND), validator=_checked(_PUBLIC_KEY_KIND)
    )
    salt: bytes = attrs.field(metadata=spec(_SALT_KIND), validator=_checked(_SALT_KIND))
    seq: int = attrs.field(metadata=spec(_SEQ_KIND), validator=_checked(_SEQ_KIND))
    value: bytes = attrs.field(metadata=spec(_VALUE_KIND), validator=_checked(_VALUE_KIND))
    signature: bytes = attrs.field(
        metadata=spec(_SIGNATURE_KIND), validator=_checked(_SIGNATURE_KIND)
    )

    @classmethod
    def sign(
        cls, signing_key: nacl.signing.SigningKey, salt: bytes, seq: int, value: bytes
    ) -> MutableRecord:
        """Sign `value` as version `seq` under (signing_key's public key, salt)."""
        for kind, item, name in (
            (_SALT_KIND, salt, "salt"),
            (_SEQ_KIND, seq, "seq"),
            (_VALUE_KIND, value, "value"),
        ):
            try:
                kind.check(item, f"MutableRecord.{name}")
            except DecodeError as exc:
                raise ValueError(str(exc)) from exc
        signature = signing_key.sign(mutable_signed_bytes(salt, seq, value)).signature
        return cls(
            public_key=bytes(signing_key.verify_key),
            salt=salt,
            seq=seq,
            value=value,
            signature=signature,
        )

    @property
    def key(self) -> bytes:
        return mutable_key(self.public_key, self.salt)

    def signed_bytes(self) -> bytes:
        return mutable_signed_bytes(self.salt, self.seq, self.value)

    def verify(self) -> None:
        """Check the signature. Raises DecodeError (a ProtocolError: the sender's fault)."""
        try:
            nacl.signing.VerifyKey(self.public_key).verify(self.signed_bytes(), self.signature)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise DecodeError("mutable record: the signature does not verify") from exc


@attrs.frozen
class ImmutableRecord(Record):
    """A value named by its own hash."""

    value: bytes = attrs.field(metadata=spec(_VALUE_KIND), validator=_checked(_VALUE_KIND))

    @property
    def key(self) -> bytes:
        return immutable_key(self.value)


DhtRecord = Provider | MutableRecord | ImmutableRecord

_MAX_MAP_ITEMS: Final = 8
"""The largest of these records has five fields; anything bigger is refused while decoding."""


def encode_record(record: DhtRecord) -> bytes:
    """Canonical msgpack bytes of a provider or record."""
    return pack_canonical(to_wire(record))


def decode_record(cls: type[R], data: bytes) -> R:
    """Strictly decode canonical bytes into `cls`. Raises DecodeError (never anything else).

    Structural only: a decoded `MutableRecord` still needs `verify()`.
    """
    return from_wire(cls, unpack_canonical(data, max_container_items=_MAX_MAP_ITEMS))
