"""API key rows against a real PostgreSQL: found by their hash until revoked, and counted."""

from __future__ import annotations

import uuid

from app.domain import Role
from app.storage import keys as key_sql


async def test_api_keys_are_found_by_hash_until_revoked(db):
    record = await key_sql.insert_api_key(db, name="n", role=Role.ADMIN, key_hash="h" * 64, key_prefix="ask_abc")
    assert (await key_sql.find_active_key(db, "h" * 64)) == record
    revoked = await key_sql.revoke_api_key(db, record.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert await key_sql.find_active_key(db, "h" * 64) is None
    assert await key_sql.revoke_api_key(db, uuid.uuid4()) is None
    assert await key_sql.count_api_keys(db) == 1
