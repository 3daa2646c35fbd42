"""Core messages: every type round-trips, and any garbage only ever raises ProtocolError."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.canonical import pack_canonical
from wire.errors import DecodeError, ProtocolError
from wire.extensions import make_offers, negotiate
from wire.identity import IdentityProof
from wire.messages import (
    CORE_MESSAGE_IDS,
    ExtensionOffer,
    Goodbye,
    Hello,
    Ping,
    decode_core,
    encode_core,
)
from wire.schema import from_wire, to_wire

from .strategies import records

core_messages = st.one_of(*(records(cls) for cls in CORE_MESSAGE_IDS))


@given(core_messages)
def test_every_core_message_round_trips(message: Any) -> None:
    encoded = encode_core(message)
    assert decode_core(encoded[0], encoded[1:]) == message


@given(records(IdentityProof))
def test_identity_proof_round_trips(proof: IdentityProof) -> None:
    assert from_wire(IdentityProof, to_wire(proof)) == proof


@given(st.integers(0, 255), st.binary(max_size=300))
def test_arbitrary_bodies_only_raise_protocol_errors(message_id: int, body: bytes) -> None:
    try:
        decode_core(message_id, body)
    except ProtocolError:
        pass


@given(core_messages, st.data())
def test_mutated_messages_only_raise_protocol_errors(message: Any, data: st.DataObject) -> None:
    encoded = bytearray(encode_core(message))
    index = data.draw(st.integers(1, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    try:
        decode_core(encoded[0], bytes(encoded[1:]))
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"nonce": -1}, "outside"),
        ({"nonce": "1"}, "expected an integer"),
        ({"nonce": True}, "expected an integer"),
        ({}, "missing field 'nonce'"),
        ({"nonce": 1, "extra": 2}, "unknown field"),
    ],
)
def test_field_checks_name_the_problem(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_core(CORE_MESSAGE_IDS[Ping], pack_canonical(body))


def test_text_limits_and_control_characters() -> None:
    with pytest.raises(DecodeError, match="outside"):
        decode_core(CORE_MESSAGE_IDS[Goodbye], pack_canonical({"reason": "x" * 257}))
    with pytest.raises(DecodeError, match="control"):
        decode_core(CORE_MESSAGE_IDS[Goodbye], pack_canonical({"reason": "a\nb"}))


def test_hello_limits() -> None:
    too_many = {"protocol": 1, "agent": "a", "extensions": {}, "listen": ["x"] * 9}
    with pytest.raises(DecodeError, match="at most 8"):
        decode_core(CORE_MESSAGE_IDS[Hello], pack_canonical(too_many))
    bad_id = {
        "protocol": 1,
        "agent": "a",
        "extensions": {"x": {"version": 1, "message_id": 5}},
        "listen": [],
    }
    with pytest.raises(DecodeError, match="message_id"):
        decode_core(CORE_MESSAGE_IDS[Hello], pack_canonical(bad_id))


def test_unknown_core_id_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="unknown core message id 9"):
        decode_core(9, b"\x80")


def test_encoder_refuses_invalid_records() -> None:
    with pytest.raises(ValueError, match="invalid record"):
        encode_core(Ping(nonce=-5))


def test_negotiation_uses_lower_version_and_each_sides_ids() -> None:
    ours = make_offers({"ks.swarm": 2, "ks.pex": 1, "ks.only-ours": 1})
    theirs = {
        "ks.swarm": ExtensionOffer(version=1, message_id=40),
        "ks.pex": ExtensionOffer(version=3, message_id=33),
        "ks.only-theirs": ExtensionOffer(version=1, message_id=34),
    }
    result = negotiate(ours, theirs)
    assert set(result) == {"ks.swarm", "ks.pex"}
    assert result["ks.swarm"].version == 1
    assert result["ks.swarm"].send_id == 40
    assert result["ks.swarm"].receive_id == ours["ks.swarm"].message_id
    assert result["ks.pex"].version == 1


def test_extension_names_are_checked() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        make_offers({"Bad Name": 1})
