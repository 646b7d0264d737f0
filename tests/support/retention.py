"""Rows for the retention tests, written the fast way: an owner key, tasks expiring when asked,
audit events of a given age."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

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


async def lay_out_days(
    db: asyncpg.Connection,
    *,
    history_until: date,
    days: list[date],
    reserve_from: date,
    recent_from: date | None = None,
) -> None:
    """Lay audit_event's partitions out as a service running for a while would have them (the test
    database's are all young): the history up to `history_until`, one partition per day in `days`,
    one for the recent past from `recent_from` (if given) to `reserve_from`, and the reserve from
    then. Whatever rows the old partitions held go with them."""
    from app.storage.partitions import HISTORY, RESERVE, day_name, list_partitions, midnight

    for partition in await list_partitions(db):
        await db.execute(f"DROP TABLE {partition.name}")
    await db.execute(
        f"CREATE TABLE {HISTORY} PARTITION OF audit_event FOR VALUES FROM (MINVALUE) TO ('{midnight(history_until)}')"
    )
    for day in days:
        await db.execute(
            f"CREATE TABLE {day_name(day)} PARTITION OF audit_event FOR VALUES FROM ('{midnight(day)}')"
            f" TO ('{midnight(day + timedelta(days=1))}')"
        )
    if recent_from is not None:
        await db.execute(
            f"CREATE TABLE audit_event_recent PARTITION OF audit_event FOR VALUES FROM ('{midnight(recent_from)}')"
            f" TO ('{midnight(reserve_from)}')"
        )
    await db.execute(
        f"CREATE TABLE {RESERVE} PARTITION OF audit_event FOR VALUES FROM ('{midnight(reserve_from)}') TO (MAXVALUE)"
    )


async def add_audit_events_at(db: asyncpg.Connection, count: int, *, at: datetime) -> None:
    await db.execute(
        "INSERT INTO audit_event (occurred_at, channel, action, outcome)"
        " SELECT $1::timestamptz, 'rest', 'read', 'ok' FROM generate_series(1, $2)",
        at,
        count,
    )
