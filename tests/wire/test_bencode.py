"""Strict bencode: round trips, every non-canonical spelling refused, only DecodeError on junk."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.bencode import INT_MAX, INT_MIN, BValue, bdecode, bencode
from wire.errors import DecodeError

values: st.SearchStrategy[BValue] = st.recursive(
    st.integers(min_value=INT_MIN, max_value=INT_MAX) | st.binary(max_size=24),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.binary(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)


@given(values)
def test_round_trip(value: BValue) -> None:
    assert bdecode(bencode(value)) == value


@given(values)
def test_decoding_then_encoding_reproduces_the_input(value: BValue) -> None:
    # The property infohashes rely on: whatever bdecode accepts re-encodes to the same bytes.
    data = bencode(value)
    assert bencode(bdecode(data)) == data


def test_known_encodings() -> None:
    assert bencode(0) == b"i0e"
    assert bencode(-42) == b"i-42e"
    assert bencode(b"") == b"0:"
    assert bencode(b"spam") == b"4:spam"
    assert bencode([b"spam", 1, []]) == b"l4:spami1elee"
    assert bencode({b"cow": b"moo", b"spam": b"eggs"}) == b"d3:cow3:moo4:spam4:eggse"
    # keys are sorted by raw bytes, whatever order they were given in
    assert bencode({b"b": 1, b"a": 2, b"B": 3}) == b"d1:Bi3e1:ai2e1:bi1ee"
    assert bencode((b"x",)) == b"l1:xe"
    assert bdecode(b"d1:ad1:bl0:i-1eeee") == {b"a": {b"b": [b"", -1]}}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"i01e", "leading zero"),
        (b"i-0e", "-0"),
        (b"i-01e", "leading zero"),
        (b"i-e", "empty integer"),
        (b"ie", "empty integer"),
        (b"i+1e", "other than digits"),
        (b"i 1e", "other than digits"),
        (b"i1_0e", "other than digits"),
        (b"i1.5e", "other than digits"),
        (b"i--1e", "other than digits"),
        (b"i9223372036854775808e", "64 bits"),
        (b"i-9223372036854775809e", "64 bits"),
        (b"i123456789012345678901234e", "within 20"),
        (b"01:a", "leading zero"),
        (b"00:", "leading zero"),
        (b"+1:a", "unexpected byte"),
        (b"d1:bi1e1:ai2ee", "unsorted"),
        (b"d1:ai1e1:ai2ee", "duplicate"),
        (b"d2:abi1e1:bi2e1:ai3ee", "unsorted"),
        (b"di1ei2ee", "not a byte string"),
        (b"dlei1ee", "not a byte string"),
        (b"i1ei2e", "trailing"),
        (b"4:spamx", "trailing"),
        (b"le0:", "trailing"),
        (b"", "ends where a value should start"),
        (b"i12", "not terminated"),
        (b"l", "not terminated"),
        (b"li1e", "not terminated"),
        (b"d", "not terminated"),
        (b"d1:a", "ends where a value should start"),
        (b"5:abc", "past the end"),
        (b"3", "not followed by ':'"),
        (b"1:", "past the end"),
        (b"99999999999999999999:x", "within 19 digits"),
        (b"1a:x", "other than digits"),
        (b"x", "unexpected byte"),
        (b"e", "unexpected byte"),
    ],
)
def test_non_canonical_and_malformed_input_is_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        bdecode(data)


def test_canonical_edge_cases_are_accepted() -> None:
    assert bdecode(b"i0e") == 0
    assert bdecode(b"i-1e") == -1
    assert bdecode(b"i9223372036854775807e") == INT_MAX
    assert bdecode(b"i-9223372036854775808e") == INT_MIN
    assert bdecode(b"0:") == b""
    assert bdecode(b"de") == {}
    assert bdecode(b"d0:i1e1:ai2ee") == {b"": 1, b"a": 2}


def test_announced_length_is_never_allocated() -> None:
    # A 20-byte input announcing 10 GB fails at once, with no allocation.
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="past the end"):
        bdecode(b"9999999999:" + b"x" * 9)
    # Microseconds when idle; only allocating the announced 10 GB would take this long.
    assert time.perf_counter() - started < 1.0


def test_depth_is_bounded() -> None:
    assert bdecode(b"l" * 32 + b"e" * 32, max_depth=32) is not None
    with pytest.raises(DecodeError, match="nested deeper than 32"):
        bdecode(b"l" * 33 + b"e" * 33, max_depth=32)
    with pytest.raises(DecodeError, match="nested deeper than 3"):
        bdecode(b"d1:ad1:bd1:cd1:di1eeeee", max_depth=3)


def test_depth_bomb_is_rejected_quickly() -> None:
    bomb = b"l" * 1_000_000 + b"e" * 1_000_000
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="nested deeper"):
        bdecode(bomb)
    with pytest.raises(DecodeError, match="nested deeper"):
        bdecode(b"d1:a" * 100_000)
    # ~0.1 s idle; a quadratic or recursive decoder takes minutes (or overflows the stack).
    assert time.perf_counter() - started < 5


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        value = bdecode(data)
    except DecodeError:
        return
    assert bencode(value) == data


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.just(0)),
)


@given(values, st.lists(mutations, min_size=1, max_size=4))
def test_mutated_encodings_only_raise_decode_error(
    value: BValue, changes: list[tuple[str, int, int]]
) -> None:
    data = bytearray(bencode(value))
    for kind, position, byte in changes:
        at = position % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= byte
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data.insert(at, byte)
        elif kind == "delete" and at < len(data):
            del data[at]
    try:
        decoded = bdecode(bytes(data))
    except DecodeError:
        return
    assert bencode(decoded) == bytes(data)


@given(st.binary(min_size=1, max_size=40), st.data())
def test_every_truncation_of_a_valid_encoding_is_rejected(key: bytes, data: st.DataObject) -> None:
    encoded = bencode({key: [1, b"xyz", {b"k": -5}]})
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DecodeError):
        bdecode(encoded[:cut])


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        ("text", TypeError),
        (1.5, TypeError),
        (None, TypeError),
        ({"key": 1}, TypeError),
        ({b"k": object()}, TypeError),
        (1 << 63, ValueError),
        (-(1 << 63) - 1, ValueError),
    ],
)
def test_values_without_a_bencode_form_are_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        bencode(value)


def test_bdecode_wants_bytes() -> None:
    with pytest.raises(TypeError):
        bdecode(bytearray(b"i1e"))  # type: ignore[arg-type]
