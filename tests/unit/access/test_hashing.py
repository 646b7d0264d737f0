"""Prompt hashing and API keys."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from app.access.hashing import PromptHasher, display_prefix, hash_api_key, new_api_key
from app.domain import Principal, Role


def test_the_prompt_hash_is_hmac_sha256_under_the_server_key():
    hasher = PromptHasher("k" * 40)
    assert hasher.hash("hello") == hmac.new(b"k" * 40, b"hello", hashlib.sha256).hexdigest()
    assert hasher.hash("hello") != hashlib.sha256(b"hello").hexdigest()


def test_the_key_id_changes_with_the_key_and_reveals_nothing_of_it():
    first, second = PromptHasher("a" * 40), PromptHasher("b" * 40)
    assert first.key_id != second.key_id
    assert len(first.key_id) == 16
    assert "a" * 8 not in first.key_id


def test_api_keys_are_random_prefixed_and_hashed():
    key = new_api_key()
    assert key.startswith("ask_")
    assert len(key) == 47
    assert key != new_api_key()
    assert hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(display_prefix(key))
    assert len(display_prefix(key)) == 10


def test_only_auditors_and_admins_see_every_task():
    key = uuid.uuid4()
    assert Principal(key, "c", Role.CLIENT).owner_filter == key
    assert Principal(key, "a", Role.AUDITOR).owner_filter is None
    assert Principal(key, "a", Role.ADMIN).owner_filter is None
