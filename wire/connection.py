"""A kinswarm connection as a sans-IO state machine: handshake, encrypted channel, core messages.

Feed it received bytes with `receive_data()` (b"" at end of stream), collect what to send with
`data_to_send()`, and pull `next_event()` until it returns None. It never touches a socket or a
clock; the Trio shell in `node/` (and the simulator) drive it. Modelled on h11's `Connection`.

Wire sequence (byte-exact in docs/protocol.md):

1. The initiator sends an 8-byte preamble (magic `KSWM`, version, mode), then Noise message 1.
   The preamble is the Noise prologue, so tampering with it breaks the handshake.
2. Mode 0 runs `Noise_XX_25519_ChaChaPoly_BLAKE2b`; mode 1 runs `Noise_XXpsk0_...` with a
   network capability key as PSK. With psk0 the very first message is authenticated under the
   PSK, so a responder that does not hold the key rejects it before revealing anything, and an
   initiator only sends its identity (message 3) after the responder has proven the key.
   A responder may hold several capability keys; it finds the right one by trial decryption.
3. Messages 2 and 3 carry an `IdentityProof`: the Ed25519 identity and its signature over the
   sender's Noise static key.
4. Then each side sends frames (4-byte length + ChaCha20-Poly1305 ciphertext, one nonce counter
   per direction). The first message each way is `Hello`; a clean close is announced with
   `Goodbye`, so a stream that just stops is reported as truncated.
5. If both Hellos offer `AESGCM_OFFER` (the CPU has AES instructions), each side, once it has
   the other's Hello, sends `SwitchCipher` as its last ChaCha20-Poly1305 frame and encrypts
   everything after it with AES-256-GCM (`CipherState.switch_to_aesgcm`): several times
   cheaper per byte. The offer is authenticated (it is inside the encrypted Hello), so it
   cannot be stripped to force the slower cipher, and either cipher is an AEAD.

Errors: any violation by the peer raises a `ProtocolError` from `receive_data`/`next_event`
and the connection becomes unusable except for `close()`, which still queues a Goodbye when
the channel is up. Misuse by our own code raises `LocalProtocolError`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Final

import attrs

from wire import aead
from wire.canonical import pack_canonical, unpack_canonical
from wire.errors import ChannelError, DecodeError, HandshakeError, LocalProtocolError, ProtocolError
from wire.extensions import NegotiatedExtension, make_offers, negotiate
from wire.framing import FrameDecoder, encode_frame
from wire.identity import IdentityProof, LocalIdentity, RemoteIdentity
from wire.messages import (
    CORE_MESSAGE_IDS,
    FIRST_EXTENSION_ID,
    LAST_MESSAGE_ID,
    PROTOCOL_VERSION,
    CoreMessage,
    Goodbye,
    Hello,
    Ping,
    Pong,
    SwitchCipher,
    decode_core,
    is_known_core_id,
)
from wire.noise import MAX_MESSAGE_LEN, TAG_LEN, CipherState, HandshakeState, Pattern
from wire.schema import from_wire, to_wire

MAGIC: Final = b"KSWM"
PREAMBLE_VERSION: Final = 1
MODE_OPEN: Final = 0
MODE_CAPABILITY: Final = 1
PREAMBLE_LEN: Final = 8
HANDSHAKE_HEADER_LEN: Final = 2
TRANSPORT_HEADER_LEN: Final = 4
MAX_MESSAGE_BODY: Final = 1024 * 1024 + 4096
"""Largest message body: a 1 MiB block with room for its header and Merkle proof."""
MAX_TRANSPORT_FRAME: Final = 1 + MAX_MESSAGE_BODY + TAG_LEN
AESGCM_OFFER: Final = "ks.cipher.aes256gcm"
"""Offered in Hello, as an extension with no messages, by a side that can switch to AES."""
AESGCM_CIPHER: Final = "aes-256-gcm"
MAX_CAPABILITY_KEYS: Final = 64
"""Trial decryption costs one HKDF chain and one AEAD per key; bound it."""
IDLE_TICKS_BEFORE_TIMEOUT: Final = 4
"""With the shell ticking every 30 s, a silent peer is dropped after 2 minutes."""
CAPABILITY_KEY_LEN: Final = 32


class State(enum.Enum):
    HANDSHAKING = "handshaking"
    AWAITING_HELLO = "awaiting-hello"
    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"


@attrs.frozen
class HandshakeCompleted:
    remote: RemoteIdentity
    capability_key_index: int | None
    """Which of our capability keys the peer used, or None for an open handshake."""


@attrs.frozen
class HelloReceived:
    hello: Hello
    extensions: Mapping[str, NegotiatedExtension]


@attrs.frozen
class ExtensionMessage:
    name: str
    payload: memoryview
    """A read-only view of the decrypted frame: the message is not copied out of it."""


@attrs.frozen
class PongReceived:
    nonce: int


@attrs.frozen
class ConnectionClosed:
    reason: str
    by_remote: bool


Event = HandshakeCompleted | HelloReceived | ExtensionMessage | PongReceived | ConnectionClosed


def _preamble(mode: int) -> bytes:
    return MAGIC + bytes([PREAMBLE_VERSION, mode, 0, 0])


def _pattern_for(mode: int) -> Pattern:
    return "XXpsk0" if mode == MODE_CAPABILITY else "XX"


class SecureConnection:
    """One end of a kinswarm connection. Build it with `initiator()` or `responder()`."""

    def __init__(
        self,
        *,
        identity: LocalIdentity,
        is_initiator: bool,
        ephemeral_private_key: bytes,
        extensions: Mapping[str, int],
        agent: str,
        listen: Sequence[str],
        capability_keys: Sequence[bytes],
        allow_open: bool,
        expected_remote_id: bytes | None,
        aesgcm: bool = True,
    ) -> None:
        if len(capability_keys) > MAX_CAPABILITY_KEYS:
            raise ValueError(f"at most {MAX_CAPABILITY_KEYS} capability keys")
        if any(len(key) != CAPABILITY_KEY_LEN for key in capability_keys):
            raise ValueError("capability keys are 32 bytes")
        self._identity = identity
        self.is_initiator = is_initiator
        self._ephemeral_private_key = ephemeral_private_key
        offered = dict(extensions)
        if aead.AESGCM_AVAILABLE and aesgcm:
            offered[AESGCM_OFFER] = 1
        self._offers = make_offers(offered)
        self._hello = Hello(
            protocol=PROTOCOL_VERSION,
            agent=agent,
            extensions=self._offers,
            listen=tuple(listen),
        )
        self._capability_keys = tuple(capability_keys)
        self._allow_open = allow_open
        self._expected_remote_id = expected_remote_id
        self.state = State.HANDSHAKING
        self.remote: RemoteIdentity | None = None
        self.remote_hello: Hello | None = None
        self.extensions: dict[str, NegotiatedExtension] = {}
        self._extension_by_receive_id: dict[int, str] = {}
        self.close_reason: str | None = None
        self.skipped_messages = 0
        self._events: deque[Event] = deque()
        self._outgoing: list[bytes | bytearray] = []
        self._outgoing_bytes = 0
        self._handshake: HandshakeState | None = None
        self._capability_key_index: int | None = None
        self._send_cipher: CipherState | None = None
        self._receive_cipher: CipherState | None = None
        self._preamble_buffer = bytearray()
        self._decoder = FrameDecoder(
            max_frame_size=MAX_MESSAGE_LEN, header_size=HANDSHAKE_HEADER_LEN
        )
        self._mode = MODE_OPEN
        self._received_since_tick = False
        self._sent_since_tick = False
        self._idle_ticks = 0
        self._next_ping_nonce = 0

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def initiator(
        cls,
        identity: LocalIdentity,
        *,
        ephemeral_private_key: bytes,
        extensions: Mapping[str, int] | None = None,
        agent: str = "kinswarm",
        listen: Sequence[str] = (),
        capability_key: bytes | None = None,
        expected_remote_id: bytes | None = None,
        aesgcm: bool = True,
    ) -> SecureConnection:
        """The dialing side. With `capability_key`, only holders of that key can answer.
        `aesgcm=False` never offers AES-256-GCM (tests; a CPU without it never does)."""
        connection = cls(
            aesgcm=aesgcm,
            identity=identity,
            is_initiator=True,
            ephemeral_private_key=ephemeral_private_key,
            extensions=extensions or {},
            agent=agent,
            listen=listen,
            capability_keys=() if capability_key is None else (capability_key,),
            allow_open=capability_key is None,
            expected_remote_id=expected_remote_id,
        )
        connection._start_initiator(capability_key)
        return connection

    @classmethod
    def responder(
        cls,
        identity: LocalIdentity,
        *,
        ephemeral_private_key: bytes,
        extensions: Mapping[str, int] | None = None,
        agent: str = "kinswarm",
        listen: Sequence[str] = (),
        capability_keys: Sequence[bytes] = (),
        allow_open: bool = True,
        aesgcm: bool = True,
    ) -> SecureConnection:
        """The accepting side. It accepts open handshakes if `allow_open`, and capability
        handshakes under any of `capability_keys`."""
        return cls(
            aesgcm=aesgcm,
            identity=identity,
            is_initiator=False,
            ephemeral_private_key=ephemeral_private_key,
            extensions=extensions or {},
            agent=agent,
            listen=listen,
            capability_keys=capability_keys,
            allow_open=allow_open,
            expected_remote_id=None,
        )

    def _new_handshake(self, mode: int, psk: bytes | None) -> HandshakeState:
        return HandshakeState(
            pattern=_pattern_for(mode),
            initiator=self.is_initiator,
            prologue=_preamble(mode),
            static_private_key=self._identity.noise_static_private_key,
            ephemeral_private_key=self._ephemeral_private_key,
            psk=psk,
        )

    def _start_initiator(self, capability_key: bytes | None) -> None:
        mode = MODE_OPEN if capability_key is None else MODE_CAPABILITY
        self._handshake = self._new_handshake(mode, capability_key)
        if capability_key is not None:
            self._capability_key_index = 0
        message_1 = self._handshake.write_message(b"")
        self._queue(_preamble(mode))
        self._queue(
            encode_frame(
                message_1, header_size=HANDSHAKE_HEADER_LEN, max_frame_size=MAX_MESSAGE_LEN
            )
        )

    # -- the public surface ---------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes queued for the peer and not yet taken by `data_to_send()`."""
        return self._outgoing_bytes

    def data_to_send(self) -> bytes | bytearray:
        """Everything queued for the peer since the last call (one frame alone is handed
        over as it is, not copied: a frame may be a whole 1 MiB block)."""
        if not self._outgoing:
            return b""
        data = self._outgoing[0] if len(self._outgoing) == 1 else b"".join(self._outgoing)
        self._outgoing.clear()
        self._outgoing_bytes = 0
        self._sent_since_tick = True
        return data

    def _queue(self, data: bytes | bytearray) -> None:
        self._outgoing.append(data)
        self._outgoing_bytes += len(data)

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes from the peer; b"" means the stream ended. Raises ProtocolError."""
        if self.state in (State.CLOSED, State.FAILED):
            return
        try:
            if not data:
                self._handle_eof()
                return
            self._received_since_tick = True
            self._idle_ticks = 0
            if self.state is State.HANDSHAKING:
                self._receive_handshake(data)
            else:
                self._decoder.feed(data)
                self._process_transport_frames()
        except ProtocolError as exc:
            self._fail(str(exc))
            raise

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def send_extension(self, name: str, payload: bytes) -> None:
        """Queue a message for a negotiated extension."""
        negotiated = self.extensions.get(name)
        if negotiated is None:
            raise LocalProtocolError(f"extension {name!r} was not negotiated on this connection")
        if len(payload) > MAX_MESSAGE_BODY:
            raise LocalProtocolError(f"extension message of {len(payload)} bytes is too large")
        self._send_message(negotiated.send_id, payload)

    def send_raw(self, message_id: int, body: bytes) -> None:
        """Queue a message by raw id, bypassing negotiation. For probing what a peer does with
        ids it never offered (a newer protocol's messages); normal code uses the helpers."""
        if not 0 <= message_id <= LAST_MESSAGE_ID:
            raise LocalProtocolError(f"message id {message_id} does not fit in a byte")
        self._send_message(message_id, body)

    def ping(self) -> int:
        """Queue a Ping and return its nonce (the Pong carries it back)."""
        nonce = self._next_ping_nonce
        self._next_ping_nonce += 1
        self._send_core(Ping(nonce=nonce))
        return nonce

    def close(self, reason: str) -> None:
        """Queue a Goodbye (if the channel is up) and stop. Safe to call in any state."""
        if self.state is State.CLOSED:
            return
        if self._send_cipher is not None:
            text = reason.encode("utf-8")[:256].decode("utf-8", "ignore")
            text = "".join(char if char.isprintable() else "?" for char in text)
            self._send_core(Goodbye(reason=text), allow_in_failed=True)
        if self.state is not State.FAILED:
            self.state = State.CLOSED
            self.close_reason = reason

    def tick(self) -> int | None:
        """Call every keepalive interval (30 s in the node). Sends a Ping if we have been
        quiet (and returns its nonce), and raises ProtocolError if the peer has been silent
        for too many ticks."""
        if self.state not in (State.AWAITING_HELLO, State.OPEN):
            return None
        if not self._received_since_tick:
            self._idle_ticks += 1
            if self._idle_ticks >= IDLE_TICKS_BEFORE_TIMEOUT:
                self._fail("idle timeout: the peer sent nothing for too long")
                raise ChannelError("idle timeout: the peer sent nothing for too long")
        nonce = None if self._sent_since_tick else self.ping()
        self._received_since_tick = False
        self._sent_since_tick = False
        return nonce

    # -- internals --------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        if self.state not in (State.CLOSED, State.FAILED):
            self.state = State.FAILED
            self.close_reason = reason

    def _send_core(self, message: CoreMessage, *, allow_in_failed: bool = False) -> None:
        self._send_message(
            CORE_MESSAGE_IDS[type(message)],
            pack_canonical(to_wire(message)),
            allow_in_failed=allow_in_failed,
        )

    def _send_message(self, message_id: int, body: bytes, *, allow_in_failed: bool = False) -> None:
        """Assemble [length][id][body][tag] in one buffer and encrypt it there: the body is
        copied once, and nothing else is."""
        cipher = self._send_cipher
        if cipher is None or (self.state in (State.CLOSED, State.FAILED) and not allow_in_failed):
            raise LocalProtocolError(f"cannot send in state {self.state.value}")
        plaintext_length = 1 + len(body)
        frame = bytearray(TRANSPORT_HEADER_LEN + plaintext_length + TAG_LEN)
        frame[:TRANSPORT_HEADER_LEN] = (plaintext_length + TAG_LEN).to_bytes(
            TRANSPORT_HEADER_LEN, "big"
        )
        frame[TRANSPORT_HEADER_LEN] = message_id
        frame[TRANSPORT_HEADER_LEN + 1 : TRANSPORT_HEADER_LEN + plaintext_length] = body
        cipher.seal_in_place(frame, TRANSPORT_HEADER_LEN, plaintext_length)
        self._queue(frame)

    def _handle_eof(self) -> None:
        if self.state is State.HANDSHAKING:
            raise HandshakeError("stream ended during the handshake")
        self._decoder.check_clean_end()
        raise ChannelError("stream ended without a goodbye (truncated)")

    def _receive_handshake(self, data: bytes | bytearray) -> None:
        if not self.is_initiator and len(self._preamble_buffer) < PREAMBLE_LEN:
            needed = PREAMBLE_LEN - len(self._preamble_buffer)
            self._preamble_buffer += data[:needed]
            data = data[needed:]
            if len(self._preamble_buffer) < PREAMBLE_LEN:
                return
            self._check_preamble(bytes(self._preamble_buffer))
        self._decoder.feed(data)
        while self.state is State.HANDSHAKING:
            message = self._decoder.next_frame()
            if message is None:
                return
            self._on_handshake_message(message)
        # The handshake is over; whatever followed it in the same chunk is transport data.
        rest = self._decoder.take_remaining()
        self._decoder = FrameDecoder(
            max_frame_size=MAX_TRANSPORT_FRAME, header_size=TRANSPORT_HEADER_LEN
        )
        if rest:
            self._decoder.feed(rest)
            self._process_transport_frames()

    def _check_preamble(self, preamble: bytes) -> None:
        if preamble[:4] != MAGIC:
            raise HandshakeError("not a kinswarm peer (bad preamble magic)")
        if preamble[4] != PREAMBLE_VERSION:
            raise HandshakeError(f"unsupported handshake version {preamble[4]}")
        if preamble[6:8] != b"\x00\x00":
            raise HandshakeError("reserved preamble bytes are not zero")
        mode = preamble[5]
        if mode == MODE_OPEN:
            if not self._allow_open:
                raise HandshakeError("this node requires a network capability key")
        elif mode == MODE_CAPABILITY:
            if not self._capability_keys:
                raise HandshakeError("peer offered a capability handshake; we hold no keys")
        else:
            raise HandshakeError(f"unknown handshake mode {mode}")
        self._mode = mode

    def _on_handshake_message(self, message: bytes | bytearray) -> None:
        if self._handshake is None:
            self._handshake = self._read_first_message(message)
            self._write_handshake_message(pack_canonical(to_wire(self._identity.proof)))
            return
        handshake = self._handshake
        payload = handshake.read_message(message)
        self._accept_proof(payload)
        if self.is_initiator:
            self._write_handshake_message(pack_canonical(to_wire(self._identity.proof)))
        if not handshake.finished:
            raise HandshakeError("handshake did not finish after three messages")
        self._send_cipher, self._receive_cipher = handshake.split()
        self.state = State.AWAITING_HELLO
        assert self.remote is not None
        self._events.append(HandshakeCompleted(self.remote, self._capability_key_index))
        self._send_core(self._hello)

    def _read_first_message(self, message: bytes | bytearray) -> HandshakeState:
        """Responder: read message 1, finding the capability key by trial decryption."""
        if self._mode == MODE_OPEN:
            handshake = self._new_handshake(MODE_OPEN, None)
            payload = handshake.read_message(message)
        else:
            for index, key in enumerate(self._capability_keys):
                handshake = self._new_handshake(MODE_CAPABILITY, key)
                try:
                    payload = handshake.read_message(message)
                except HandshakeError:
                    continue
                self._capability_key_index = index
                break
            else:
                raise HandshakeError("peer does not hold any of our network capability keys")
        if payload:
            raise HandshakeError("handshake message 1 must have an empty payload")
        return handshake

    def _write_handshake_message(self, payload: bytes) -> None:
        assert self._handshake is not None
        message = self._handshake.write_message(payload)
        self._queue(
            encode_frame(message, header_size=HANDSHAKE_HEADER_LEN, max_frame_size=MAX_MESSAGE_LEN)
        )

    def _accept_proof(self, payload: bytes) -> None:
        assert self._handshake is not None and self._handshake.remote_static_key is not None
        try:
            proof = from_wire(IdentityProof, unpack_canonical(payload, max_container_items=8))
        except DecodeError as exc:
            raise HandshakeError(f"bad identity proof: {exc}") from exc
        remote = proof.verify(self._handshake.remote_static_key)
        if remote.public_key == self._identity.public_key:
            raise HandshakeError("connected to ourselves")
        if self._expected_remote_id is not None and remote.node_id != self._expected_remote_id:
            raise HandshakeError(
                f"expected node {self._expected_remote_id.hex()[:16]}…, "
                f"but the peer is {remote.node_id.hex()[:16]}…"
            )
        self.remote = remote

    def _process_transport_frames(self) -> None:
        cipher = self._receive_cipher
        assert cipher is not None
        while self.state in (State.AWAITING_HELLO, State.OPEN):
            frame = self._decoder.next_frame()
            if frame is None:
                return
            length = cipher.open_in_place(frame)
            if length == 0:
                raise ChannelError("empty message")
            self._on_message(frame[0], memoryview(frame)[1:length].toreadonly())

    def _on_message(self, message_id: int, body: memoryview) -> None:
        if message_id >= FIRST_EXTENSION_ID:
            if self.state is State.AWAITING_HELLO:
                raise ChannelError("extension message before Hello")
            name = self._extension_by_receive_id.get(message_id)
            if name is None:
                self.skipped_messages += 1
            else:
                self._events.append(ExtensionMessage(name, body))
            return
        if not is_known_core_id(message_id):
            self.skipped_messages += 1
            return
        message = decode_core(message_id, bytes(body))
        if self.state is State.AWAITING_HELLO and not isinstance(message, Hello | Goodbye):
            raise ChannelError(f"{type(message).__name__} before Hello")
        if isinstance(message, Hello):
            self._on_hello(message)
        elif isinstance(message, Ping):
            self._send_core(Pong(nonce=message.nonce))
        elif isinstance(message, Pong):
            self._events.append(PongReceived(message.nonce))
        elif isinstance(message, SwitchCipher):
            self._on_switch_cipher(message)
        else:
            self.state = State.CLOSED
            self.close_reason = message.reason
            self._events.append(ConnectionClosed(message.reason, by_remote=True))

    def _on_switch_cipher(self, message: SwitchCipher) -> None:
        receive = self._receive_cipher
        assert receive is not None
        if message.cipher != AESGCM_CIPHER or AESGCM_OFFER not in self._offers:
            raise ChannelError(f"peer switched to cipher {message.cipher!r}; we did not offer it")
        if self.remote_hello is None or AESGCM_OFFER not in self.remote_hello.extensions:
            raise ChannelError("peer switched cipher without offering it in its Hello")
        if receive.aesgcm:
            raise ChannelError("peer switched cipher twice")
        receive.switch_to_aesgcm()

    def _on_hello(self, hello: Hello) -> None:
        if self.state is not State.AWAITING_HELLO:
            raise ChannelError("second Hello on one connection")
        if hello.protocol != PROTOCOL_VERSION:
            raise ChannelError(
                f"peer speaks protocol {hello.protocol}; we speak {PROTOCOL_VERSION}"
            )
        self.remote_hello = hello
        self.extensions = negotiate(self._offers, hello.extensions)
        if self.extensions.pop(AESGCM_OFFER, None) is not None:
            assert self._send_cipher is not None
            self._send_core(SwitchCipher(cipher=AESGCM_CIPHER))
            self._send_cipher.switch_to_aesgcm()
        self._extension_by_receive_id = {
            negotiated.receive_id: name for name, negotiated in self.extensions.items()
        }
        self.state = State.OPEN
        self._events.append(HelloReceived(hello, dict(self.extensions)))
