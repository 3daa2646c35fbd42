"""Contacts: a node id with the address it is reached at, and their compact wire form.

On the wire a contact is 38 bytes (id, IPv4, port) or 50 bytes (id, IPv6, port), like BEP 5's
compact node info with a 32-byte id. Decoding is strict: the length picks the family, the
port must not be 0, and unspecified or multicast addresses are refused (nobody can be reached
there, and accepting them lets a peer aim our traffic at broadcast addresses).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Final

import attrs

from dht.ids import ID_BYTES
from wire.errors import DecodeError

IPV4_CONTACT_BYTES: Final = ID_BYTES + 4 + 2
IPV6_CONTACT_BYTES: Final = ID_BYTES + 16 + 2


@attrs.frozen(slots=True)
class Contact:
    node_id: bytes
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


# Parsing addresses with `ipaddress` costs microseconds and a DHT node handles the same few
# thousand addresses over and over: memoise both directions (bounded).
@functools.lru_cache(maxsize=65536)
def _packed(host: str) -> bytes:
    return ipaddress.ip_address(host).packed


@functools.lru_cache(maxsize=65536)
def _host_of(packed: bytes) -> str:
    address = ipaddress.ip_address(packed)
    if address.is_unspecified or address.is_multicast:
        raise DecodeError(f"contact address {address} cannot be reached")
    return str(address)


def encode_contact(contact: Contact) -> bytes:
    return contact.node_id + _packed(contact.host) + contact.port.to_bytes(2, "big")


def decode_contact(data: bytes) -> Contact:
    if len(data) not in (IPV4_CONTACT_BYTES, IPV6_CONTACT_BYTES):
        raise DecodeError(f"a compact contact is 38 or 50 bytes, not {len(data)}")
    port = int.from_bytes(data[-2:], "big")
    if port == 0:
        raise DecodeError("contact with port 0")
    return Contact(bytes(data[:ID_BYTES]), _host_of(bytes(data[ID_BYTES:-2])), port)


def decode_contacts(items: Iterable[bytes]) -> list[Contact]:
    return [decode_contact(item) for item in items]


@functools.lru_cache(maxsize=65536)
def subnet_of(host: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) network of `host`: a routing table holds at most two
    contacts from one subnet per bucket, so one operator cannot fill it cheaply."""
    address = ipaddress.ip_address(host)
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
