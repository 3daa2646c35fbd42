"""ChaCha20-Poly1305 (IETF) encryption in place, straight into libsodium.

pynacl's public `nacl.bindings.crypto_aead_chacha20poly1305_ietf_*` allocate a fresh
zero-filled buffer per call and copy the result out again: for 16 KiB frames that is two extra
passes over the data and about 10 µs of argument checks, a third of the cost of the cipher
itself. The channel encrypts every byte we send, so this module calls the same libsodium
functions through pynacl's compiled cffi binding (`nacl._sodium`, present in every pynacl
release since 1.0) and encrypts and decrypts *in place* in buffers we already own.

If that binding ever disappears, the public functions take over (slower, same bytes); a test
checks both paths agree.
"""

from __future__ import annotations

from typing import Final

import nacl.bindings as public
import nacl.exceptions

KEY_LEN: Final = 32
NONCE_LEN: Final = 12
TAG_LEN: Final = 16

try:  # pragma: no branch - which side runs depends on the installed pynacl
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib

    _encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
    _decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
    FAST_PATH = True
except (ImportError, AttributeError):  # pragma: no cover
    FAST_PATH = False


def seal_in_place(
    buffer: bytearray, start: int, length: int, nonce: bytes, key: bytes, ad: bytes = b""
) -> None:
    """Encrypt `buffer[start:start+length]` in place and write the 16-byte tag after it,
    authenticating `ad` (associated data) too.

    `buffer` must have room: `len(buffer) >= start + length + TAG_LEN`.
    """
    if len(buffer) < start + length + TAG_LEN:
        raise ValueError("no room for the authentication tag")
    if FAST_PATH:
        view = _ffi.from_buffer(buffer)
        target = view + start
        result = _encrypt(
            target, _ffi.NULL, target, length, ad or _ffi.NULL, len(ad), _ffi.NULL, nonce, key
        )
        if result != 0:  # pragma: no cover - libsodium's encrypt cannot fail
            raise nacl.exceptions.CryptoError("encryption failed")
        return
    sealed = public.crypto_aead_chacha20poly1305_ietf_encrypt(
        bytes(buffer[start : start + length]), ad or None, nonce, key
    )
    buffer[start : start + length + TAG_LEN] = sealed


def open_in_place(buffer: bytearray, nonce: bytes, key: bytes, ad: bytes = b"") -> int:
    """Decrypt and authenticate `buffer` (ciphertext followed by its tag) in place.

    Returns the plaintext length; the plaintext is `buffer[:length]`. Raises
    `nacl.exceptions.CryptoError` if the tag does not verify (the buffer is then garbage).
    """
    length = len(buffer) - TAG_LEN
    if length < 0:
        raise nacl.exceptions.CryptoError("ciphertext shorter than its tag")
    if FAST_PATH:
        view = _ffi.from_buffer(buffer)
        written = _ffi.new("unsigned long long *")
        result = _decrypt(
            view, written, _ffi.NULL, view, len(buffer), ad or _ffi.NULL, len(ad), nonce, key
        )
        if result != 0:
            raise nacl.exceptions.CryptoError("authentication failed")
        return length
    plaintext = public.crypto_aead_chacha20poly1305_ietf_decrypt(
        bytes(buffer), ad or None, nonce, key
    )
    buffer[:length] = plaintext
    return length


# -- AES-256-GCM -------------------------------------------------------------------------------
#
# The channel switches to AES-256-GCM once both ends say they have it (`wire.connection`):
# with the CPU's AES instructions it is several times faster than ChaCha20-Poly1305 in
# software (2.1 against 0.3-0.8 GB/s on the machine bench_transfer runs on). libsodium offers
# it only where the CPU has those instructions; then `AESGCM_AVAILABLE` is False and the
# channel stays on ChaCha20-Poly1305.

try:  # pragma: no branch
    AESGCM_AVAILABLE: bool = bool(_lib.crypto_aead_aes256gcm_is_available()) if FAST_PATH else False
    _aes_encrypt = _lib.crypto_aead_aes256gcm_encrypt
    _aes_decrypt = _lib.crypto_aead_aes256gcm_decrypt
except AttributeError:  # pragma: no cover
    AESGCM_AVAILABLE = False


def aesgcm_seal_in_place(
    buffer: bytearray, start: int, length: int, nonce: bytes, key: bytes, ad: bytes = b""
) -> None:
    """`seal_in_place` with AES-256-GCM (only where `AESGCM_AVAILABLE`)."""
    if not AESGCM_AVAILABLE:
        raise RuntimeError("AES-256-GCM is not available on this CPU")
    if len(buffer) < start + length + TAG_LEN:
        raise ValueError("no room for the authentication tag")
    target = _ffi.from_buffer(buffer) + start
    if _aes_encrypt(
        target, _ffi.NULL, target, length, ad or _ffi.NULL, len(ad), _ffi.NULL, nonce, key
    ):  # pragma: no cover - libsodium's encrypt cannot fail
        raise nacl.exceptions.CryptoError("encryption failed")


def aesgcm_open_in_place(buffer: bytearray, nonce: bytes, key: bytes, ad: bytes = b"") -> int:
    """`open_in_place` with AES-256-GCM (only where `AESGCM_AVAILABLE`)."""
    if not AESGCM_AVAILABLE:
        raise RuntimeError("AES-256-GCM is not available on this CPU")
    length = len(buffer) - TAG_LEN
    if length < 0:
        raise nacl.exceptions.CryptoError("ciphertext shorter than its tag")
    view = _ffi.from_buffer(buffer)
    if _aes_decrypt(
        view, _ffi.NULL, _ffi.NULL, view, len(buffer), ad or _ffi.NULL, len(ad), nonce, key
    ):
        raise nacl.exceptions.CryptoError("authentication failed")
    return length
