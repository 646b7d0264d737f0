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


def test_the_owner_bound_hash_is_hmac_under_a_key_derived_for_the_owner():
    hasher, alice, bob = PromptHasher("k" * 40), uuid.uuid4(), uuid.uuid4()
    owner_key = hmac.new(b"k" * 40, f"owner:{alice}".encode(), hashlib.sha256).digest()
    assert hasher.owner_hash(alice, "hello") == hmac.new(owner_key, b"hello", hashlib.sha256).hexdigest()
    assert hasher.owner_hash(alice, "hello") != hasher.owner_hash(bob, "hello")
    assert hasher.owner_hash(alice, "hello") != hasher.hash("hello")


def test_the_two_schemes_have_their_own_key_ids():
    hasher = PromptHasher("k" * 40)
    assert hasher.owner_key_id != hasher.key_id
    assert len(hasher.owner_key_id) == 16


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
