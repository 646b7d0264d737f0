"""Rows for the retention tests, written the fast way: an owner key, tasks expiring when asked,
audit events of a given age."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from app.domain import Role
from app.storage import keys as key_sql


async def owner_key(db: asyncpg.Connection) -> uuid.UUID:
    record = await key_sql.insert_api_key(
        db, name="owner", role=Role.CLIENT, key_hash=uuid.uuid4().hex * 2, key_prefix="ask_x"
    )
    return record.id


async def add_tasks(db: asyncpg.Connection, owner: uuid.UUID, count: int, *, expires_in: timedelta) -> list[uuid.UUID]:
    """Tasks written the fast way (one statement), expiring `expires_in` from now."""
    rows = await db.fetch(
        """
        INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, expires_at, output)
        SELECT gen_random_uuid(), $1, 'succeeded', 'offline:echo', md5(i::text) || md5(i::text), 'k',
               now() + $2::interval, convert_to('sealed answer ' || i, 'UTF8')  -- storage sees ciphertext only
        FROM generate_series(1, $3) AS i
        RETURNING id
        """,
        owner,
        expires_in,
        count,
    )
    return [r["id"] for r in rows]


async def add_audit_events(db: asyncpg.Connection, count: int, *, age: timedelta) -> None:
    await db.execute(
        """
        INSERT INTO audit_event (occurred_at, channel, action, outcome)
        SELECT now() - $1::interval, 'rest', 'read', 'ok' FROM generate_series(1, $2)
        """,
        age,
        count,
    )
