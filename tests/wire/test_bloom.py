"""The Bloom filter: sizing, no false negatives, the measured false-positive rate, the hashing
as docs/protocol.md specifies it, and strict decoding of received filters."""

from __future__ import annotations

import hashlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.bloom import MAX_BLOOM_BYTES, MAX_HASHES, BloomFilter
from wire.errors import DecodeError


def _ids(start: int, count: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(start, start + count)]


def _positions_per_spec(item: bytes, size_bytes: int, hashes: int, tweak: int) -> list[int]:
    """docs/protocol.md 5.3, written out independently of wire.bloom."""
    digest = hashlib.sha256(b"kinswarm bloom" + tweak.to_bytes(4, "big") + item).digest()
    h1 = int.from_bytes(digest[:8], "big")
    h2 = int.from_bytes(digest[8:16], "big") | 1
    return [((h1 + i * h2) % 2**64) % (size_bytes * 8) for i in range(hashes)]


def test_sizing_follows_the_textbook_formulas() -> None:
    bloom = BloomFilter.for_capacity(100_000, 0.01)
    bits = math.ceil(-100_000 * math.log(0.01) / math.log(2) ** 2)
    assert bloom.size_bytes == (bits + 7) // 8 == 119_814  # ~1.2 bytes per id
    assert bloom.hash_count == 7  # round(9.585 * ln 2)
    assert bloom.expected_false_positive_rate(100_000) == pytest.approx(0.01, rel=0.05)


def test_sizing_is_bounded() -> None:
    empty = BloomFilter.for_capacity(0, 0.01)
    assert (empty.size_bytes, empty.hash_count) == (1, 1)
    assert bytes(32) not in empty
    huge = BloomFilter.for_capacity(10**9, 0.01, max_bytes=1024)
    assert huge.size_bytes == 1024 and huge.hash_count == 1
    assert BloomFilter.for_capacity(10, 1e-12).hash_count == MAX_HASHES
    assert BloomFilter.for_capacity(10**8, 0.01).size_bytes == MAX_BLOOM_BYTES
    with pytest.raises(ValueError):
        BloomFilter.for_capacity(10, 0.0)
    with pytest.raises(ValueError):
        BloomFilter.for_capacity(-1, 0.5)
    with pytest.raises(ValueError):
        BloomFilter(MAX_BLOOM_BYTES + 1, 3)
    with pytest.raises(ValueError):
        BloomFilter(8, MAX_HASHES + 1)


@given(st.lists(st.binary(max_size=40), max_size=50), st.integers(0, 2**32 - 1))
def test_no_false_negatives(items: list[bytes], tweak: int) -> None:
    bloom = BloomFilter.for_capacity(len(items), 0.05, tweak=tweak)
    bloom.update(items)
    assert all(item in bloom for item in items)


def test_measured_false_positive_rate_matches_the_target() -> None:
    members = _ids(0, 10_000)
    bloom = BloomFilter.for_capacity(len(members), 0.01)
    bloom.update(members)
    strangers = _ids(1_000_000, 50_000)
    rate = sum(item in bloom for item in strangers) / len(strangers)
    # Expected 1 %; the standard deviation over 50,000 trials is 0.045 %.
    assert 0.007 < rate < 0.013, rate


def test_the_tweak_changes_which_strangers_are_false_positives() -> None:
    members = _ids(0, 2_000)
    strangers = _ids(10**6, 20_000)
    false_positives = []
    for tweak in (1, 2):
        bloom = BloomFilter.for_capacity(len(members), 0.01, tweak=tweak)
        bloom.update(members)
        false_positives.append({item for item in strangers if item in bloom})
    assert false_positives[0] and false_positives[1]
    # Independent hash functions: the overlap is about p * |one set|, i.e. a handful.
    assert len(false_positives[0] & false_positives[1]) < len(false_positives[0]) / 5


def test_hashing_is_the_specified_one() -> None:
    # The test vector in docs/protocol.md 5.3.
    bloom = BloomFilter(8, 3, tweak=1)
    bloom.add(bytes(32))
    assert bloom.to_bytes().hex() == "0002000008004000"
    assert sorted(_positions_per_spec(bytes(32), 8, 3, 1)) == [9, 35, 54]
    for item in _ids(0, 50):
        for size, hashes, tweak in ((1, 1, 0), (13, 5, 7), (1000, 16, 2**32 - 1)):
            bloom = BloomFilter(size, hashes, tweak)
            bloom.add(item)
            expected = bytearray(size)
            for position in _positions_per_spec(item, size, hashes, tweak):
                expected[position >> 3] |= 1 << (position & 7)
            assert bloom.to_bytes() == bytes(expected)


def test_round_trip_through_bytes() -> None:
    bloom = BloomFilter.for_capacity(100, 0.01, tweak=99)
    bloom.update(_ids(0, 100))
    again = BloomFilter.from_bytes(bloom.to_bytes(), bloom.hash_count, bloom.tweak)
    assert again == bloom
    assert all(item in again for item in _ids(0, 100))
    assert "not bytes" not in again


@pytest.mark.parametrize(
    ("data", "hashes", "tweak"),
    [(b"", 3, 0), (b"\0", 0, 0), (b"\0", 17, 0), (b"\0", 1, 2**32), (b"\0", 1, -1)],
)
def test_received_parameters_are_checked(data: bytes, hashes: int, tweak: int) -> None:
    with pytest.raises(DecodeError):
        BloomFilter.from_bytes(data, hashes, tweak)
