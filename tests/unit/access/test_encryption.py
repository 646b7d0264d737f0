"""Results sealed with AES-256-GCM under a key ring, bound to their row and field."""

from __future__ import annotations

import base64
import os
import uuid

import pytest

from app.access.encryption import (
    KeyRetired,
    ResultCipher,
    SealBroken,
    StaticKeyProvider,
    key_id_of,
    new_key_entry,
    parse_keys,
)

TASK, OWNER = uuid.uuid4(), uuid.uuid4()


def cipher(*entries: str) -> ResultCipher:
    return ResultCipher(StaticKeyProvider(parse_keys(",".join(entries))))


def test_a_sealed_result_opens_to_what_was_sealed_and_shows_none_of_it():
    ring = cipher(new_key_entry("k1"))
    sealed = ring.seal(b"MARKER the answer", task_id=TASK, owner_id=OWNER, field="output")
    assert b"MARKER" not in sealed
    assert ring.open(sealed, task_id=TASK, owner_id=OWNER, field="output") == b"MARKER the answer"
    assert key_id_of(sealed) == "k1"


def test_the_same_plaintext_seals_differently_each_time():
    ring = cipher(new_key_entry("k1"))
    first, second = (ring.seal(b"same", task_id=TASK, owner_id=OWNER, field="output") for _ in range(2))
    assert first != second


@pytest.mark.parametrize(
    ("task", "owner", "field"),
    [(uuid.uuid4(), OWNER, "output"), (TASK, uuid.uuid4(), "output"), (TASK, OWNER, "context")],
    ids=["another task", "another owner", "another field"],
)
def test_a_ciphertext_moved_to_another_row_or_field_does_not_open(task, owner, field):
    ring = cipher(new_key_entry("k1"))
    sealed = ring.seal(b"answer", task_id=TASK, owner_id=OWNER, field="output")
    with pytest.raises(SealBroken):
        ring.open(sealed, task_id=task, owner_id=owner, field=field)


def test_a_changed_byte_does_not_open():
    ring = cipher(new_key_entry("k1"))
    sealed = bytearray(ring.seal(b"answer", task_id=TASK, owner_id=OWNER, field="output"))
    sealed[-1] ^= 1
    with pytest.raises(SealBroken):
        ring.open(bytes(sealed), task_id=TASK, owner_id=OWNER, field="output")


def test_after_rotation_new_rows_use_the_new_key_and_old_rows_still_open():
    old_entry = new_key_entry("2026-11")
    before = cipher(old_entry)
    old_row = before.seal(b"old answer", task_id=TASK, owner_id=OWNER, field="output")

    after = cipher(new_key_entry("2026-12"), old_entry)
    new_row = after.seal(b"new answer", task_id=TASK, owner_id=OWNER, field="output")

    assert key_id_of(new_row) == after.active_key_id == "2026-12"
    assert after.open(old_row, task_id=TASK, owner_id=OWNER, field="output") == b"old answer"
    assert not after.is_active(old_row)


def test_a_retired_key_says_so():
    old = cipher(new_key_entry("2026-10")).seal(b"x", task_id=TASK, owner_id=OWNER, field="output")
    with pytest.raises(KeyRetired) as retired:
        cipher(new_key_entry("2026-12")).open(old, task_id=TASK, owner_id=OWNER, field="output")
    assert retired.value.key_id == "2026-10"


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "entry 1 must be"),
        ("nokey", "entry 1 must be"),
        ("bad id!:" + base64.b64encode(os.urandom(32)).decode(), "has an id"),
        ("k1:not base64!", "not base64"),
        ("k1:" + base64.b64encode(os.urandom(16)).decode(), "is 16 bytes"),
        ("k1:" + base64.b64encode(b"\0" * 32).decode(), "too regular"),
        ("k1:" + base64.b64encode(b"ab" * 16).decode(), "too regular"),
        (new_key_entry("k1") + "," + new_key_entry("k1"), "used twice"),
    ],
    ids=["empty", "no colon", "bad id", "not base64", "short", "zeros", "a pattern", "duplicate id"],
)
def test_malformed_or_weak_keys_are_refused_without_showing_them(value, rule):
    with pytest.raises(ValueError, match=rule) as refused:
        parse_keys(value)
    secret = value.partition(":")[2]
    if len(secret) > 8:
        assert secret not in str(refused.value)


def test_a_key_never_shows_in_its_repr():
    [key] = parse_keys(new_key_entry("k1"))
    assert base64.b64encode(key.secret).decode() not in repr(key)
