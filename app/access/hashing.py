"""Keyed hashes of prompts (HMAC-SHA-256), and API keys: making them and hashing them."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

API_KEY_PREFIX = "ask_"
_MAX_CACHED_OWNER_KEYS = 10_000


class PromptHasher:
    """HMAC-SHA-256 under the server's PROMPT_HASH_KEY, with a key of its own for every owner.

    A keyed hash, so nobody holding the database can confirm a guessed prompt without the key.
    And bound to its owner: the prompt hash a client sees is HMAC(owner key, prompt), where
    the owner key is HMAC(PROMPT_HASH_KEY, "owner:" + owner id). Were it the same for every
    owner, a client who saw another client's hash (an export, a log, a database copy) could
    confirm a guess by submitting it and comparing hashes.

    Two key ids (fingerprints of the key, never the key) tell the schemes apart in
    `prompt_hash_key_id`: `owner_key_id` for owner-bound hashes (every row written now), and
    `key_id` for the global hash, which rows written before the owner binding still carry and
    which the service still uses internally (cache keys and idempotency checks, never shown).
    """

    __slots__ = ("_key", "_owner_keys", "key_id", "owner_key_id")

    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self.key_id = hmac.new(self._key, b"agent-service key id", hashlib.sha256).hexdigest()[:16]
        self.owner_key_id = hmac.new(self._key, b"agent-service key id: owner-bound", hashlib.sha256).hexdigest()[:16]
        self._owner_keys: dict[uuid.UUID, bytes] = {}

    def hash(self, text: str) -> str:
        """The global hash: for what the service compares internally, never for a client's eyes."""
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def owner_hash(self, owner: uuid.UUID, text: str) -> str:
        """The hash of `text` as `owner`'s task carries it."""
        return hmac.new(self._owner_key(owner), text.encode(), hashlib.sha256).hexdigest()

    def _owner_key(self, owner: uuid.UUID) -> bytes:
        key = self._owner_keys.get(owner)
        if key is None:
            key = hmac.new(self._key, b"owner:" + str(owner).encode(), hashlib.sha256).digest()
            if len(self._owner_keys) >= _MAX_CACHED_OWNER_KEYS:
                self._owner_keys.clear()  # a derivation costs one HMAC: bounded memory beats a perfect cache
            self._owner_keys[owner] = key
        return key


def new_api_key() -> str:
    """A random key (256 bits), recognisable by its prefix in secret scanners."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 of the key: keys are random, so a plain hash is as safe as a slow one and far faster."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The first characters of a key, enough to tell keys apart in `keys list`."""
    return key[: len(API_KEY_PREFIX) + 6]
