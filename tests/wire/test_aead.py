"""The in-place AEAD path produces exactly what pynacl's public functions produce."""

from __future__ import annotations

import nacl.bindings as public
import nacl.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import aead

keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=12, max_size=12)


def test_fast_path_is_in_use() -> None:
    assert aead.FAST_PATH, "pynacl's cffi binding is missing: the channel runs slowly"


@given(keys, nonces, st.binary(max_size=2000), st.binary(max_size=64), st.integers(0, 8))
def test_seal_matches_public_encrypt(
    key: bytes, nonce: bytes, plaintext: bytes, ad: bytes, offset: int
) -> None:
    buffer = bytearray(offset) + bytearray(plaintext) + bytearray(aead.TAG_LEN)
    aead.seal_in_place(buffer, offset, len(plaintext), nonce, key, ad)
    expected = public.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad or None, nonce, key)
    assert bytes(buffer[offset:]) == expected
    opened = bytearray(expected)
    length = aead.open_in_place(opened, nonce, key, ad)
    assert bytes(opened[:length]) == plaintext


@given(keys, nonces, st.binary(min_size=1, max_size=200), st.data())
def test_any_flipped_bit_fails_to_open(
    key: bytes, nonce: bytes, plaintext: bytes, data: st.DataObject
) -> None:
    sealed = bytearray(
        public.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, None, nonce, key)
    )
    index = data.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(nacl.exceptions.CryptoError):
        aead.open_in_place(sealed, nonce, key)


def test_short_input_and_missing_room_are_errors() -> None:
    with pytest.raises(nacl.exceptions.CryptoError):
        aead.open_in_place(bytearray(5), bytes(12), bytes(32))
    with pytest.raises(ValueError, match="no room"):
        aead.seal_in_place(bytearray(10), 0, 10, bytes(12), bytes(32))


needs_aes = pytest.mark.skipif(not aead.AESGCM_AVAILABLE, reason="no AES instructions here")


@needs_aes
@given(keys, nonces, st.binary(max_size=2000), st.binary(max_size=64), st.integers(0, 8))
def test_aes_gcm_seal_matches_public_encrypt_and_opens(
    key: bytes, nonce: bytes, plaintext: bytes, ad: bytes, offset: int
) -> None:
    buffer = bytearray(offset) + bytearray(plaintext) + bytearray(aead.TAG_LEN)
    aead.aesgcm_seal_in_place(buffer, offset, len(plaintext), nonce, key, ad)
    expected = public.crypto_aead_aes256gcm_encrypt(plaintext, ad or None, nonce, key)
    assert bytes(buffer[offset:]) == expected
    opened = bytearray(expected)
    length = aead.aesgcm_open_in_place(opened, nonce, key, ad)
    assert bytes(opened[:length]) == plaintext


@needs_aes
@given(keys, nonces, st.binary(min_size=1, max_size=200), st.data())
def test_aes_gcm_fails_to_open_any_flipped_bit(
    key: bytes, nonce: bytes, plaintext: bytes, data: st.DataObject
) -> None:
    sealed = bytearray(public.crypto_aead_aes256gcm_encrypt(plaintext, None, nonce, key))
    index = data.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(nacl.exceptions.CryptoError):
        aead.aesgcm_open_in_place(sealed, nonce, key)
