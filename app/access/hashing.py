"""Keyed hashes of prompts (HMAC-SHA-256), and API keys: making them and hashing them."""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "ask_"


class PromptHasher:
    """HMAC-SHA-256 under the server's PROMPT_HASH_KEY.

    A keyed hash, so nobody holding the database can confirm a guessed prompt
    without the key. The key id (a fingerprint of the key, not the key) is stored
    beside every hash, so after a rotation old and new hashes are told apart.
    """

    __slots__ = ("_key", "key_id")

    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self.key_id = hmac.new(self._key, b"agent-service key id", hashlib.sha256).hexdigest()[:16]

    def hash(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def new_api_key() -> str:
    """A random key (256 bits), recognisable by its prefix in secret scanners."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 of the key: keys are random, so a plain hash is as safe as a slow one and far faster."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The first characters of a key, enough to tell keys apart in `keys list`."""
    return key[: len(API_KEY_PREFIX) + 6]
