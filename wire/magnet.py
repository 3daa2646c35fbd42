"""Magnet links: the names a container or torrent is passed around by.

A magnet link (`magnet:?xt=...&dn=...`) carries one or more exact topics (`xt`) plus hints:
a display name (`dn`), trackers (`tr`), web seeds (`ws`, BEP 19) and the exact length (`xl`).
We understand three topics:

* `urn:btih:` - a BitTorrent v1 infohash, 40 hex digits or 32 base32 characters (BEP 9);
* `urn:btmh:` - a v2 infohash as a multihash, `1220` + 64 hex digits (BEP 52: 0x12 is
  SHA2-256 and 0x20 its 32-byte length; the digest kept is the 32 bytes after them);
* `urn:kinswarm:` - a kinswarm container id (64 hex digits, the manifest's SHA-256).

A hybrid torrent's magnet carries both btih and btmh, and a container exported as a torrent
can carry all three; each is another name for the same content. Topics we do not know are
kept verbatim in `other_xt` (a magnet is still useful for its other topics), but a known
topic with a malformed value is an error: guessing what a damaged hash meant would fetch the
wrong thing. Parsing is pure string work; nothing here touches the network.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, unquote, unquote_plus

import attrs

from wire.container import infohash_name
from wire.errors import DecodeError

MAX_MAGNET_CHARS: Final = 64 * 1024
MAX_PARAMETERS: Final = 1024
MAX_EXACT_LENGTH: Final = (1 << 63) - 1

_HEX40: Final = re.compile(r"[0-9a-fA-F]{40}")
_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_BASE32: Final = re.compile(r"[A-Za-z2-7]{32}")
_MULTIHASH_SHA256: Final = b"\x12\x20"
_HEX_PAIRS: Final = re.compile(r"(?:[0-9a-fA-F]{2})+")
_NUMBERED_KEY: Final = re.compile(r"(xt|tr|ws)(\.[0-9]+)?")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


@attrs.frozen
class Magnet:
    """A parsed magnet link. Digests are raw bytes; everything else is text."""

    btih: bytes | None = None
    """v1 infohash (20 bytes)."""
    btmh: bytes | None = None
    """v2 infohash: the SHA-256 digest (32 bytes), without the multihash prefix."""
    kinswarm_id: bytes | None = None
    """Container id (32 bytes)."""
    other_xt: tuple[str, ...] = ()
    """Exact topics of kinds we do not know, as they appeared (after percent-decoding)."""
    display_name: str | None = None
    trackers: tuple[str, ...] = ()
    web_seeds: tuple[str, ...] = ()
    exact_length: int | None = None

    def names(self) -> list[str]:
        """Every name this magnet gives the content: `btih:<hex>`, `btmh:1220<hex>`,
        `ks:<hex>` for a container id, and the web seed URLs."""
        names: list[str] = []
        if self.btih is not None:
            names.append(infohash_name("btih", self.btih))
        if self.btmh is not None:
            names.append(infohash_name("btmh", self.btmh))
        if self.kinswarm_id is not None:
            names.append(f"ks:{self.kinswarm_id.hex()}")
        names.extend(self.web_seeds)
        return names

    def uri(self) -> str:
        """This magnet written back as a URI (unknown topics included)."""
        return magnet_uri(
            btih=self.btih,
            btmh=self.btmh,
            kinswarm_id=self.kinswarm_id,
            other_xt=self.other_xt,
            display_name=self.display_name,
            trackers=self.trackers,
            web_seeds=self.web_seeds,
            exact_length=self.exact_length,
        )


def _decode_value(raw: str, key: str, *, plus_is_space: bool = False) -> str:
    try:
        if plus_is_space:
            return unquote_plus(raw, errors="strict")
        return unquote(raw, errors="strict")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"magnet: {key} is not valid UTF-8 after percent-decoding") from exc


def _parse_btih(value: str) -> bytes:
    if _HEX40.fullmatch(value):
        return bytes.fromhex(value)
    if _BASE32.fullmatch(value):  # 32 characters of the alphabet: always 20 whole bytes
        return base64.b32decode(value.upper())
    raise DecodeError(
        f"magnet: btih must be 40 hex digits or 32 base32 characters, got {len(value)} "
        f"characters {value[:80]!r}"
    )


def _parse_btmh(value: str) -> bytes:
    if not _HEX_PAIRS.fullmatch(value):
        raise DecodeError(f"magnet: btmh must be a multihash in hex, got {value[:80]!r}")
    multihash = bytes.fromhex(value)
    if multihash[:2] != _MULTIHASH_SHA256 or len(multihash) != 34:
        raise DecodeError(
            f"magnet: btmh {value[:80]!r} is not a SHA2-256 multihash "
            "('1220' and 64 hex digits), the only kind BEP 52 uses"
        )
    return multihash[2:]


def _parse_container_id(value: str) -> bytes:
    if not _HEX64.fullmatch(value):
        raise DecodeError(f"magnet: kinswarm container id must be 64 hex digits, got {value!r}")
    return bytes.fromhex(value)


def _check_text(value: str, key: str) -> str:
    if not value:
        raise DecodeError(f"magnet: empty {key}")
    if _CONTROL.search(value):
        raise DecodeError(f"magnet: {key} contains control characters")
    return value


def _check_url(value: str, key: str) -> str:
    _check_text(value, key)
    if "://" not in value:
        raise DecodeError(f"magnet: {key} {value[:80]!r} is not a URL")
    return value


def parse_magnet(uri: str) -> Magnet:
    """Parse a magnet link strictly. Raises DecodeError with the reason on malformed input.

    Repeated `tr`/`ws` (also the numbered `tr.1` spellings) accumulate in order without
    duplicates; a topic kind given twice with different values, or a repeated `dn`/`xl`,
    is an error (which one would we believe?). Parameters we do not use are ignored.
    """
    if len(uri) > MAX_MAGNET_CHARS:
        raise DecodeError(f"magnet: longer than {MAX_MAGNET_CHARS} characters")
    if uri[:8].lower() != "magnet:?":
        raise DecodeError("magnet: does not start with 'magnet:?'")
    query = uri[8:]
    if "#" in query:
        raise DecodeError("magnet: fragments ('#') are not allowed")
    parts = [part for part in query.split("&") if part]
    if len(parts) > MAX_PARAMETERS:
        raise DecodeError(f"magnet: more than {MAX_PARAMETERS} parameters")

    found: dict[str, bytes] = {}
    other_xt: list[str] = []
    display_name: str | None = None
    exact_length: int | None = None
    trackers: list[str] = []
    web_seeds: list[str] = []

    for part in parts:
        raw_key, sep, raw_value = part.partition("=")
        if not sep:
            raise DecodeError(f"magnet: parameter {raw_key[:40]!r} has no value")
        key = _decode_value(raw_key, "parameter name").lower()
        numbered = _NUMBERED_KEY.fullmatch(key)
        if numbered:
            key = numbered.group(1)
        if key == "xt":
            topic = _check_text(_decode_value(raw_value, key), key)
            kind, digest = _parse_topic(topic)
            if kind is None:
                if topic not in other_xt:
                    other_xt.append(topic)
                continue
            if kind in found and found[kind] != digest:
                raise DecodeError(f"magnet: two different {kind} topics")
            found[kind] = digest
        elif key == "dn":
            if display_name is not None:
                raise DecodeError("magnet: more than one dn")
            display_name = _check_text(_decode_value(raw_value, key, plus_is_space=True), key)
        elif key == "xl":
            if exact_length is not None:
                raise DecodeError("magnet: more than one xl")
            text = _decode_value(raw_value, key)
            if not text.isascii() or not text.isdigit() or len(text) > 19:
                raise DecodeError(f"magnet: xl {text[:40]!r} is not a length in bytes")
            exact_length = int(text)
            if exact_length > MAX_EXACT_LENGTH:
                raise DecodeError("magnet: xl is out of range")
        elif key in ("tr", "ws"):
            url = _check_url(_decode_value(raw_value, key), key)
            target = trackers if key == "tr" else web_seeds
            if url not in target:
                target.append(url)
        # Anything else (xs, as, kt, x.pe, so, ...) is a hint we do not use.

    if not found and not other_xt:
        raise DecodeError("magnet: no exact topic (xt)")
    return Magnet(
        btih=found.get("btih"),
        btmh=found.get("btmh"),
        kinswarm_id=found.get("kinswarm"),
        other_xt=tuple(other_xt),
        display_name=display_name,
        trackers=tuple(trackers),
        web_seeds=tuple(web_seeds),
        exact_length=exact_length,
    )


def _parse_topic(topic: str) -> tuple[str | None, bytes]:
    """(kind, digest) for topics we know; (None, b"") for others."""
    scheme, _, rest = topic.partition(":")
    if scheme.lower() != "urn":
        return None, b""
    namespace, _, value = rest.partition(":")
    namespace = namespace.lower()
    if namespace not in _TOPIC_PARSERS:
        return None, b""
    if not value:
        raise DecodeError(f"magnet: topic {topic[:80]!r} has no value")
    return namespace, _TOPIC_PARSERS[namespace](value)


_TOPIC_PARSERS: Final = {
    "btih": _parse_btih,
    "btmh": _parse_btmh,
    "kinswarm": _parse_container_id,
}


def _escape(value: str) -> str:
    return quote(value, safe="")


def magnet_uri(
    *,
    btih: bytes | None = None,
    btmh: bytes | None = None,
    kinswarm_id: bytes | None = None,
    other_xt: Iterable[str] = (),
    display_name: str | None = None,
    trackers: Iterable[str] = (),
    web_seeds: Iterable[str] = (),
    exact_length: int | None = None,
) -> str:
    """Build a magnet link. For a container: `kinswarm_id`, `display_name` (its name) and its
    web seeds; add `btih`/`btmh` when it was also exported as a torrent, so BitTorrent clients
    can use the same link. Topics come first, in the order kinswarm, btih, btmh."""
    params: list[str] = []
    if kinswarm_id is not None:
        if len(kinswarm_id) != 32:
            raise ValueError("a container id is 32 bytes")
        params.append(f"xt=urn:kinswarm:{kinswarm_id.hex()}")
    if btih is not None:
        if len(btih) != 20:
            raise ValueError("a btih is 20 bytes")
        params.append(f"xt=urn:btih:{btih.hex()}")
    if btmh is not None:
        if len(btmh) != 32:
            raise ValueError("a btmh digest is 32 bytes")
        params.append(f"xt=urn:btmh:{_MULTIHASH_SHA256.hex()}{btmh.hex()}")
    params.extend(f"xt={_escape(topic)}" for topic in other_xt)
    if not params:
        raise ValueError("a magnet link needs at least one exact topic")
    if display_name is not None:
        params.append(f"dn={_escape(display_name)}")
    if exact_length is not None:
        if not 0 <= exact_length <= MAX_EXACT_LENGTH:
            raise ValueError("exact length out of range")
        params.append(f"xl={exact_length}")
    params.extend(f"tr={_escape(url)}" for url in dict.fromkeys(trackers))
    params.extend(f"ws={_escape(url)}" for url in dict.fromkeys(web_seeds))
    return "magnet:?" + "&".join(params)
