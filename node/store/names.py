"""The names a container is known by, parsed into the (kind, value) pairs the index stores.

A container has one id (the SHA-256 of its manifest) and any number of names that can change
without changing its content. Users and other programs type names, so parsing is forgiving
about case and surrounding spaces, and strict about everything else (a malformed name is a
ValueError with the reason, never a silent miss).

* `<64 hex>`: a container id *or* a file root (looked up as both; not a stored name);
* `ks:<64 hex>` (kind `ks`, 32 bytes): the kinswarm link form of a container id; further `ks`
  names may be stored (say, a publisher's pointer) and are looked up too;
* `btih:<40 hex or 32 base32>` (kind `btih`, 20 bytes): a v1 infohash, as in magnet links;
* `btmh:1220<64 hex>` (kind `btmh`, the 32-byte digest): a v2 infohash, a SHA-256 multihash;
* `scheme://...` (kind `url`): the URL exactly as given, UTF-8.

Values are stored as bytes so that hex spelt in upper or lower case is the same name.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Final, Literal

from wire.canonical import pack_canonical, unpack_canonical
from wire.container import UrlSource

NameKind = Literal["hex", "ks", "btih", "btmh", "url"]
StoredKind = Literal["ks", "btih", "btmh", "url"]
ExtraValue = str | int | bytes | bool
Extra = Mapping[str, ExtraValue]
"""Facts stored beside a name, such as a URL's `last_modified`, `etag` and `length`."""

_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_HEX40: Final = re.compile(r"[0-9a-f]{40}")
_BASE32_32: Final = re.compile(r"[a-z2-7]{32}")
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
MAX_URL_BYTES: Final = 4096


def parse_name(text: str) -> tuple[NameKind, bytes]:
    """The kind and stored value of a name. Raises ValueError for anything else."""
    stripped = text.strip()
    lower = stripped.lower()
    if _HEX64.fullmatch(lower):
        return "hex", bytes.fromhex(lower)
    kind, colon, rest = lower.partition(":")
    if colon and kind == "ks":
        if _HEX64.fullmatch(rest):
            return "ks", bytes.fromhex(rest)
        raise ValueError(f"{text!r}: a ks: name is 64 hex digits")
    if colon and kind == "btih":
        if _HEX40.fullmatch(rest):
            return "btih", bytes.fromhex(rest)
        if _BASE32_32.fullmatch(rest):
            return "btih", base64.b32decode(rest.upper())
        raise ValueError(f"{text!r}: a btih: name is 40 hex digits (or 32 base32 letters)")
    if colon and kind == "btmh":
        if rest.startswith("1220") and _HEX64.fullmatch(rest[4:]):
            return "btmh", bytes.fromhex(rest[4:])
        raise ValueError(f"{text!r}: a btmh: name is 1220 followed by 64 hex digits")
    if _URL.fullmatch(stripped):
        encoded = stripped.encode("utf-8")
        if len(encoded) > MAX_URL_BYTES:
            raise ValueError(f"URL longer than {MAX_URL_BYTES} bytes")
        return "url", encoded
    raise ValueError(
        f"{text!r} is not a name kinswarm knows: use a container id or file root (64 hex), "
        "ks:<hex>, btih:<hex>, btmh:1220<hex> or a URL"
    )


def parse_stored_name(text: str) -> tuple[StoredKind, bytes]:
    """Like `parse_name`, for names that are stored (a bare id or root is not a name)."""
    kind, value = parse_name(text)
    if kind == "hex":
        raise ValueError("a container id or file root is not a name to add; use ks:<hex>")
    return kind, value


def format_name(kind: str, value: bytes) -> str:
    """The canonical spelling of a stored name (lower-case hex)."""
    if kind == "url":
        return value.decode("utf-8")
    if kind == "btmh":
        return f"btmh:1220{value.hex()}"
    return f"{kind}:{value.hex()}"


def url_name(source: UrlSource) -> tuple[str, dict[str, ExtraValue]]:
    """A URL source as (name, extra), for `Store.add_name` / `add_container(names=...)`."""
    extra: dict[str, ExtraValue] = {}
    if source.last_modified is not None:
        extra["last_modified"] = source.last_modified
    if source.etag is not None:
        extra["etag"] = source.etag
    if source.length is not None:
        extra["length"] = source.length
    return source.url, extra


def encode_extra(extra: Extra | None) -> bytes | None:
    """Canonical msgpack of `extra` (None when there is nothing to store)."""
    if not extra:
        return None
    return pack_canonical(dict(extra))


def decode_extra(data: bytes | None) -> dict[str, ExtraValue]:
    if data is None:
        return {}
    try:
        value = unpack_canonical(data)
    except Exception as exc:  # our own bytes: corruption, not a peer's fault
        raise ValueError(f"corrupt name extra in the index: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError("corrupt name extra in the index: not a map")
    return value
