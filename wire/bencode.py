"""Strict bencode (BEP 3): the encoding of .torrent files and of BitTorrent's info dicts.

Values are integers, byte strings, lists and dicts with byte-string keys. `bencode` writes the
one canonical spelling of a value (dict keys sorted by their raw bytes, integers without
leading zeros); `bdecode` accepts only that spelling and rejects everything else with a
`DecodeError` that says what was wrong and where.

Why strict: a torrent's infohash is the SHA-1 (v1) or SHA-256 (v2) of the bencoded info dict
*as it appears in the file*. Because the decoder accepts exactly the canonical encoding, every
decoded value re-encodes to the very bytes it came from, so `sha1(bencode(info))` is the
infohash and there is no need to keep byte offsets into the original input. A lenient decoder
would silently compute a different hash for a torrent with unsorted keys, and two parsers
could disagree about which of two duplicate keys counts. Torrents in the wild that are not
canonical are therefore refused rather than misnamed.

Hostile input can only cost what it weighs: lengths are checked against the bytes actually
present before anything is sliced (nothing is ever allocated from an announced length),
integers are limited to signed 64 bits (the range every client uses; it also keeps Python
from converting thousand-digit numbers), and nesting is bounded by `max_depth`, which also
bounds the decoder's recursion.

This module is pure: bytes in, values out. It never touches files or the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, TypeAlias

from wire.errors import DecodeError

BValue: TypeAlias = int | bytes | list["BValue"] | dict[bytes, "BValue"]
"""A decoded bencode value. Lists and dicts are plain (mutable) Python containers."""

INT_MIN: Final = -(1 << 63)
INT_MAX: Final = (1 << 63) - 1
DEFAULT_MAX_DEPTH: Final = 32

_MAX_INT_DIGITS: Final = 20  # "-9223372036854775808" is 20 characters
_MAX_LENGTH_DIGITS: Final = 19  # more than any input we could hold
_MAX_ENCODE_DEPTH: Final = 512


class _Decoder:
    """Recursive descent over one buffer. The recursion depth is at most `max_depth`."""

    __slots__ = ("data", "end", "max_depth", "pos")

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.end = len(data)
        self.max_depth = max_depth
        self.pos = 0

    def fail(self, reason: str, at: int | None = None) -> DecodeError:
        return DecodeError(f"bencode: {reason} at offset {self.pos if at is None else at}")

    def value(self, depth: int) -> BValue:
        if self.pos >= self.end:
            raise self.fail("input ends where a value should start")
        lead = self.data[self.pos]
        if lead == 0x69:  # i
            return self.integer()
        if 0x30 <= lead <= 0x39:
            return self.string()
        if lead == 0x6C:  # l
            return self.parse_list(depth)
        if lead == 0x64:  # d
            return self.parse_dict(depth)
        raise self.fail(f"unexpected byte {bytes([lead])!r}")

    def integer(self) -> int:
        start = self.pos + 1
        stop = self.data.find(b"e", start, min(self.end, start + _MAX_INT_DIGITS + 1))
        if stop < 0:
            if self.end - start <= _MAX_INT_DIGITS:
                raise self.fail("integer is not terminated (input truncated?)")
            raise self.fail("integer is not terminated within 20 characters (limit: 64 bits)")
        text = self.data[start:stop]
        digits = text[1:] if text[:1] == b"-" else text
        if not digits:
            raise self.fail(f"empty integer {b'i' + text + b'e'!r}")
        if not digits.isdigit():
            raise self.fail(f"integer {text!r} has characters other than digits")
        if digits[0] == 0x30 and (len(digits) > 1 or text[:1] == b"-"):
            raise self.fail(f"integer {text!r} is not canonical (leading zero or -0)")
        number = int(text)
        if not INT_MIN <= number <= INT_MAX:
            raise self.fail(f"integer {text!r} does not fit in signed 64 bits")
        self.pos = stop + 1
        return number

    def string(self) -> bytes:
        start = self.pos
        colon = self.data.find(b":", start, min(self.end, start + _MAX_LENGTH_DIGITS + 1))
        if colon < 0:
            if self.end - start <= _MAX_LENGTH_DIGITS:
                raise self.fail("string length is not followed by ':' (input truncated?)")
            raise self.fail("string length is not followed by ':' within 19 digits")
        digits = self.data[start:colon]
        if not digits.isdigit():
            raise self.fail(f"string length {digits!r} has characters other than digits")
        if digits[0] == 0x30 and len(digits) > 1:
            raise self.fail(f"string length {digits!r} has a leading zero")
        length = int(digits)
        body = colon + 1
        if length > self.end - body:
            raise self.fail(
                f"string of {length} bytes runs past the end of the input "
                f"({self.end - body} bytes left)"
            )
        self.pos = body + length
        return self.data[body : self.pos]

    def parse_list(self, depth: int) -> list[BValue]:
        if depth >= self.max_depth:
            raise self.fail(f"nested deeper than {self.max_depth} levels")
        self.pos += 1
        items: list[BValue] = []
        while True:
            if self.pos >= self.end:
                raise self.fail("list is not terminated (input truncated?)")
            if self.data[self.pos] == 0x65:  # e
                self.pos += 1
                return items
            items.append(self.value(depth + 1))

    def parse_dict(self, depth: int) -> dict[bytes, BValue]:
        if depth >= self.max_depth:
            raise self.fail(f"nested deeper than {self.max_depth} levels")
        self.pos += 1
        items: dict[bytes, BValue] = {}
        previous: bytes | None = None
        while True:
            if self.pos >= self.end:
                raise self.fail("dict is not terminated (input truncated?)")
            lead = self.data[self.pos]
            if lead == 0x65:  # e
                self.pos += 1
                return items
            if not 0x30 <= lead <= 0x39:
                raise self.fail("dict key is not a byte string")
            key_at = self.pos
            key = self.string()
            if previous is not None and key <= previous:
                reason = "duplicate" if key == previous else "unsorted"
                raise self.fail(f"{reason} dict key {key[:64]!r}", key_at)
            previous = key
            items[key] = self.value(depth + 1)


def bdecode(data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> BValue:
    """Decode exactly one canonical bencode value that fills all of `data`.

    Raises DecodeError (with the reason and offset) for anything else: non-canonical
    spellings, unsorted or duplicate dict keys, trailing or missing bytes, lengths that run
    past the input, integers outside signed 64 bits, or lists/dicts nested deeper than
    `max_depth` (a scalar at the top is depth 0; each list or dict adds one).
    """
    if not isinstance(data, bytes):
        raise TypeError(f"bdecode wants bytes, not {type(data).__name__}")
    decoder = _Decoder(data, max_depth)
    value = decoder.value(0)
    if decoder.pos != decoder.end:
        raise decoder.fail(f"{decoder.end - decoder.pos} trailing bytes after the value")
    return value


def bencode(value: object) -> bytes:
    """The canonical encoding of `value`.

    Accepts int (not bool), bytes, lists or tuples, and dicts (any Mapping) with bytes keys,
    which are written sorted. Raises ValueError/TypeError for anything that has no bencode
    form (text must be encoded by the caller: bencode strings are bytes, and choosing the
    encoding is the caller's business).
    """
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: object, out: list[bytes], depth: int) -> None:
    if depth > _MAX_ENCODE_DEPTH:
        raise ValueError(f"value nested deeper than {_MAX_ENCODE_DEPTH} levels")
    # Concrete types first: isinstance against the ABCs at the end is much slower.
    if isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, bool):
        raise TypeError("bencode has no booleans; use 0 or 1")
    elif isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise ValueError(f"integer {value} does not fit in signed 64 bits")
        out.append(b"i%de" % value)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, bytes):
                raise TypeError(f"dict key {key!r} is not bytes")
        out.append(b"d")
        for key in sorted(value):
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(value[key], out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Sequence) and not isinstance(value, str | bytearray | memoryview):
        _encode(list(value), out, depth)
    else:
        raise TypeError(f"{type(value).__name__} has no bencode form")
