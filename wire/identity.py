"""Node identities: an Ed25519 key pair, the node id derived from it, and the proof that binds
an identity to a Noise static key.

A node is its Ed25519 public key; its id is SHA-256 of that key, so an id cannot be chosen
freely (the DHT relies on this). For the handshake a node also has an X25519 static key for
Noise, derived deterministically from the same secret seed so there is one secret to keep. The
two are bound by an Ed25519 signature over the static key (`IdentityProof`), sent encrypted
inside the handshake: a peer that completes the Noise handshake has proven it holds the static
key, and the signature proves the identity key vouches for that static key. (libp2p's Noise
handshake binds identities the same way.)
"""

from __future__ import annotations

import hashlib
from typing import Final

import attrs
import nacl.exceptions
import nacl.signing

from wire.errors import HandshakeError
from wire.noise import x25519_public_key
from wire.schema import FixedBytes, Record, UInt, spec

SEED_LEN: Final = 32
PUBLIC_KEY_LEN: Final = 32
NODE_ID_LEN: Final = 32
SIGNATURE_LEN: Final = 64
_STATIC_KEY_PERSONALISATION: Final = b"kinswarm-noise"
_PROOF_CONTEXT: Final = b"kinswarm/v1 noise static key:"


def node_id_of(public_key: bytes) -> bytes:
    """The 32-byte node id of an Ed25519 public key."""
    return hashlib.sha256(public_key).digest()


@attrs.frozen
class IdentityProof(Record):
    """Sent in the handshake: who I am, and my signature over my Noise static key."""

    version: int = attrs.field(metadata=spec(UInt(maximum=1, minimum=1)))
    public_key: bytes = attrs.field(metadata=spec(FixedBytes(PUBLIC_KEY_LEN)))
    signature: bytes = attrs.field(metadata=spec(FixedBytes(SIGNATURE_LEN)))

    def verify(self, noise_static_key: bytes) -> RemoteIdentity:
        """Check the proof against the static key the handshake authenticated."""
        try:
            nacl.signing.VerifyKey(self.public_key).verify(
                _PROOF_CONTEXT + noise_static_key, self.signature
            )
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
            raise HandshakeError(
                "the peer's identity key did not sign its Noise static key"
            ) from exc
        return RemoteIdentity(self.public_key)


@attrs.frozen
class RemoteIdentity:
    """An authenticated peer: its Ed25519 public key."""

    public_key: bytes
    node_id: bytes = attrs.field(init=False, repr=False, eq=False)
    """Computed once: the swarm engine asks for it on every message."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "node_id", node_id_of(self.public_key))


class LocalIdentity:
    """Our own identity, built from a 32-byte secret seed. Holds secrets: never log it."""

    __slots__ = (
        "node_id",
        "noise_static_private_key",
        "noise_static_public_key",
        "proof",
        "public_key",
        "signing_key",
    )

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_LEN:
            raise ValueError("an identity seed is 32 bytes")
        self.signing_key = nacl.signing.SigningKey(seed)
        self.public_key: bytes = bytes(self.signing_key.verify_key)
        self.node_id = node_id_of(self.public_key)
        self.noise_static_private_key = hashlib.blake2b(
            seed, digest_size=32, person=_STATIC_KEY_PERSONALISATION
        ).digest()
        self.noise_static_public_key = x25519_public_key(self.noise_static_private_key)
        signature = self.signing_key.sign(_PROOF_CONTEXT + self.noise_static_public_key).signature
        self.proof = IdentityProof(version=1, public_key=self.public_key, signature=signature)

    def __repr__(self) -> str:
        return f"LocalIdentity(node_id={self.node_id.hex()[:16]}…)"
