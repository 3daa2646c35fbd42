"""The sans-IO connection core, two instances wired back to back (no sockets, no event loop)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import aead
from wire.connection import (
    AESGCM_CIPHER,
    ConnectionClosed,
    ExtensionMessage,
    HandshakeCompleted,
    HelloReceived,
    PongReceived,
    SecureConnection,
    State,
)
from wire.errors import ChannelError, HandshakeError, ProtocolError
from wire.identity import LocalIdentity
from wire.messages import SwitchCipher


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


ALICE = LocalIdentity(seed("alice"))
BOB = LocalIdentity(seed("bob"))
MALLORY = LocalIdentity(seed("mallory"))
KEY = seed("network key")
OTHER_KEY = seed("other key")


def initiator(**kwargs: object) -> SecureConnection:
    kwargs.setdefault("extensions", {"ks.test": 1})
    return SecureConnection.initiator(
        ALICE,
        ephemeral_private_key=seed("alice eph"),
        **kwargs,  # type: ignore[arg-type]
    )


def responder(identity: LocalIdentity = BOB, **kwargs: object) -> SecureConnection:
    kwargs.setdefault("extensions", {"ks.test": 1})
    return SecureConnection.responder(
        identity,
        ephemeral_private_key=seed("bob eph"),
        **kwargs,  # type: ignore[arg-type]
    )


def transfer(source: SecureConnection, target: SecureConnection, *, chunk: int = 0) -> bytes:
    data = source.data_to_send()
    if chunk:
        for start in range(0, len(data), chunk):
            target.receive_data(data[start : start + chunk])
    elif data:
        target.receive_data(data)
    return data


def handshake(a: SecureConnection, b: SecureConnection, *, chunk: int = 0) -> None:
    for _ in range(3):
        transfer(a, b, chunk=chunk)
        transfer(b, a, chunk=chunk)


def events(connection: SecureConnection) -> list[object]:
    out = []
    while (event := connection.next_event()) is not None:
        out.append(event)
    return out


@pytest.mark.parametrize("chunk", [0, 1, 7])
@pytest.mark.parametrize("with_key", [False, True])
def test_handshake_authenticates_both_sides(chunk: int, with_key: bool) -> None:
    a = initiator(capability_key=KEY if with_key else None)
    b = responder(capability_keys=[OTHER_KEY, KEY] if with_key else [], allow_open=not with_key)
    handshake(a, b, chunk=chunk)
    assert a.state is State.OPEN and b.state is State.OPEN
    a_events, b_events = events(a), events(b)
    assert a_events[0] == HandshakeCompleted(
        b_events[0].remote.__class__(BOB.public_key),
        0 if with_key else None,  # type: ignore[attr-defined]
    )
    assert isinstance(b_events[0], HandshakeCompleted)
    assert b_events[0].remote.node_id == ALICE.node_id
    assert b_events[0].capability_key_index == (1 if with_key else None)
    assert isinstance(a_events[1], HelloReceived) and isinstance(b_events[1], HelloReceived)
    assert set(a_events[1].extensions) == {"ks.test"}


def test_extension_messages_pings_and_goodbye() -> None:
    a, b = initiator(), responder()
    handshake(a, b)
    events(a), events(b)
    a.send_extension("ks.test", b"payload")
    nonce = a.ping()
    transfer(a, b)
    assert events(b) == [ExtensionMessage("ks.test", b"payload")]
    transfer(b, a)  # the pong, sent by the core without being asked
    assert events(a) == [PongReceived(nonce)]
    b.close("finished")
    transfer(b, a)
    assert events(a) == [ConnectionClosed("finished", by_remote=True)]
    assert a.state is State.CLOSED


def test_wrong_capability_key_fails_at_message_one_and_reveals_nothing() -> None:
    a = initiator(capability_key=OTHER_KEY)
    b = responder(capability_keys=[KEY], allow_open=False)
    data = a.data_to_send()
    with pytest.raises(HandshakeError, match="does not hold any of our network capability keys"):
        b.receive_data(data)
    assert b.data_to_send() == b""  # the responder never sent its static key or anything else
    assert b.remote is None
    # The initiator's message 1 carries only an ephemeral key: its identity is not in it.
    assert ALICE.public_key not in data and ALICE.noise_static_public_key not in data


def test_open_handshake_refused_by_a_keyed_node() -> None:
    with pytest.raises(HandshakeError, match="requires a network capability key"):
        responder(capability_keys=[KEY], allow_open=False).receive_data(initiator().data_to_send())


def test_keyed_handshake_refused_by_a_node_without_keys() -> None:
    with pytest.raises(HandshakeError, match="we hold no keys"):
        responder().receive_data(initiator(capability_key=KEY).data_to_send())


@pytest.mark.parametrize("index", [0, 3, 4, 5, 6])
def test_tampered_preamble_fails(index: int) -> None:
    a, b = initiator(), responder()
    data = bytearray(a.data_to_send())
    data[index] ^= 0x01
    with pytest.raises(HandshakeError):
        b.receive_data(bytes(data))
        transfer(b, a)


@pytest.mark.parametrize("message", [1, 2, 3])
def test_any_flipped_handshake_bit_fails(message: int) -> None:
    a, b = initiator(), responder()
    parties = [(a, b), (b, a), (a, b)]
    for number, (source, target) in enumerate(parties, start=1):
        data = bytearray(source.data_to_send())
        if number == message:
            # Message 3 is followed by Alice's encrypted Hello: flip inside message 3 itself.
            data[10 if number == 3 else -5] ^= 0x40
        if number == message and number == 1:
            # Message 1 of XX is unauthenticated; a changed ephemeral key surfaces at message 2.
            target.receive_data(bytes(data))
            with pytest.raises(HandshakeError):
                source.receive_data(target.data_to_send())
            return
        if number == message:
            with pytest.raises(HandshakeError):
                target.receive_data(bytes(data))
            return
        target.receive_data(bytes(data))


def test_replayed_handshake_cannot_impersonate() -> None:
    # Record a full handshake between Alice and Bob.
    a, b = initiator(), responder()
    message_1 = a.data_to_send()
    b.receive_data(message_1)
    a.receive_data(b.data_to_send())
    message_3 = a.data_to_send()
    # An attacker replays Alice's messages to a fresh Bob (new ephemeral key).
    fresh_bob = SecureConnection.responder(
        BOB, ephemeral_private_key=seed("bob eph 2"), extensions={}
    )
    fresh_bob.receive_data(message_1)
    fresh_bob.data_to_send()
    with pytest.raises(HandshakeError):
        fresh_bob.receive_data(message_3)
    assert fresh_bob.remote is None


def test_swapped_identity_proof_is_rejected() -> None:
    class Impostor(LocalIdentity):
        """Mallory's keys, but presenting Bob's identity proof."""

    impostor = Impostor(seed("mallory"))
    impostor.proof = BOB.proof
    a, b = initiator(), responder(identity=impostor)
    transfer(a, b)
    with pytest.raises(HandshakeError, match="did not sign its Noise static key"):
        transfer(b, a)


def test_expected_remote_id_is_enforced() -> None:
    a, b = initiator(expected_remote_id=MALLORY.node_id), responder()
    transfer(a, b)
    with pytest.raises(HandshakeError, match="expected node"):
        transfer(b, a)


def test_connecting_to_ourselves_is_refused() -> None:
    a, b = initiator(), responder(identity=ALICE)
    transfer(a, b)
    with pytest.raises(HandshakeError, match="ourselves"):
        transfer(b, a)


def open_pair() -> tuple[SecureConnection, SecureConnection]:
    a, b = initiator(), responder()
    handshake(a, b)
    events(a), events(b)
    return a, b


def test_replayed_transport_frame_fails() -> None:
    a, b = open_pair()
    a.send_extension("ks.test", b"once")
    frame = a.data_to_send()
    b.receive_data(frame)
    with pytest.raises(ChannelError, match="failed authentication"):
        b.receive_data(frame)
    assert b.state is State.FAILED


def test_dropped_transport_frame_fails() -> None:
    a, b = open_pair()
    a.send_extension("ks.test", b"first")
    a.data_to_send()  # lost
    a.send_extension("ks.test", b"second")
    with pytest.raises(ChannelError):
        transfer(a, b)


def test_reordered_transport_frames_fail() -> None:
    a, b = open_pair()
    a.send_extension("ks.test", b"first")
    first = a.data_to_send()
    a.send_extension("ks.test", b"second")
    second = a.data_to_send()
    with pytest.raises(ChannelError):
        b.receive_data(second + first)


def test_tampered_transport_frame_fails() -> None:
    a, b = open_pair()
    a.send_extension("ks.test", b"payload")
    data = bytearray(a.data_to_send())
    data[6] ^= 1
    with pytest.raises(ChannelError):
        b.receive_data(bytes(data))


def test_truncated_stream_is_reported() -> None:
    _, b = open_pair()
    with pytest.raises(ChannelError, match="truncated"):
        b.receive_data(b"")
    a2, b2 = initiator(), responder()
    transfer(a2, b2)
    with pytest.raises(HandshakeError, match="during the handshake"):
        a2.receive_data(b"")


def test_stream_cut_inside_a_frame_is_reported() -> None:
    a, b = open_pair()
    a.send_extension("ks.test", b"payload")
    b.receive_data(a.data_to_send()[:-3])
    with pytest.raises(ProtocolError, match="inside a frame"):
        b.receive_data(b"")


def test_unknown_message_ids_are_skipped() -> None:
    a, b = open_pair()
    a.send_raw(200, b"from the future")
    a.send_raw(20, b"future core message")
    a.send_extension("ks.test", b"still works")
    transfer(a, b)
    assert events(b) == [ExtensionMessage("ks.test", b"still works")]
    assert b.skipped_messages == 2


def test_keepalive_pings_when_quiet_and_times_out_when_silent() -> None:
    a, _ = open_pair()
    a.tick()  # the interval in which the handshake happened: traffic both ways
    assert a.data_to_send() == b""
    a.tick()
    assert a.data_to_send(), "a quiet connection sends a ping on tick"
    for _ in range(2):
        a.tick()
        a.data_to_send()
    with pytest.raises(ChannelError, match="idle timeout"):
        a.tick()
    assert a.state is State.FAILED


def test_keepalive_stays_quiet_when_traffic_flows() -> None:
    a, b = open_pair()
    for _ in range(10):
        a.send_extension("ks.test", b"x")
        transfer(a, b)
        b.send_extension("ks.test", b"y")
        transfer(b, a)
        a.tick()
        assert a.data_to_send() == b""


def test_close_after_failure_still_says_goodbye() -> None:
    a, b = open_pair()
    with pytest.raises(ChannelError):
        b.receive_data(b"\x00\x00\x00\x20" + b"\x00" * 32)
    b.close("bad frame")
    transfer(b, a)
    assert events(a) == [ConnectionClosed("bad frame", by_remote=True)]


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_garbage_to_a_responder_only_raises_protocol_errors(data: bytes) -> None:
    b = responder(capability_keys=[KEY])
    try:
        b.receive_data(data)
    except ProtocolError:
        assert b.state is State.FAILED


@settings(max_examples=200)
@given(st.data())
def test_mutated_conversations_only_raise_protocol_errors(data: st.DataObject) -> None:
    a, b = initiator(), responder()
    position = data.draw(st.integers(0, 5))
    step = 0
    try:
        for _ in range(3):
            for source, target in ((a, b), (b, a)):
                chunk = bytearray(source.data_to_send())
                if step == position and chunk:
                    index = data.draw(st.integers(0, len(chunk) - 1))
                    chunk[index] ^= data.draw(st.integers(1, 255))
                step += 1
                target.receive_data(bytes(chunk))
        a.send_extension("ks.test", b"x")
        b.receive_data(a.data_to_send())
    except ProtocolError:
        pass


needs_aes = pytest.mark.skipif(not aead.AESGCM_AVAILABLE, reason="no AES instructions here")


def ciphers(connection: SecureConnection) -> tuple[bool, bool]:
    """(sending with AES-256-GCM, receiving with AES-256-GCM)."""
    send, receive = connection._send_cipher, connection._receive_cipher
    assert send is not None and receive is not None
    return send.aesgcm, receive.aesgcm


@needs_aes
@pytest.mark.parametrize("chunk", [0, 5])
def test_both_offering_aes_gcm_switch_to_it_after_the_hellos(chunk: int) -> None:
    a, b = initiator(), responder()
    handshake(a, b, chunk=chunk)
    assert ciphers(a) == ciphers(b) == (True, True)
    assert set(events(a)[1].extensions) == {"ks.test"}  # type: ignore[attr-defined]
    events(b)
    for payload in (b"one", b"two" * 1000):
        a.send_extension("ks.test", payload)
        b.send_extension("ks.test", payload[::-1])
        transfer(a, b, chunk=chunk)
        transfer(b, a, chunk=chunk)
        assert events(b) == [ExtensionMessage("ks.test", payload)]
        assert events(a) == [ExtensionMessage("ks.test", payload[::-1])]
    a.send_extension("ks.test", b"tampered")
    frame = bytearray(a.data_to_send())
    frame[-1] ^= 1
    with pytest.raises(ChannelError, match="authentication"):
        b.receive_data(bytes(frame))


@pytest.mark.parametrize("without", ["initiator", "responder", "both"])
def test_a_side_without_aes_keeps_the_channel_on_chacha(without: str) -> None:
    a = initiator(aesgcm=without == "responder")
    b = responder(aesgcm=without == "initiator")
    if without == "both":
        a, b = initiator(aesgcm=False), responder(aesgcm=False)
    handshake(a, b)
    assert ciphers(a) == ciphers(b) == (False, False)
    events(a), events(b)
    a.send_extension("ks.test", b"still chacha")
    transfer(a, b)
    assert events(b) == [ExtensionMessage("ks.test", b"still chacha")]


@needs_aes
def test_switching_to_a_cipher_nobody_offered_is_a_protocol_error() -> None:
    a, b = initiator(aesgcm=False), responder()
    handshake(a, b)
    events(a), events(b)
    b._send_core(SwitchCipher(cipher=AESGCM_CIPHER))  # b breaks the rule
    with pytest.raises(ChannelError, match="did not offer"):
        transfer(b, a)
    c, d = initiator(), responder()
    handshake(c, d)
    d._send_core(SwitchCipher(cipher="rot13"))
    with pytest.raises(ChannelError, match="rot13"):
        transfer(d, c)
