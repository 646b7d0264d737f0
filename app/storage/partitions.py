"""The partitions of `audit_event`: one per UTC day of `occurred_at`, made ahead of time.

The layout (migration 4f5a6b7c8d9e starts it, this module keeps it going):

- `audit_event_history`, FROM (MINVALUE): the table as it was before partitioning, and anything
  older than the first day (rows written with an old `occurred_at`, which only tests and imports do);
- `audit_event_pYYYYMMDD`, one UTC day each, made DAYS_AHEAD days ahead;
- `audit_event_reserve`, TO (MAXVALUE): the safety net. An insert always finds a partition, even
  when nobody made the days ahead for a week. It is a plain range partition, not a DEFAULT one: a
  DEFAULT partition would forbid `DETACH … CONCURRENTLY` and make every new day scan it.

Making days replaces the reserve: in one transaction the reserve is detached, the new days and a
new reserve after them are created, and any rows the old reserve caught are moved into them (every
column kept, ids and transaction ids included, so seals and digests do not change). That takes an
ACCESS EXCLUSIVE lock on `audit_event` for a few milliseconds, every few days, under a short
`lock_timeout`: behind a long query it gives up and tries again at the next round instead of
making audited reads queue behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

from app.storage.sql import Statement

PARENT = "audit_event"
PREFIX = "audit_event_"  # every partition's name starts so (migrations/env.py leaves them out of `alembic check`)
HISTORY = "audit_event_history"
RESERVE = "audit_event_reserve"
DAYS_AHEAD = 7  # days made ahead of today ...
REFRESH_WITHIN = 3  # ... once fewer than this many are left
LOCK_TIMEOUT = "100ms"  # the longest audited reads may wait behind a partition change
PARTITION_LOCK_KEY = 0x70617274  # "part": one partition change at a time across replicas

_BOUND = r"(regexp_match(b, '{side} \(''([^'']+)''\)'))[1]::timestamptz"
LIST_PARTITIONS = Statement(
    "list_audit_partitions",
    f"""
SELECT c.relname, {_BOUND.format(side="FROM")}, {_BOUND.format(side="TO")}
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid, pg_get_expr(c.relpartbound, c.oid) AS b
WHERE i.inhparent = to_regclass('{PARENT}')
ORDER BY 2 NULLS FIRST
""",
)
TODAY = Statement("utc_today", "SELECT (now() AT TIME ZONE 'UTC')::date")
TRY_PARTITION_LOCK = Statement("try_partition_lock", "SELECT pg_try_advisory_lock(:lock_key)")
RELEASE_PARTITION_LOCK = Statement("release_partition_lock", "SELECT pg_advisory_unlock(:lock_key)")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    lower: datetime | None  # None: MINVALUE
    upper: datetime | None  # None: MAXVALUE

    @property
    def is_day(self) -> bool:
        return self.lower is not None and self.upper is not None


@dataclass(frozen=True, slots=True)
class Maintenance:
    created: tuple[str, ...] = ()
    moved: int = 0  # rows the old reserve had caught, moved into their days
    skipped: bool = False  # another process was changing partitions


def day_name(day: date) -> str:
    return f"{PREFIX}p{day:%Y%m%d}"


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _literal(when: datetime) -> str:
    return f"'{when.astimezone(UTC).isoformat()}'"  # our own datetimes only, never input


async def list_partitions(conn: asyncpg.Connection) -> list[Partition]:
    """Oldest first; empty when `audit_event` is not partitioned (a database before 4f5a6b7c8d9e)."""
    return [Partition(r[0], r[1], r[2]) for r in await LIST_PARTITIONS.fetch(conn)]


async def utc_today(conn: asyncpg.Connection) -> date:
    today: date = await TODAY.fetchval(conn)
    return today


def days_to_make(partitions: list[Partition], today: date, *, ahead: int = DAYS_AHEAD) -> list[date]:
    """The days to create now: none while REFRESH_WITHIN days or more are ready, else up to `ahead`."""
    if not partitions:
        return []
    reserve = partitions[-1] if partitions[-1].upper is None else None
    horizon = reserve.lower if reserve is not None else partitions[-1].upper
    assert horizon is not None
    first = horizon.astimezone(UTC).date()
    if first > today + timedelta(days=REFRESH_WITHIN):
        return []
    return [first + timedelta(days=n) for n in range((today + timedelta(days=ahead + 1) - first).days)]


async def ensure_partitions(conn: asyncpg.Connection, *, ahead: int = DAYS_AHEAD) -> Maintenance:
    """Make the days ahead (and a new reserve after them) when few are left; one process at a time.

    Raises asyncpg.LockNotAvailableError when `audit_event` was busy past LOCK_TIMEOUT: nothing
    changed, and the next round tries again (days are made well before they are needed)."""
    if not await TRY_PARTITION_LOCK.fetchval(conn, lock_key=PARTITION_LOCK_KEY):
        return Maintenance(skipped=True)
    try:
        partitions = await list_partitions(conn)
        days = days_to_make(partitions, await utc_today(conn), ahead=ahead)
        if not days:
            return Maintenance()
        has_reserve = partitions[-1].upper is None
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            if has_reserve:
                await conn.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {RESERVE}")
                await conn.execute(f"ALTER TABLE {RESERVE} RENAME TO {RESERVE}_old")
            for day in days:
                await conn.execute(
                    f"CREATE TABLE {day_name(day)} PARTITION OF {PARENT} FOR VALUES FROM "
                    f"({_literal(midnight(day))}) TO ({_literal(midnight(day + timedelta(days=1)))})"
                )
            end = midnight(days[-1] + timedelta(days=1))
            await conn.execute(
                f"CREATE TABLE {RESERVE} PARTITION OF {PARENT} FOR VALUES FROM ({_literal(end)}) TO (MAXVALUE)"
            )
            moved = 0
            if has_reserve:
                status = await conn.execute(f"INSERT INTO {PARENT} OVERRIDING SYSTEM VALUE SELECT * FROM {RESERVE}_old")
                moved = int(status.split()[-1])
                await conn.execute(f"DROP TABLE {RESERVE}_old")
        return Maintenance(tuple(day_name(day) for day in days), moved)
    finally:
        await RELEASE_PARTITION_LOCK.execute(conn, lock_key=PARTITION_LOCK_KEY)
