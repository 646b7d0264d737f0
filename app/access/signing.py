"""The audit trail's Ed25519 key: seals and export manifests are signed with it, and checked by its public key.

The private key is `AUDIT_SIGNING_KEY` (the base64 of 32 bytes); everything an auditor needs
to check a seal or an export is the public key, served as PEM at `GET /audit/public-key`.
A database writer without the private key can change rows but cannot sign their new digests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

SIGNING_KEY_BYTES = 32


class InvalidPublicKey(ValueError):
    """The PEM given is not an Ed25519 public key."""


def key_id(public: Ed25519PublicKey) -> str:
    """A public key's fingerprint: the SHA-256 of its 32 raw bytes, in hex."""
    return hashlib.sha256(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()


class AuditVerifier:
    """Checks signatures with the public key alone (an auditor's side: no secret, no database)."""

    def __init__(self, public: Ed25519PublicKey) -> None:
        self._public = public
        self.key_id = key_id(public)

    @classmethod
    def from_pem(cls, pem: bytes) -> AuditVerifier:
        try:
            public = load_pem_public_key(pem)
        except ValueError:
            raise InvalidPublicKey("not a PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise InvalidPublicKey("not an Ed25519 public key")
        return cls(public)

    def public_pem(self) -> str:
        return self._public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()

    def verify(self, signature: str, message: bytes) -> bool:
        """Whether `signature` (base64) is this key's signature of `message`."""
        try:
            self._public.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


class AuditSigner(AuditVerifier):
    """Signs with the private key (the service's side), and verifies like any auditor."""

    def __init__(self, private_key_b64: str) -> None:
        raw = base64.b64decode(private_key_b64, validate=True)
        if len(raw) != SIGNING_KEY_BYTES:
            raise ValueError(f"an Ed25519 private key is {SIGNING_KEY_BYTES} bytes")
        self._private = Ed25519PrivateKey.from_private_bytes(raw)
        super().__init__(self._private.public_key())

    def sign(self, message: bytes) -> str:
        """The base64 of the Ed25519 signature of `message`."""
        return base64.b64encode(self._private.sign(message)).decode()

    def __repr__(self) -> str:  # never the key
        return f"AuditSigner(key_id={self.key_id[:16]}…)"
