"""The Noise Protocol Framework (revision 34), the parts kinswarm uses.

Implements `Noise_XX_25519_ChaChaPoly_BLAKE2b` and `Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b` from
libsodium primitives (pynacl): X25519, ChaCha20-Poly1305 (IETF) and BLAKE2b with HMAC-based HKDF.
We do not invent a key exchange: this follows the specification's CipherState, SymmetricState
and HandshakeState objects name for name, so it can be read side by side with
https://noiseprotocol.org/noise.html, and the tests check it against the published test vectors
and against an independent implementation (the `noiseprotocol` package) in both roles.

The state machine is sans-IO and takes its ephemeral private key from the caller, so it never
draws randomness of its own (the simulator supplies seeded bytes; the real node `os.urandom`).
Every failure raises `HandshakeError` (during the handshake) or `ChannelError` (afterwards).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final, Literal

import nacl.bindings as sodium
import nacl.exceptions

from wire import aead
from wire.errors import ChannelError, HandshakeError, LocalProtocolError

DH_LEN: Final = 32
HASH_LEN: Final = 64
TAG_LEN: Final = aead.TAG_LEN
KEY_LEN: Final = 32
MAX_MESSAGE_LEN: Final = 65535
_MAX_NONCE: Final = (1 << 64) - 1  # reserved by the spec; reaching it means "rekey or stop"
AESGCM_KEY_LABEL: Final = b"kinswarm transport aes-256-gcm"

Pattern = Literal["XX", "XXpsk0"]

# Each pattern is a list of messages; each message a list of tokens. The initiator writes the
# even-indexed messages. Only the tokens these two patterns use are supported.
_PATTERNS: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "XX": (("e",), ("e", "ee", "s", "es"), ("s", "se")),
    "XXpsk0": (("psk", "e"), ("e", "ee", "s", "es"), ("s", "se")),
}


def protocol_name(pattern: Pattern) -> bytes:
    return f"Noise_{pattern}_25519_ChaChaPoly_BLAKE2b".encode("ascii")


def x25519_public_key(private_key: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    return sodium.crypto_scalarmult_base(private_key)


def _dh(private_key: bytes, public_key: bytes) -> bytes:
    try:
        return sodium.crypto_scalarmult(private_key, public_key)
    except nacl.exceptions.CryptoError as exc:
        # libsodium refuses low-order points (an all-zero shared secret).
        raise HandshakeError("peer sent an invalid X25519 public key") from exc


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_LEN).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2b).digest()


def _hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> list[bytes]:
    temp_key = _hmac(chaining_key, input_key_material)
    result: list[bytes] = []
    previous = b""
    for index in range(1, outputs + 1):
        previous = _hmac(temp_key, previous + bytes([index]))
        result.append(previous)
    return result


def _nonce_bytes(nonce: int) -> bytes:
    return b"\x00\x00\x00\x00" + nonce.to_bytes(8, "little")


class CipherState:
    """A key and a message counter: ChaCha20-Poly1305 with the counter as nonce.

    After the handshake each direction has one. Because the nonce is implicit, a replayed,
    dropped, reordered or tampered message fails authentication: the only outcomes are the
    exact next message or an error.
    """

    __slots__ = ("_key", "aesgcm", "nonce")

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key
        self.nonce = 0
        self.aesgcm = False
        """Switched to AES-256-GCM (`switch_to_aesgcm`); ChaCha20-Poly1305 until then."""

    def switch_to_aesgcm(self) -> None:
        """From the next message on, AES-256-GCM under a key derived from this one (so no
        key is ever used with two ciphers) and a nonce counting from zero again. Used by the
        transport once both ends announced the cipher; Noise itself is not changed."""
        if self._key is None:
            raise LocalProtocolError("no key yet")
        if self.aesgcm:
            raise LocalProtocolError("already switched to AES-256-GCM")
        self._key = hashlib.blake2b(AESGCM_KEY_LABEL, key=self._key, digest_size=KEY_LEN).digest()
        self.nonce = 0
        self.aesgcm = True

    def has_key(self) -> bool:
        return self._key is not None

    def encrypt_with_ad(self, associated_data: bytes, plaintext: bytes) -> bytes:
        if self._key is None:
            return plaintext
        buffer = bytearray(len(plaintext) + TAG_LEN)
        buffer[: len(plaintext)] = plaintext
        self.seal_in_place(buffer, 0, len(plaintext), associated_data)
        return bytes(buffer)

    def decrypt_with_ad(self, associated_data: bytes, ciphertext: bytes) -> bytes:
        """Decrypt the next message. Raises ChannelError if it does not authenticate."""
        if self._key is None:
            return ciphertext
        buffer = bytearray(ciphertext)
        length = self.open_in_place(buffer, associated_data)
        del buffer[length:]
        return bytes(buffer)

    def seal_in_place(
        self, buffer: bytearray, start: int, length: int, associated_data: bytes = b""
    ) -> None:
        """Encrypt `buffer[start:start+length]` as the next message, tag written after it.

        The transport uses this to encrypt a frame where it was assembled, without copies."""
        if self._key is None:
            raise LocalProtocolError("no key yet")
        if self.nonce >= _MAX_NONCE:
            raise LocalProtocolError("nonce space exhausted; the channel must be re-established")
        seal = aead.aesgcm_seal_in_place if self.aesgcm else aead.seal_in_place
        seal(buffer, start, length, _nonce_bytes(self.nonce), self._key, associated_data)
        self.nonce += 1

    def open_in_place(self, buffer: bytearray, associated_data: bytes = b"") -> int:
        """Decrypt the next message (ciphertext + tag) in place; return the plaintext length.
        Raises ChannelError if it does not authenticate."""
        if self._key is None:
            raise LocalProtocolError("no key yet")
        if self.nonce >= _MAX_NONCE:
            raise ChannelError("nonce space exhausted")
        if len(buffer) < TAG_LEN:
            raise ChannelError(f"ciphertext of {len(buffer)} bytes is shorter than its tag")
        unseal = aead.aesgcm_open_in_place if self.aesgcm else aead.open_in_place
        try:
            length = unseal(buffer, _nonce_bytes(self.nonce), self._key, associated_data)
        except nacl.exceptions.CryptoError as exc:
            raise ChannelError(
                "frame failed authentication (tampered, replayed, reordered or dropped)"
            ) from exc
        self.nonce += 1
        return length


class SymmetricState:
    """Chaining key, handshake hash and the current handshake CipherState."""

    __slots__ = ("chaining_key", "cipher", "handshake_hash")

    def __init__(self, name: bytes) -> None:
        self.handshake_hash = (
            name.ljust(HASH_LEN, b"\x00") if len(name) <= HASH_LEN else _hash(name)
        )
        self.chaining_key = self.handshake_hash
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self.chaining_key, temp_key = _hkdf(self.chaining_key, input_key_material, 2)
        self.cipher = CipherState(temp_key[:KEY_LEN])

    def mix_hash(self, data: bytes) -> None:
        self.handshake_hash = _hash(self.handshake_hash + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self.chaining_key, temp_hash, temp_key = _hkdf(self.chaining_key, input_key_material, 3)
        self.mix_hash(temp_hash)
        self.cipher = CipherState(temp_key[:KEY_LEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.handshake_hash, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        try:
            plaintext = self.cipher.decrypt_with_ad(self.handshake_hash, ciphertext)
        except ChannelError as exc:
            raise HandshakeError(
                "handshake message failed authentication (wrong key or tampered transcript)"
            ) from exc
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        key_1, key_2 = _hkdf(self.chaining_key, b"", 2)
        return CipherState(key_1[:KEY_LEN]), CipherState(key_2[:KEY_LEN])


class HandshakeState:
    """One side of a Noise XX or XXpsk0 handshake.

    Call `write_message`/`read_message` alternately (the initiator writes first). When
    `finished` is true, `split()` gives (sending, receiving) CipherStates for this side, and
    `remote_static_key` holds the peer's authenticated X25519 static key.
    """

    def __init__(
        self,
        *,
        pattern: Pattern,
        initiator: bool,
        prologue: bytes,
        static_private_key: bytes,
        ephemeral_private_key: bytes,
        psk: bytes | None = None,
    ) -> None:
        if pattern not in _PATTERNS:
            raise ValueError(f"unsupported Noise pattern {pattern!r}")
        if (psk is not None) != pattern.endswith("psk0"):
            raise ValueError("a PSK is required by psk patterns and only by them")
        if psk is not None and len(psk) != KEY_LEN:
            raise ValueError("the PSK must be 32 bytes")
        if len(static_private_key) != DH_LEN or len(ephemeral_private_key) != DH_LEN:
            raise ValueError("X25519 private keys are 32 bytes")
        self._messages = _PATTERNS[pattern]
        self._uses_psk = psk is not None
        self._psk = psk
        self.initiator = initiator
        self._symmetric = SymmetricState(protocol_name(pattern))
        self._symmetric.mix_hash(prologue)
        self._static_private = static_private_key
        self.static_public_key = x25519_public_key(static_private_key)
        self._ephemeral_private = ephemeral_private_key
        self._ephemeral_public = x25519_public_key(ephemeral_private_key)
        self.remote_static_key: bytes | None = None
        self._remote_ephemeral: bytes | None = None
        self._message_index = 0
        self._failed = False

    @property
    def finished(self) -> bool:
        return self._message_index == len(self._messages)

    @property
    def handshake_hash(self) -> bytes:
        """The transcript hash `h`: equal on both sides only if they saw the same handshake."""
        return self._symmetric.handshake_hash

    def is_my_turn_to_write(self) -> bool:
        return not self.finished and (self._message_index % 2 == 0) == self.initiator

    def write_message(self, payload: bytes) -> bytes:
        if self._failed or not self.is_my_turn_to_write():
            raise LocalProtocolError("not this side's turn to write a handshake message")
        symmetric = self._symmetric
        out = bytearray()
        # Any failure below leaves the transcript half-advanced, so the state is dead after it
        # (as after a failed read): a retry must not emit a message from a corrupted transcript.
        try:
            for token in self._messages[self._message_index]:
                if token == "e":
                    out += self._ephemeral_public
                    symmetric.mix_hash(self._ephemeral_public)
                    if self._uses_psk:
                        symmetric.mix_key(self._ephemeral_public)
                elif token == "s":
                    out += symmetric.encrypt_and_hash(self.static_public_key)
                elif token == "psk":
                    assert self._psk is not None
                    symmetric.mix_key_and_hash(self._psk)
                else:
                    symmetric.mix_key(self._dh_for(token))
            out += symmetric.encrypt_and_hash(payload)
            if len(out) > MAX_MESSAGE_LEN:
                raise LocalProtocolError("handshake message exceeds 65535 bytes")
        except (HandshakeError, LocalProtocolError):
            self._failed = True
            raise
        self._message_index += 1
        return bytes(out)

    def read_message(self, message: bytes | bytearray) -> bytes:
        """Consume the peer's next handshake message and return its payload."""
        if self._failed or self.finished or self.is_my_turn_to_write():
            raise LocalProtocolError("not this side's turn to read a handshake message")
        try:
            payload = self._read_tokens(message)
        except HandshakeError:
            self._failed = True
            raise
        self._message_index += 1
        return payload

    def _read_tokens(self, message: bytes | bytearray) -> bytes:
        if len(message) > MAX_MESSAGE_LEN:
            raise HandshakeError("handshake message exceeds 65535 bytes")
        symmetric = self._symmetric
        view = memoryview(message)
        for token in self._messages[self._message_index]:
            if token == "e":
                if len(view) < DH_LEN:
                    raise HandshakeError("handshake message too short for an ephemeral key")
                self._remote_ephemeral = bytes(view[:DH_LEN])
                view = view[DH_LEN:]
                symmetric.mix_hash(self._remote_ephemeral)
                if self._uses_psk:
                    symmetric.mix_key(self._remote_ephemeral)
            elif token == "s":
                length = DH_LEN + (TAG_LEN if symmetric.cipher.has_key() else 0)
                if len(view) < length:
                    raise HandshakeError("handshake message too short for a static key")
                self.remote_static_key = symmetric.decrypt_and_hash(bytes(view[:length]))
                view = view[length:]
            elif token == "psk":
                assert self._psk is not None
                symmetric.mix_key_and_hash(self._psk)
            else:
                symmetric.mix_key(self._dh_for(token))
        if symmetric.cipher.has_key() and len(view) < TAG_LEN:
            raise HandshakeError("handshake message too short for its authentication tag")
        return symmetric.decrypt_and_hash(bytes(view))

    def _dh_for(self, token: str) -> bytes:
        """The DH result for token ee, es or se from this side's point of view."""
        # Which of our keys meets which of theirs: (ours, theirs) per token and role.
        use_local_static, use_remote_static = {
            ("ee", True): (False, False),
            ("ee", False): (False, False),
            ("es", True): (False, True),
            ("es", False): (True, False),
            ("se", True): (True, False),
            ("se", False): (False, True),
        }[(token, self.initiator)]
        local = self._static_private if use_local_static else self._ephemeral_private
        remote = self.remote_static_key if use_remote_static else self._remote_ephemeral
        if remote is None:
            raise HandshakeError(f"token {token} came before the key it needs")
        return _dh(local, remote)

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) transport ciphers for this side. Only after `finished`."""
        if not self.finished:
            raise LocalProtocolError("split() before the handshake finished")
        initiator_to_responder, responder_to_initiator = self._symmetric.split()
        if self.initiator:
            return initiator_to_responder, responder_to_initiator
        return responder_to_initiator, initiator_to_responder
