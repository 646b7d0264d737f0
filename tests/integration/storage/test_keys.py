"""API key rows against a real PostgreSQL: found by their hash until revoked, and counted; every
change announced to the other processes when its transaction commits."""

from __future__ import annotations

import contextlib
import json
import uuid

import asyncpg

from app.domain import Role
from app.storage import keys as key_sql
from tests.support.faults import until


async def test_api_keys_are_found_by_hash_until_revoked(db):
    record = await key_sql.insert_api_key(db, name="n", role=Role.ADMIN, key_hash="h" * 64, key_prefix="ask_abc")
    assert (await key_sql.find_active_key(db, "h" * 64)) == record
    revoked = await key_sql.revoke_api_key(db, record.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert await key_sql.find_active_key(db, "h" * 64) is None
    assert await key_sql.revoke_api_key(db, uuid.uuid4()) is None
    assert await key_sql.count_api_keys(db) == 1


async def test_creating_revoking_and_changing_limits_notify_when_the_transaction_commits(db, database_url):
    heard: list[dict[str, str]] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(key_sql.KEY_EVENTS_CHANNEL, lambda *args: heard.append(json.loads(args[-1])))
    try:
        async with db.transaction():
            record = await key_sql.insert_api_key(db, name="n", role=Role.CLIENT, key_hash="k" * 64, key_prefix="ask_k")
        async with db.transaction():
            await key_sql.set_key_limits(db, record.id, rate_limit_per_minute=5, max_running_tasks=None)
        with contextlib.suppress(RuntimeError):
            async with db.transaction():
                await key_sql.revoke_api_key(db, record.id)
                raise RuntimeError("rolled back: nobody hears of it")
        async with db.transaction():
            await key_sql.revoke_api_key(db, record.id)
        await until(lambda: len(heard) >= 3, within=2)
    finally:
        await listener.close()

    expected = {"id": str(record.id), "key_hash": "k" * 64}
    assert heard == [{"event": event, **expected} for event in ("created", "limits", "revoked")]


async def test_the_active_key_hashes_are_listed_newest_first_up_to_a_limit(db):
    for n in range(3):
        await key_sql.insert_api_key(db, name=f"k{n}", role=Role.CLIENT, key_hash=f"{n}" * 64, key_prefix="ask_x")
    revoked = await key_sql.insert_api_key(db, name="r", role=Role.CLIENT, key_hash="r" * 64, key_prefix="ask_r")
    await key_sql.revoke_api_key(db, revoked.id)

    assert set(await key_sql.list_active_key_hashes(db, limit=10)) == {"0" * 64, "1" * 64, "2" * 64}
    assert len(await key_sql.list_active_key_hashes(db, limit=2)) == 2
