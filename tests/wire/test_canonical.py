"""Canonical msgpack: one encoding per value, strict limits, only DecodeError on bad input."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.canonical import MAX_DEPTH, pack_canonical, unpack_canonical, unpack_strict
from wire.errors import DecodeError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_round_trip(value: Any) -> None:
    assert unpack_canonical(pack_canonical(value)) == value


@given(st.dictionaries(st.text(max_size=8), st.integers(0, 1000), min_size=2, max_size=8))
def test_key_order_does_not_matter(mapping: dict[str, int]) -> None:
    reversed_map = dict(reversed(list(mapping.items())))
    assert pack_canonical(mapping) == pack_canonical(reversed_map)


def test_unsorted_keys_are_rejected() -> None:
    data = msgpack.packb({"b": 1, "a": 2})
    with pytest.raises(DecodeError, match="non-canonical"):
        unpack_canonical(data)


def test_wide_integer_is_rejected() -> None:
    data = b"\xcd\x00\x05"  # uint16 holding 5, which has a one-byte form
    assert unpack_strict(data) == 5
    with pytest.raises(DecodeError, match="non-canonical"):
        unpack_canonical(data)


def test_duplicate_keys_are_rejected() -> None:
    data = b"\x82\xa1a\x01\xa1a\x02"
    with pytest.raises(DecodeError):
        unpack_canonical(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (msgpack.packb(1.5), "floats"),
        (msgpack.packb(msgpack.ExtType(1, b"x")), "ext"),
        (msgpack.packb({1: 2}), "malformed|map keys"),
        (msgpack.packb(1) + b"\x00", "trailing"),
        (b"\xc4\xff", "malformed"),  # bin of 255 bytes announced, none present
        (b"\x92\x01", "malformed"),  # array of 2, one given
        (b"\xc1", "malformed"),  # never-used type byte
        (b"\xa2\xff\xfe", "malformed"),  # invalid UTF-8 in str
    ],
)
def test_bad_input_raises_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        unpack_canonical(data)


def test_depth_limit() -> None:
    value: Any = 1
    for _ in range(MAX_DEPTH + 1):
        value = [value]
    data = msgpack.packb(value)
    with pytest.raises(DecodeError, match="nested deeper"):
        unpack_strict(data)
    with pytest.raises(ValueError, match="nested deeper"):
        pack_canonical(value)


def test_huge_announced_length_is_rejected_without_allocating() -> None:
    data = b"\xdd\xff\xff\xff\xff"  # array32 claiming 4 billion items in 5 bytes
    with pytest.raises(DecodeError):
        unpack_strict(data)


def test_unencodable_values_are_refused() -> None:
    for bad in (1.0, {1: 2}, object(), 1 << 64, -(1 << 63) - 1):
        with pytest.raises(ValueError):
            pack_canonical(bad)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        unpack_canonical(data)
    except DecodeError:
        pass


@given(values, st.data())
def test_mutated_encodings_only_raise_decode_error(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(pack_canonical(value))
    index = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[index] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        unpack_canonical(bytes(encoded))
    except DecodeError:
        pass
