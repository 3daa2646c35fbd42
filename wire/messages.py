"""The core messages every kinswarm connection speaks after the handshake.

On the encrypted channel each message is one frame whose plaintext is a one-byte message id
followed by the body. Ids below `FIRST_EXTENSION_ID` are core messages, fixed for all
connections, with canonical-msgpack bodies described by the records below. Ids from
`FIRST_EXTENSION_ID` up are assigned per connection by the receiver during extension
negotiation (see `wire.extensions`); their bodies belong to the extension.
"""

from __future__ import annotations

from typing import Final

import attrs

from wire.canonical import pack_canonical, unpack_canonical
from wire.errors import DecodeError
from wire.schema import ListOf, MapOf, Nested, Record, Text, UInt, from_wire, spec, to_wire

PROTOCOL_VERSION: Final = 1
FIRST_EXTENSION_ID: Final = 32
LAST_MESSAGE_ID: Final = 255
MAX_EXTENSIONS: Final = LAST_MESSAGE_ID - FIRST_EXTENSION_ID + 1
MAX_LISTEN_ADDRESSES: Final = 8
MAX_REASON_BYTES: Final = 256

EXTENSION_NAME = Text(max_bytes=64, min_bytes=1)


@attrs.frozen
class ExtensionOffer(Record):
    """One extension a side speaks, and the message id it wants to receive it on."""

    version: int = attrs.field(metadata=spec(UInt(maximum=65535, minimum=1)))
    message_id: int = attrs.field(
        metadata=spec(UInt(maximum=LAST_MESSAGE_ID, minimum=FIRST_EXTENSION_ID))
    )


@attrs.frozen
class Hello(Record):
    """First message each side sends on the encrypted channel."""

    protocol: int = attrs.field(metadata=spec(UInt(maximum=65535, minimum=1)))
    agent: str = attrs.field(metadata=spec(Text(max_bytes=64)))
    extensions: dict[str, ExtensionOffer] = attrs.field(
        metadata=spec(MapOf(EXTENSION_NAME, Nested(ExtensionOffer), max_items=MAX_EXTENSIONS))
    )
    listen: tuple[str, ...] = attrs.field(
        metadata=spec(ListOf(Text(max_bytes=128), max_items=MAX_LISTEN_ADDRESSES))
    )


@attrs.frozen
class Ping(Record):
    nonce: int = attrs.field(metadata=spec(UInt()))


@attrs.frozen
class Pong(Record):
    nonce: int = attrs.field(metadata=spec(UInt()))


@attrs.frozen
class Goodbye(Record):
    """Sent before a clean close; its arrival tells the peer the stream was not truncated."""

    reason: str = attrs.field(metadata=spec(Text(max_bytes=MAX_REASON_BYTES)))


@attrs.frozen
class SwitchCipher(Record):
    """The last message its sender encrypts with ChaCha20-Poly1305: from the next one on, that
    direction uses `cipher` (`wire.connection`). Only after both Hellos offered it."""

    cipher: str = attrs.field(metadata=spec(Text(max_bytes=32, min_bytes=1)))


CoreMessage = Hello | Ping | Pong | Goodbye | SwitchCipher

CORE_MESSAGE_IDS: Final[dict[type[Record], int]] = {
    Hello: 1,
    Ping: 2,
    Pong: 3,
    Goodbye: 4,
    SwitchCipher: 5,
}
_CORE_TYPES: Final[dict[int, type[Record]]] = {
    ident: cls for cls, ident in CORE_MESSAGE_IDS.items()
}


def encode_core(message: CoreMessage) -> bytes:
    """Frame plaintext for a core message: its id byte and canonical body."""
    return bytes([CORE_MESSAGE_IDS[type(message)]]) + pack_canonical(to_wire(message))


def is_known_core_id(message_id: int) -> bool:
    return message_id in _CORE_TYPES


def decode_core(message_id: int, body: bytes) -> CoreMessage:
    """Decode a core message body. Raises DecodeError on any violation."""
    cls = _CORE_TYPES.get(message_id)
    if cls is None:
        raise DecodeError(f"unknown core message id {message_id}")
    message = from_wire(cls, unpack_canonical(body, max_container_items=1024))
    assert isinstance(message, Hello | Ping | Pong | Goodbye | SwitchCipher)
    return message
