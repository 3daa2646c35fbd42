"""File aliases: the sender's numbering stays bounded and the receiver's strict."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.aliases import IncomingAliases, OutgoingAliases
from wire.errors import DecodeError
from wire.swarm import MAX_FILE_ALIASES, FileAlias, HaveByAlias, decode, encode


def root(i: int) -> bytes:
    return i.to_bytes(32, "big")


def test_a_file_is_declared_once_then_named_by_its_number() -> None:
    out = OutgoingAliases()
    assert out.number_for(root(1), 16384) == (0, FileAlias(0, root(1), 16384))
    assert out.number_for(root(2), 16384) == (1, FileAlias(1, root(2), 16384))
    assert out.number_for(root(1), 16384) == (0, None)
    # The same root in another piece length is another file to a Have.
    assert out.number_for(root(1), 65536) == (2, FileAlias(2, root(1), 65536))
    assert len(out) == 3


def test_the_least_recently_used_number_is_rebound_once_all_are_given() -> None:
    out = OutgoingAliases(limit=2)
    out.number_for(root(1), 16384)
    out.number_for(root(2), 16384)
    out.number_for(root(1), 16384)  # root 2 is now the least recently used
    assert out.number_for(root(3), 16384) == (1, FileAlias(1, root(3), 16384))
    assert out.number_for(root(1), 16384) == (0, None)
    assert out.number_for(root(2), 16384) == (1, FileAlias(1, root(2), 16384))
    assert len(out) == 2


def test_the_receiver_follows_declarations_and_rebinds() -> None:
    incoming = IncomingAliases()
    incoming.declare(FileAlias(0, root(1), 16384))
    incoming.declare(FileAlias(1, root(2), 65536))
    assert incoming.resolve(HaveByAlias(1, (7,))) == (root(2), 65536)
    incoming.declare(FileAlias(0, root(3), 16384))
    assert incoming.resolve(HaveByAlias(0, (7,))) == (root(3), 16384)
    assert len(incoming) == 2


def test_a_skipped_number_is_a_protocol_violation() -> None:
    incoming = IncomingAliases()
    with pytest.raises(DecodeError, match="next new number is 0"):
        incoming.declare(FileAlias(1, root(1), 16384))


def test_a_number_beyond_the_limit_is_a_protocol_violation() -> None:
    incoming = IncomingAliases(limit=2)
    incoming.declare(FileAlias(0, root(1), 16384))
    incoming.declare(FileAlias(1, root(2), 16384))
    with pytest.raises(DecodeError, match="at most 2"):
        incoming.declare(FileAlias(2, root(3), 16384))
    assert len(incoming) == 2


def test_a_have_for_an_undeclared_number_is_a_protocol_violation() -> None:
    incoming = IncomingAliases()
    incoming.declare(FileAlias(0, root(1), 16384))
    with pytest.raises(DecodeError, match="never declared"):
        incoming.resolve(HaveByAlias(1, (0,)))


def test_limits_are_checked() -> None:
    for bad in (0, MAX_FILE_ALIASES + 1):
        with pytest.raises(ValueError):
            OutgoingAliases(bad)
        with pytest.raises(ValueError):
            IncomingAliases(bad)


@given(
    st.integers(1, 8),
    st.lists(st.tuples(st.integers(0, 20), st.sampled_from([1 << 14, 1 << 16])), max_size=200),
)
def test_a_receiver_fed_the_sender_s_messages_always_resolves_what_was_meant(
    limit: int, haves: list[tuple[int, int]]
) -> None:
    """Whatever order files are announced in, through the wire and any rebinding, every Have
    by alias resolves on the other side to the file the sender meant, and neither table
    outgrows the limit."""
    out, incoming = OutgoingAliases(limit), IncomingAliases(limit)
    rng = random.Random(limit)
    for index, piece_length in haves:
        number, declaration = out.number_for(root(index), piece_length)
        if declaration is not None:
            received = decode(encode(declaration))
            assert isinstance(received, FileAlias)
            incoming.declare(received)
        have = decode(encode(HaveByAlias(number, (rng.randrange(100),))))
        assert isinstance(have, HaveByAlias)
        assert incoming.resolve(have) == (root(index), piece_length)
        assert len(out) <= limit and len(incoming) <= limit
