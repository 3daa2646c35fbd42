"""Noise XX / XXpsk0: published test vectors, interop with `noiseprotocol`, every failure mode.

`noise_vectors.json` holds every vector named exactly Noise_XX_25519_ChaChaPoly_BLAKE2b or
Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b from two independent generators (cacophony, which has no
XXpsk0 vector, and flynn/noise); its "source" field names the repositories, files and commits.
The independent implementation is the PyPI `noiseprotocol` package (cryptography's X25519 and
ChaCha20-Poly1305, hashlib's BLAKE2b), which shares no primitive code with our pynacl one.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection

from wire.errors import ChannelError, HandshakeError, LocalProtocolError
from wire.noise import (
    MAX_MESSAGE_LEN,
    TAG_LEN,
    CipherState,
    HandshakeState,
    Pattern,
    protocol_name,
    x25519_public_key,
)

VECTOR_DOC: dict[str, Any] = json.loads(
    Path(__file__).with_name("noise_vectors.json").read_text(encoding="utf-8")
)
VECTORS: list[dict[str, Any]] = VECTOR_DOC["vectors"]
PATTERNS: tuple[Pattern, ...] = ("XX", "XXpsk0")

# Fixed keys for the hand-written tests; any 32 bytes are a valid X25519 private key.
INIT_STATIC = bytes(range(1, 33))
RESP_STATIC = bytes(range(101, 133))
INIT_EPHEMERAL = bytes(range(33, 65))
RESP_EPHEMERAL = bytes(range(133, 165))
PSK = b"the network capability key, 32B!"
OTHER_PSK = b"some other network's key, 32 B!!"
PROLOGUE = b"kinswarm test"
PAYLOADS = (b"hello", b"", b"from the initiator")

# Low-order X25519 u-coordinates (libsodium's blocklist plus their top-bit-set aliases, which
# X25519 masks off): a DH with any of them gives the all-zero secret, which we must refuse.
LOW_ORDER_POINTS = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes([0xEC]) + b"\xff" * 30 + b"\x7f",  # p - 1
    bytes([0xED]) + b"\xff" * 30 + b"\x7f",  # p
    bytes([0xEE]) + b"\xff" * 30 + b"\x7f",  # p + 1
    bytes(31) + b"\x80",  # 0 with the masked top bit set
    bytes([1]) + bytes(30) + b"\x80",  # 1 with the masked top bit set
]


def _psk_for(pattern: Pattern, psk: bytes) -> bytes | None:
    return psk if pattern == "XXpsk0" else None


def ours(
    pattern: Pattern,
    *,
    initiator: bool,
    prologue: bytes = PROLOGUE,
    psk: bytes = PSK,
    static: bytes | None = None,
    ephemeral: bytes | None = None,
) -> HandshakeState:
    if static is None:
        static = INIT_STATIC if initiator else RESP_STATIC
    if ephemeral is None:
        ephemeral = INIT_EPHEMERAL if initiator else RESP_EPHEMERAL
    return HandshakeState(
        pattern=pattern,
        initiator=initiator,
        prologue=prologue,
        static_private_key=static,
        ephemeral_private_key=ephemeral,
        psk=_psk_for(pattern, psk),
    )


def theirs(
    pattern: Pattern,
    *,
    initiator: bool,
    prologue: bytes = PROLOGUE,
    psk: bytes = PSK,
    static: bytes | None = None,
    ephemeral: bytes | None = None,
    ephemeral_public: bytes | None = None,
) -> NoiseConnection:
    """A `noiseprotocol` connection. With no ephemeral given it draws its own at random."""
    if static is None:
        static = INIT_STATIC if initiator else RESP_STATIC
    conn = NoiseConnection.from_name(protocol_name(pattern))
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_prologue(prologue)
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static)
    if ephemeral is not None:
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    if ephemeral_public is not None:  # public only: lets us send a point we have no key for
        conn.set_keypair_from_public_bytes(Keypair.EPHEMERAL, ephemeral_public)
    if pattern == "XXpsk0":
        conn.set_psks(psk=psk)
    with warnings.catch_warnings():  # it warns (rightly, for production) about a fixed ephemeral
        warnings.simplefilter("ignore")
        conn.start_handshake()
    return conn


def handshake(
    initiator: HandshakeState, responder: HandshakeState, payloads: tuple[bytes, ...] = PAYLOADS
) -> list[bytes]:
    """Run a full handshake between two of ours; return the three messages."""
    messages = []
    for index, payload in enumerate(payloads):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        message = writer.write_message(payload)
        assert reader.read_message(message) == payload
        messages.append(message)
    assert initiator.finished and responder.finished
    return messages


def finished_pair(pattern: Pattern = "XXpsk0") -> tuple[HandshakeState, HandshakeState]:
    initiator, responder = ours(pattern, initiator=True), ours(pattern, initiator=False)
    handshake(initiator, responder)
    return initiator, responder


def clean_messages(pattern: Pattern) -> list[bytes]:
    return handshake(ours(pattern, initiator=True), ours(pattern, initiator=False))


# --- 1. Published test vectors ------------------------------------------------------------


def _vector_id(vector: dict[str, Any]) -> str:
    repo = vector["source"].split(":")[0]
    index = VECTORS.index(vector)
    return f"{index}-{repo}-{vector['protocol_name'].split('_')[1]}"


def _pattern_of(vector: dict[str, Any]) -> Pattern:
    return cast(Pattern, vector["protocol_name"].split("_")[1])


def test_vector_file_names_its_sources_and_covers_both_patterns() -> None:
    sources = {f"{s['repo']}:{s['path']}" for s in VECTOR_DOC["source"]}
    assert sources == {
        "haskell-cryptography/cacophony:vectors/cacophony.txt",
        "flynn/noise:vectors.txt",
    }
    assert {v["source"] for v in VECTORS} == sources
    names = {v["protocol_name"] for v in VECTORS}
    assert names == {protocol_name(p).decode() for p in PATTERNS}
    assert any(v["handshake_hash"] for v in VECTORS)
    for vector in VECTORS:  # handshake senders must follow the XX turn order
        assert [m["sender"] for m in vector["messages"][:3]] == [
            "initiator",
            "responder",
            "initiator",
        ]
        assert len(vector["messages"]) > 3  # and there are transport messages to check


@pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
def test_published_vector(vector: dict[str, Any]) -> None:
    """Replay every message in order; each ciphertext must match byte for byte."""
    pattern = _pattern_of(vector)
    h = bytes.fromhex
    init_psks, resp_psks = vector["init_psks"], vector["resp_psks"]
    assert len(init_psks) == len(resp_psks) == (1 if pattern == "XXpsk0" else 0)
    states = {
        "initiator": HandshakeState(
            pattern=pattern,
            initiator=True,
            prologue=h(vector["init_prologue"]),
            static_private_key=h(vector["init_static"]),
            ephemeral_private_key=h(vector["init_ephemeral"]),
            psk=h(init_psks[0]) if init_psks else None,
        ),
        "responder": HandshakeState(
            pattern=pattern,
            initiator=False,
            prologue=h(vector["resp_prologue"]),
            static_private_key=h(vector["resp_static"]),
            ephemeral_private_key=h(vector["resp_ephemeral"]),
            psk=h(resp_psks[0]) if resp_psks else None,
        ),
    }
    other = {"initiator": "responder", "responder": "initiator"}
    handshake_messages, transport_messages = vector["messages"][:3], vector["messages"][3:]

    for message in handshake_messages:
        payload, expected = h(message["payload"]), h(message["ciphertext"])
        writer, reader = states[message["sender"]], states[other[message["sender"]]]
        assert writer.write_message(payload).hex() == expected.hex()
        assert reader.read_message(expected) == payload

    initiator, responder = states["initiator"], states["responder"]
    assert initiator.finished and responder.finished
    assert initiator.handshake_hash == responder.handshake_hash
    if vector["handshake_hash"] is not None:
        assert initiator.handshake_hash.hex() == vector["handshake_hash"]
    assert initiator.remote_static_key == x25519_public_key(h(vector["resp_static"]))
    assert responder.remote_static_key == x25519_public_key(h(vector["init_static"]))

    ciphers = {side: state.split() for side, state in states.items()}
    for message in transport_messages:
        payload, expected = h(message["payload"]), h(message["ciphertext"])
        send, _ = ciphers[message["sender"]]
        _, receive = ciphers[other[message["sender"]]]
        assert send.encrypt_with_ad(b"", payload).hex() == expected.hex()
        assert receive.decrypt_with_ad(b"", expected) == payload


@pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
def test_noiseprotocol_agrees_with_the_vectors(vector: dict[str, Any]) -> None:
    """The oracle used below reproduces the same vectors, so agreeing with it means something."""
    pattern = _pattern_of(vector)
    h = bytes.fromhex
    psk = h(vector["init_psks"][0]) if vector["init_psks"] else PSK
    conns = {
        "initiator": theirs(
            pattern,
            initiator=True,
            prologue=h(vector["init_prologue"]),
            psk=psk,
            static=h(vector["init_static"]),
            ephemeral=h(vector["init_ephemeral"]),
        ),
        "responder": theirs(
            pattern,
            initiator=False,
            prologue=h(vector["resp_prologue"]),
            psk=psk,
            static=h(vector["resp_static"]),
            ephemeral=h(vector["resp_ephemeral"]),
        ),
    }
    other = {"initiator": "responder", "responder": "initiator"}
    for index, message in enumerate(vector["messages"]):
        payload, expected = h(message["payload"]), h(message["ciphertext"])
        writer, reader = conns[message["sender"]], conns[other[message["sender"]]]
        if index < 3:
            assert bytes(writer.write_message(payload)) == expected
            assert bytes(reader.read_message(expected)) == payload
        else:
            assert writer.encrypt(payload) == expected
            assert reader.decrypt(expected) == payload
    if vector["handshake_hash"] is not None:
        assert conns["initiator"].get_handshake_hash().hex() == vector["handshake_hash"]


# --- 2. Interop with noiseprotocol, both roles --------------------------------------------

TRANSPORT_PAYLOADS = [b"", b"x", b"frame two", bytes(range(256)) * 4, b"\xa5" * (65535 - TAG_LEN)]


@pytest.mark.parametrize("our_role", ["initiator", "responder"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_interop_with_noiseprotocol(pattern: Pattern, our_role: str) -> None:
    we_initiate = our_role == "initiator"
    me = ours(pattern, initiator=we_initiate)
    them = theirs(pattern, initiator=not we_initiate)  # its own random ephemeral

    for index, payload in enumerate(PAYLOADS):
        if (index % 2 == 0) == we_initiate:
            assert bytes(them.read_message(me.write_message(payload))) == payload
        else:
            assert me.read_message(bytes(them.write_message(payload))) == payload

    assert me.finished and them.handshake_finished
    assert me.handshake_hash == them.get_handshake_hash()
    their_static = RESP_STATIC if we_initiate else INIT_STATIC
    assert me.remote_static_key == x25519_public_key(their_static)

    send, receive = me.split()
    for payload in TRANSPORT_PAYLOADS:
        assert them.decrypt(send.encrypt_with_ad(b"", payload)) == payload
        assert receive.decrypt_with_ad(b"", them.encrypt(payload)) == payload
    # Interleaved, several in a row each way: the nonces must stay in step.
    for payload in TRANSPORT_PAYLOADS[:3]:
        frame = them.encrypt(payload)
        assert receive.decrypt_with_ad(b"", frame) == payload
    for payload in TRANSPORT_PAYLOADS[:3]:
        assert them.decrypt(send.encrypt_with_ad(b"", payload)) == payload


# --- 3. Failures --------------------------------------------------------------------------


@pytest.mark.parametrize("wrong_side", ["initiator", "responder"])
def test_wrong_psk_is_caught_by_the_responder_reading_message_0(wrong_side: str) -> None:
    """psk0 keys message 0's payload tag, so the mismatch shows at the very first message,
    before the responder has revealed anything (its static key only goes out in message 1)."""
    initiator = ours("XXpsk0", initiator=True, psk=OTHER_PSK if wrong_side == "initiator" else PSK)
    responder = ours("XXpsk0", initiator=False, psk=OTHER_PSK if wrong_side == "responder" else PSK)
    message_0 = initiator.write_message(b"hello")
    with pytest.raises(HandshakeError):
        responder.read_message(message_0)
    with pytest.raises(LocalProtocolError):  # the failed side can never go on to message 1
        responder.write_message(b"")


def test_wrong_psk_from_noiseprotocol_is_caught_at_message_0() -> None:
    them = theirs("XXpsk0", initiator=True, psk=OTHER_PSK)
    me = ours("XXpsk0", initiator=False)
    with pytest.raises(HandshakeError):
        me.read_message(bytes(them.write_message(b"")))  # even an empty payload has a tag


def test_peer_without_psk_is_caught() -> None:
    # XX initiator -> XXpsk0 responder: message 0 has no tag where one is required.
    for payload in (b"", b"a payload of some length"):
        responder = ours("XXpsk0", initiator=False)
        with pytest.raises(HandshakeError):
            responder.read_message(ours("XX", initiator=True).write_message(payload))
    # XXpsk0 initiator -> XX responder: the XX side reads message 0 as plaintext and answers,
    # and the initiator rejects that answer at message 1.
    initiator, responder = ours("XXpsk0", initiator=True), ours("XX", initiator=False)
    responder.read_message(initiator.write_message(b"hi"))
    with pytest.raises(HandshakeError):
        initiator.read_message(responder.write_message(b""))


# Where a flipped bit in handshake message i is detected. Plain XX's message 0 carries no tag
# (there is no key yet), so a change there is only caught by the initiator reading message 1:
# the responder mixed the altered bytes into its transcript, and everything it encrypts
# afterwards fails to authenticate. With psk0 message 0 is already authenticated.
DETECTED_AT = {
    ("XX", 0): 1,
    ("XX", 1): 1,
    ("XX", 2): 2,
    ("XXpsk0", 0): 0,
    ("XXpsk0", 1): 1,
    ("XXpsk0", 2): 2,
}


def detect(
    pattern: Pattern, tamper_index: int, tamper: Callable[[bytes], bytes]
) -> tuple[int, str]:
    """Handshake with message `tamper_index` altered in flight: where did HandshakeError occur?"""
    initiator, responder = ours(pattern, initiator=True), ours(pattern, initiator=False)
    for index, payload in enumerate(PAYLOADS):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        try:
            message = writer.write_message(payload)
        except HandshakeError:
            return index, "write"
        if index == tamper_index:
            message = tamper(message)
        try:
            reader.read_message(message)
        except HandshakeError:
            with pytest.raises(LocalProtocolError):  # and that side is dead from then on
                reader.read_message(message)
            return index, "read"
    pytest.fail(f"tampering with message {tamper_index} went unnoticed")


def flip(position: int, bit: int) -> Callable[[bytes], bytes]:
    def tamper(message: bytes) -> bytes:
        out = bytearray(message)
        out[position] ^= 1 << bit
        return bytes(out)

    return tamper


@pytest.mark.parametrize("message_index", [0, 1, 2])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_flipped_bit_in_a_handshake_message_fails(
    pattern: Pattern, message_index: int
) -> None:
    length = len(clean_messages(pattern)[message_index])
    expected = (DETECTED_AT[(pattern, message_index)], "read")
    for position in range(length):
        # One bit per byte, cycling through the bit positions, plus every byte's top bit (which
        # X25519 ignores in a public key, but the transcript hash does not).
        for bit in {position % 8, 7}:
            assert detect(pattern, message_index, flip(position, bit)) == expected, (position, bit)


# The shortest well-formed message i: e, then s (32 + tag) and the payload's tag once keyed.
MIN_LENGTH = {
    ("XX", 0): 32,
    ("XXpsk0", 0): 32 + TAG_LEN,
    ("XX", 1): 32 + 32 + TAG_LEN + TAG_LEN,
    ("XXpsk0", 1): 32 + 32 + TAG_LEN + TAG_LEN,
    ("XX", 2): 32 + TAG_LEN + TAG_LEN,
    ("XXpsk0", 2): 32 + TAG_LEN + TAG_LEN,
}


@pytest.mark.parametrize("message_index", [0, 1, 2])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_message_too_short_fails_where_it_is_read(pattern: Pattern, message_index: int) -> None:
    assert len(ours(pattern, initiator=True).write_message(b"")) == MIN_LENGTH[(pattern, 0)]
    for length in range(MIN_LENGTH[(pattern, message_index)]):

        def truncate(message: bytes, length: int = length) -> bytes:
            return message[:length]

        assert detect(pattern, message_index, truncate) == (message_index, "read"), length


@pytest.mark.parametrize("message_index", [1, 2])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_truncated_or_extended_keyed_message_fails(pattern: Pattern, message_index: int) -> None:
    for tamper in (lambda m: m[:-1], lambda m: m + b"\x00", lambda m: m[: len(m) // 2]):
        assert detect(pattern, message_index, tamper) == (message_index, "read")


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + p.hex()[-2:])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_low_order_ephemeral_from_the_responder(pattern: Pattern, point: bytes) -> None:
    """The initiator's `ee` DH meets the bad point while reading message 1."""
    initiator, responder = ours(pattern, initiator=True), ours(pattern, initiator=False)
    responder.read_message(initiator.write_message(b""))
    message_1 = point + responder.write_message(b"")[32:]
    with pytest.raises(HandshakeError, match="invalid X25519 public key"):
        initiator.read_message(message_1)
    with pytest.raises(LocalProtocolError):
        initiator.write_message(b"")


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + p.hex()[-2:])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_low_order_ephemeral_from_the_initiator(pattern: Pattern, point: bytes) -> None:
    """Message 0 has no DH, so the responder meets the bad point at its first DH (`ee`),
    while writing message 1: it refuses and sends nothing (its static key stays private).
    noiseprotocol builds the message 0, valid in every other respect (psk tag included)."""
    them = theirs(pattern, initiator=True, ephemeral_public=point)
    message_0 = bytes(them.write_message(b"payload"))
    assert message_0[:32] == point
    responder = ours(pattern, initiator=False)
    assert responder.read_message(message_0) == b"payload"
    with pytest.raises(HandshakeError, match="invalid X25519 public key"):
        responder.write_message(b"")
    with pytest.raises(LocalProtocolError):  # no retry from the poisoned transcript
        responder.write_message(b"")


def test_oversize_payload_is_refused_and_the_state_is_dead() -> None:
    initiator, responder = ours("XX", initiator=True), ours("XX", initiator=False)
    responder.read_message(initiator.write_message(b""))
    with pytest.raises(LocalProtocolError, match="65535"):
        responder.write_message(b"x" * MAX_MESSAGE_LEN)
    # It half-advanced the transcript; writing again must not emit a message from it.
    with pytest.raises(LocalProtocolError):
        responder.write_message(b"ok")


def test_an_oversize_incoming_message_fails() -> None:
    responder = ours("XX", initiator=False)
    with pytest.raises(HandshakeError, match="65535"):
        responder.read_message(bytes(MAX_MESSAGE_LEN + 1))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_calls_out_of_turn_are_local_errors_and_harmless(pattern: Pattern) -> None:
    initiator, responder = ours(pattern, initiator=True), ours(pattern, initiator=False)
    with pytest.raises(LocalProtocolError):
        initiator.read_message(b"\x00" * 64)  # the initiator writes first
    with pytest.raises(LocalProtocolError):
        responder.write_message(b"")
    with pytest.raises(LocalProtocolError):
        initiator.split()  # not finished
    message_0 = initiator.write_message(PAYLOADS[0])
    with pytest.raises(LocalProtocolError):
        initiator.write_message(b"")  # twice in a row
    assert responder.read_message(message_0) == PAYLOADS[0]
    with pytest.raises(LocalProtocolError):
        responder.read_message(message_0)  # twice in a row
    message_1 = responder.write_message(PAYLOADS[1])
    with pytest.raises(LocalProtocolError):
        responder.split()
    assert initiator.read_message(message_1) == PAYLOADS[1]
    message_2 = initiator.write_message(PAYLOADS[2])
    assert responder.read_message(message_2) == PAYLOADS[2]
    # The refused calls changed nothing: the handshake matches an undisturbed one.
    assert [message_0, message_1, message_2] == clean_messages(pattern)
    for state in (initiator, responder):
        assert state.finished
        with pytest.raises(LocalProtocolError):
            state.write_message(b"")
        with pytest.raises(LocalProtocolError):
            state.read_message(message_2)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_state_is_dead_after_a_failed_read(pattern: Pattern) -> None:
    initiator, responder = ours(pattern, initiator=True), ours(pattern, initiator=False)
    responder.read_message(initiator.write_message(b""))
    message_1 = responder.write_message(b"")
    with pytest.raises(HandshakeError):
        initiator.read_message(flip(len(message_1) - 1, 0)(message_1))
    with pytest.raises(LocalProtocolError):
        initiator.read_message(message_1)  # not even the genuine message is accepted now
    with pytest.raises(LocalProtocolError):
        initiator.write_message(b"")


def _transport(pattern: Pattern = "XXpsk0") -> tuple[CipherState, CipherState, list[bytes]]:
    initiator, responder = finished_pair(pattern)
    send, _ = initiator.split()
    _, receive = responder.split()
    frames = [send.encrypt_with_ad(b"", f"frame {i}".encode()) for i in range(4)]
    return send, receive, frames


@pytest.mark.parametrize("pattern", PATTERNS)
def test_transport_in_order_succeeds_both_ways(pattern: Pattern) -> None:
    initiator, responder = finished_pair(pattern)
    (i_send, i_receive), (r_send, r_receive) = initiator.split(), responder.split()
    for i in range(5):
        assert r_receive.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", bytes([i]) * i)) == (
            bytes([i]) * i
        )
        assert i_receive.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", b"r" * i)) == b"r" * i


def test_replayed_transport_message_fails() -> None:
    _, receive, frames = _transport()
    assert receive.decrypt_with_ad(b"", frames[0]) == b"frame 0"
    with pytest.raises(ChannelError):
        receive.decrypt_with_ad(b"", frames[0])
    assert receive.decrypt_with_ad(b"", frames[1]) == b"frame 1"
    with pytest.raises(ChannelError):
        receive.decrypt_with_ad(b"", frames[0])


def test_reordered_transport_messages_fail() -> None:
    _, receive, frames = _transport()
    with pytest.raises(ChannelError):
        receive.decrypt_with_ad(b"", frames[1])


def test_dropped_transport_message_fails() -> None:
    _, receive, frames = _transport()
    assert receive.decrypt_with_ad(b"", frames[0]) == b"frame 0"
    with pytest.raises(ChannelError):
        receive.decrypt_with_ad(b"", frames[2])  # frame 1 never arrived


def test_tampered_or_reflected_transport_message_fails() -> None:
    initiator, responder = finished_pair()
    send, own_receive = initiator.split()
    _, receive = responder.split()
    frame = send.encrypt_with_ad(b"", b"payload")
    for position in range(len(frame)):
        with pytest.raises(ChannelError):
            receive.decrypt_with_ad(b"", flip(position, position % 8)(frame))
    with pytest.raises(ChannelError):
        receive.decrypt_with_ad(b"", frame[:-1])
    with pytest.raises(ChannelError):
        own_receive.decrypt_with_ad(b"", frame)  # our own frame sent back to us
    assert receive.decrypt_with_ad(b"", frame) == b"payload"


def test_transport_keys_differ_between_sessions() -> None:
    """A fresh ephemeral gives fresh keys: a frame from one session fails in another."""
    initiator, _ = finished_pair()
    send, _ = initiator.split()
    other_initiator = ours("XXpsk0", initiator=True, ephemeral=bytes(range(200, 232)))
    other_responder = ours("XXpsk0", initiator=False)
    handshake(other_initiator, other_responder)
    _, other_receive = other_responder.split()
    with pytest.raises(ChannelError):
        other_receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"hello"))


# --- 4. Property: byte-for-byte agreement with noiseprotocol -------------------------------

keys = st.binary(min_size=32, max_size=32)


@settings(max_examples=50, deadline=None)
@given(
    pattern=st.sampled_from(PATTERNS),
    init_static=keys,
    resp_static=keys,
    init_ephemeral=keys,
    resp_ephemeral=keys,
    psk=keys,
    prologue=st.binary(max_size=200),
    payloads=st.lists(st.binary(max_size=1000), min_size=5, max_size=5),
)
def test_every_byte_matches_noiseprotocol(
    pattern: Pattern,
    init_static: bytes,
    resp_static: bytes,
    init_ephemeral: bytes,
    resp_ephemeral: bytes,
    psk: bytes,
    prologue: bytes,
    payloads: list[bytes],
) -> None:
    def mine(initiator: bool) -> HandshakeState:
        return ours(
            pattern,
            initiator=initiator,
            prologue=prologue,
            psk=psk,
            static=init_static if initiator else resp_static,
            ephemeral=init_ephemeral if initiator else resp_ephemeral,
        )

    def reference(initiator: bool) -> NoiseConnection:
        return theirs(
            pattern,
            initiator=initiator,
            prologue=prologue,
            psk=psk,
            static=init_static if initiator else resp_static,
            ephemeral=init_ephemeral if initiator else resp_ephemeral,
        )

    my_states = (mine(True), mine(False))
    their_conns = (reference(True), reference(False))
    for index in range(3):
        writer = index % 2  # 0: initiator, 1: responder
        mine_out = my_states[writer].write_message(payloads[index])
        theirs_out = bytes(their_conns[writer].write_message(payloads[index]))
        assert mine_out == theirs_out
        # Each reads the other's (identical) message, so both pairings are exercised.
        assert my_states[1 - writer].read_message(theirs_out) == payloads[index]
        assert bytes(their_conns[1 - writer].read_message(mine_out)) == payloads[index]

    assert my_states[0].handshake_hash == my_states[1].handshake_hash
    assert my_states[0].handshake_hash == their_conns[0].get_handshake_hash()
    assert my_states[0].remote_static_key == x25519_public_key(resp_static)
    assert my_states[1].remote_static_key == x25519_public_key(init_static)

    (i_send, i_receive), (r_send, r_receive) = my_states[0].split(), my_states[1].split()
    frame = i_send.encrypt_with_ad(b"", payloads[3])
    assert frame == their_conns[0].encrypt(payloads[3])
    assert r_receive.decrypt_with_ad(b"", frame) == payloads[3]
    assert their_conns[1].decrypt(frame) == payloads[3]
    frame = r_send.encrypt_with_ad(b"", payloads[4])
    assert frame == their_conns[1].encrypt(payloads[4])
    assert i_receive.decrypt_with_ad(b"", frame) == payloads[4]
    assert their_conns[0].decrypt(frame) == payloads[4]
