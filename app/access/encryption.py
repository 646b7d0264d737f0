"""Results sealed at rest: AES-256-GCM under a key ring, each ciphertext bound to its row.

An answer often quotes its prompt (a summary of an email is the email), so `output` and
`context` are stored sealed, never plain: a database reader, a replica or a backup holds
ciphertext only. Each ciphertext names the key that sealed it, so keys rotate (a new key
first seals new rows; old rows still open under theirs) and retire (once no live row needs
a key, removing it makes every backup copy of those rows unreadable: retention then holds in
backups too).

The associated data binds a ciphertext to its task, its owner and its field: moved to another
row, or from `context` to `output`, it no longer opens.

Keys come from a `KeyProvider`. The built-in one reads `RESULT_ENCRYPTION_KEYS`
(`id:base64-32-bytes`, comma-separated, the first one active); a KMS or a HashiCorp Vault
Transit provider can be installed as a plugin (entry-point group `agent_service.key_providers`).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
# 32 random bytes show about 30 distinct values; fewer than 16 is a made-up key, not a drawn one.
MIN_DISTINCT_KEY_BYTES = 16
GOOD_KEY_HINT = "generate one with `openssl rand -base64 32`"
_AD_PREFIX = b"agent-service result v1"


class KeyRetired(Exception):
    """The key that sealed this ciphertext is no longer in the ring (retired on purpose)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"the key {key_id!r} that sealed this result is retired")
        self.key_id = key_id


class SealBroken(Exception):
    """The ciphertext does not open under its key: altered, truncated, or moved from another row."""


@dataclass(frozen=True, slots=True)
class ResultKey:
    id: str
    secret: bytes

    def __repr__(self) -> str:
        return f"ResultKey(id={self.id!r}, secret=<{len(self.secret)} bytes>)"


class KeyProvider(Protocol):
    """Where the key ring comes from. `keys()` is called once at start-up; the first is active.

    A plugin (a KMS, Vault Transit) returns the same: key ids and 32-byte data keys it has
    unwrapped. Ids must stay stable: every ciphertext carries the id that sealed it.
    """

    def keys(self) -> Sequence[ResultKey]: ...


def parse_keys(value: str, *, name: str = "RESULT_ENCRYPTION_KEYS") -> list[ResultKey]:
    """`id:base64,id:base64,…` as keys, the first active. Errors name the rule and the key's
    position and id, never a key's bytes."""
    keys: list[ResultKey] = []
    for position, item in enumerate((part.strip() for part in value.split(",")), start=1):
        key_id, sep, encoded = item.partition(":")
        if not sep:
            raise ValueError(f"{name}: entry {position} must be id:base64-of-32-bytes")
        if not KEY_ID_PATTERN.match(key_id):
            raise ValueError(f"{name}: entry {position} has an id that is not 1 to 32 of A-Z a-z 0-9 . _ -")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{name}: key {key_id!r} is not base64") from None
        if len(secret) != KEY_BYTES:
            raise ValueError(f"{name}: key {key_id!r} is {len(secret)} bytes; AES-256 needs {KEY_BYTES}")
        if len(set(secret)) < MIN_DISTINCT_KEY_BYTES:
            raise ValueError(f"{name}: key {key_id!r} is too regular to be random; {GOOD_KEY_HINT}")
        if any(key.id == key_id for key in keys):
            raise ValueError(f"{name}: the id {key_id!r} is used twice")
        keys.append(ResultKey(key_id, secret))
    if not keys:
        raise ValueError(f"{name} lists no key")
    return keys


def new_key_entry(key_id: str) -> str:
    """A fresh `id:base64` entry, for the development default and `encryption new-key`."""
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


class StaticKeyProvider:
    """The built-in provider: the keys given in the settings."""

    def __init__(self, keys: Sequence[ResultKey]) -> None:
        self._keys = list(keys)

    def keys(self) -> Sequence[ResultKey]:
        return self._keys


class ResultCipher:
    """Seals and opens results under the key ring; the first key seals, any key opens.

    Ciphertext layout: version (1 byte), key id length (1 byte), key id (ASCII), nonce
    (12 random bytes), AES-GCM ciphertext and tag. A random nonce per seal: at 2^32 seals per
    key the collision risk is still below 2^-32; rotate keys long before that.
    """

    def __init__(self, provider: KeyProvider) -> None:
        keys = list(provider.keys())
        if not keys:
            raise ValueError("the key provider gave no result encryption key")
        self._aead = {key.id: AESGCM(key.secret) for key in keys}
        self.active_key_id = keys[0].id
        self.key_ids = tuple(key.id for key in keys)

    def seal(self, plaintext: bytes, *, task_id: uuid.UUID, owner_id: uuid.UUID, field: str) -> bytes:
        key_id = self.active_key_id.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self.active_key_id].encrypt(nonce, plaintext, _associated(task_id, owner_id, field))
        return bytes([FORMAT_VERSION, len(key_id)]) + key_id + nonce + sealed

    def open(self, ciphertext: bytes, *, task_id: uuid.UUID, owner_id: uuid.UUID, field: str) -> bytes:
        key_id, nonce, sealed = _split(ciphertext)
        aead = self._aead.get(key_id)
        if aead is None:
            raise KeyRetired(key_id)
        try:
            return aead.decrypt(nonce, sealed, _associated(task_id, owner_id, field))
        except InvalidTag:
            raise SealBroken("the result does not open under its key: altered or moved") from None

    def is_active(self, ciphertext: bytes) -> bool:
        return key_id_of(ciphertext) == self.active_key_id


def key_id_of(ciphertext: bytes) -> str:
    """The id of the key that sealed `ciphertext`."""
    return _split(ciphertext)[0]


def _split(ciphertext: bytes) -> tuple[str, bytes, bytes]:
    if len(ciphertext) < 2 or ciphertext[0] != FORMAT_VERSION:
        raise SealBroken("not a sealed result of a known format")
    end = 2 + ciphertext[1]
    if len(ciphertext) < end + NONCE_BYTES + 16:
        raise SealBroken("the sealed result is truncated")
    return (
        ciphertext[2:end].decode("ascii", "replace"),
        ciphertext[end : end + NONCE_BYTES],
        ciphertext[end + NONCE_BYTES :],
    )


def _associated(task_id: uuid.UUID, owner_id: uuid.UUID, field: str) -> bytes:
    return b"|".join((_AD_PREFIX, task_id.bytes, owner_id.bytes, field.encode()))
