"""A Bloom filter for telling a peer, in about 1.2 bytes per item, which containers we hold.

A node may hold 100,000 containers; listing their 32-byte ids on every connection would cost
3.2 MB each time. A Bloom filter with a 1 % false-positive rate costs ~9.6 bits per id (~120 KB
for 100,000), answers "may hold" with no false negatives, and is sent once per connection; later
changes travel as exact increments (see `wire.index`). A false positive only costs the asker one
unanswered want, so 1 % is plenty.

Hashing is fixed by the protocol (docs/protocol.md, section 5.3), because the receiver queries a
filter built by someone else: item `x` sets bits `((h1 + i*h2) mod 2^64) mod m` for `i < k`
(Kirsch and Mitzenmacher's double hashing, "Less Hashing, Same Performance", 2006), where
`d = SHA-256("kinswarm bloom" ‖ tweak (4 bytes, big-endian) ‖ x)`, `h1` is `d[0:8]` and `h2`
is `d[8:16]` with its low bit set (both big-endian), and `m` is 8 times the filter's byte
length. Bit `j` is `byte[j >> 3] & (1 << (j & 7))`.

Why SHA-256 of the item and not the item itself, although container ids are already uniform
hashes: (1) the filter then works for any byte string, which the protocol does not have to
promise away; (2) the **tweak** (the sender's index version) changes the hash functions from one
filter to the next, so an id that is a false positive in one summary is, with probability
1 - p, not one in the next, instead of being stuck for ever; (3) it costs ~0.5 µs per item, a
rounding error next to sending the filter. It adds no protection against someone grinding
manifests to collide in a filter they have seen, and needs none: a false positive is harmless.

This module is pure computation: no I/O, no randomness, no clock.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Final

from wire.errors import DecodeError

MAX_BLOOM_BYTES: Final = 8 * 1024 * 1024
"""Largest filter we build or accept: 8 MiB = 67M bits, ~7M items at 1 %."""
MAX_HASHES: Final = 16
"""More hash functions than this only pay off below a 0.002 % false-positive rate, which nobody
needs, and each one costs a bit lookup on every query."""
MAX_TWEAK: Final = (1 << 32) - 1
_DOMAIN: Final = b"kinswarm bloom"
_LN2: Final = math.log(2)
_MASK64: Final = (1 << 64) - 1


class BloomFilter:
    """A fixed-size Bloom filter over byte strings (see the module docstring for the hashing).

    Build one with `for_capacity`, fill it with `add`/`update`, send `to_bytes()` with its
    `hash_count` and `tweak`, and rebuild it on the other side with `from_bytes`.
    """

    __slots__ = ("_bit_count", "_bits", "hash_count", "tweak")

    def __init__(self, size_bytes: int, hash_count: int, tweak: int = 0) -> None:
        if not 1 <= size_bytes <= MAX_BLOOM_BYTES:
            raise ValueError(f"a Bloom filter has 1 to {MAX_BLOOM_BYTES} bytes, not {size_bytes}")
        if not 1 <= hash_count <= MAX_HASHES:
            raise ValueError(f"a Bloom filter uses 1 to {MAX_HASHES} hashes, not {hash_count}")
        if not 0 <= tweak <= MAX_TWEAK:
            raise ValueError(f"the tweak is a 32-bit unsigned integer, not {tweak}")
        self._bits = bytearray(size_bytes)
        self._bit_count = size_bytes * 8
        self.hash_count = hash_count
        self.tweak = tweak

    @classmethod
    def for_capacity(
        cls,
        capacity: int,
        false_positive_rate: float,
        *,
        tweak: int = 0,
        max_bytes: int = MAX_BLOOM_BYTES,
    ) -> BloomFilter:
        """A filter sized for `capacity` items at `false_positive_rate`.

        Bits `m = -n ln p / ln² 2` rounded up to whole bytes (at least one byte), then capped at
        `max_bytes`; hashes `k = m / n · ln 2` rounded, within 1..16. When the cap bites, `k`
        is chosen for the capped size, so the filter is the best one that fits (its actual
        rate is `expected_false_positive_rate(capacity)`), rather than an error: a summary
        that is a little less precise is still far better than none.
        """
        if capacity < 0:
            raise ValueError("capacity must not be negative")
        if not 0.0 < false_positive_rate < 1.0:
            raise ValueError("the false-positive rate must be strictly between 0 and 1")
        if not 1 <= max_bytes <= MAX_BLOOM_BYTES:
            raise ValueError(f"max_bytes must be within 1..{MAX_BLOOM_BYTES}")
        bits = math.ceil(-capacity * math.log(false_positive_rate) / (_LN2 * _LN2))
        size_bytes = min(max(1, (bits + 7) // 8), max_bytes)
        hashes = round(size_bytes * 8 / capacity * _LN2) if capacity else 1
        return cls(size_bytes, min(MAX_HASHES, max(1, hashes)), tweak)

    @classmethod
    def from_bytes(cls, data: bytes, hash_count: int, tweak: int) -> BloomFilter:
        """Rebuild a filter received from a peer. Raises DecodeError on bad parameters."""
        if not 1 <= len(data) <= MAX_BLOOM_BYTES:
            raise DecodeError(f"a Bloom filter has 1 to {MAX_BLOOM_BYTES} bytes, not {len(data)}")
        if not 1 <= hash_count <= MAX_HASHES:
            raise DecodeError(f"a Bloom filter uses 1 to {MAX_HASHES} hashes, not {hash_count}")
        if not 0 <= tweak <= MAX_TWEAK:
            raise DecodeError(f"Bloom tweak {tweak} is not a 32-bit unsigned integer")
        bloom = cls(len(data), hash_count, tweak)
        bloom._bits[:] = data
        return bloom

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    @property
    def size_bytes(self) -> int:
        return len(self._bits)

    @property
    def bit_count(self) -> int:
        return self._bit_count

    def _positions(self, item: bytes) -> list[int]:
        digest = hashlib.sha256(_DOMAIN + self.tweak.to_bytes(4, "big") + bytes(item)).digest()
        h1 = int.from_bytes(digest[0:8], "big")
        h2 = int.from_bytes(digest[8:16], "big") | 1
        m = self._bit_count
        return [((h1 + i * h2) & _MASK64) % m for i in range(self.hash_count)]

    def add(self, item: bytes) -> None:
        bits = self._bits
        for position in self._positions(item):
            bits[position >> 3] |= 1 << (position & 7)

    def update(self, items: Iterable[bytes]) -> None:
        for item in items:
            self.add(item)

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, bytes | bytearray | memoryview):
            return False
        bits = self._bits
        return all(bits[p >> 3] & (1 << (p & 7)) for p in self._positions(bytes(item)))

    def expected_false_positive_rate(self, items: int) -> float:
        """`(1 - e^(-k n / m))^k`: the rate once `items` distinct items were added."""
        return float(
            (1.0 - math.exp(-self.hash_count * items / self._bit_count)) ** self.hash_count
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BloomFilter):
            return NotImplemented
        return (self.hash_count, self.tweak, self._bits) == (
            other.hash_count,
            other.tweak,
            other._bits,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"BloomFilter(size_bytes={self.size_bytes}, hash_count={self.hash_count}, "
            f"tweak={self.tweak})"
        )
