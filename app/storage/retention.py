"""The retention purge's statements: one purge at a time, short batches through the time indexes, and
whole days of audit events dropped as partitions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from app.storage.holds import held
from app.storage.partitions import LOCK_TIMEOUT
from app.storage.sql import Statement

# One purge at a time across every replica sharing the database.
PURGE_LOCK_KEY = 0x61676E74  # "agnt"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TRY_PURGE_LOCK = Statement("try_purge_lock", "SELECT pg_try_advisory_lock(:lock_key)")
RELEASE_PURGE_LOCK = Statement("release_purge_lock", "SELECT pg_advisory_unlock(:lock_key)")
DATABASE_NOW = Statement("database_now", "SELECT now()")

# A batch is chosen through the time index, resuming where the previous batch ended (so no
# batch walks over the index entries of rows already deleted), and deleted by physical row id
# (a TID scan). No row locks are taken first: the advisory lock keeps other purges out, and the
# time condition is checked again at delete time, so a row changed in between is simply left
# for the next run. A task under a legal hold in force (its own or its owner's) is passed over.
DELETE_EXPIRED_TASKS = Statement(
    "delete_expired_tasks",
    f"""
WITH doomed AS (
    SELECT ctid FROM agent_task
    WHERE expires_at <= :expired_by AND expires_at >= :resume_from AND NOT {held("agent_task")}
    ORDER BY expires_at LIMIT :limit
), gone AS (
    DELETE FROM agent_task
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM doomed)) AND expires_at <= :expired_by
    RETURNING expires_at
)
SELECT count(*), max(expires_at) FROM gone
""",
)

# Audit events go only as whole sealed ranges, oldest seal first, with their seals: a seal goes
# once the newest of its events is old enough, and only if every seal before it goes too, so the
# chain still verifies from the oldest seal kept. Unsealed events are never purged. A batch takes
# the oldest such seals up to about `limit` events (at least one seal).
_PURGEABLE_SEALS = """
SELECT id, event_ids, event_count FROM audit_seal
WHERE id < coalesce((SELECT min(id) FROM audit_seal WHERE last_occurred_at >= :before), 9223372036854775807)"""

DELETE_SEALED_AUDIT_EVENTS = Statement(
    "delete_sealed_audit_events",
    f"""
WITH doomed AS (
    SELECT id, event_ids FROM (
        SELECT id, event_ids, event_count, sum(event_count) OVER (ORDER BY id) AS upto FROM ({_PURGEABLE_SEALS}) AS s
    ) AS running
    WHERE upto - event_count < :limit
), events AS (  -- all older than :before (each seal's newest is): only the partitions before it are probed
    DELETE FROM audit_event WHERE id = ANY (ARRAY(SELECT unnest(event_ids) FROM doomed)) AND occurred_at < :before
    RETURNING 1
), seals AS (
    DELETE FROM audit_seal WHERE id IN (SELECT id FROM doomed) RETURNING id, digest
)
SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM seals), (SELECT digest FROM seals ORDER BY id DESC LIMIT 1)
""",
)

COUNT_EXPIRED = Statement(
    "count_expired",
    f"""
SELECT (SELECT count(*) FROM agent_task WHERE expires_at <= :expired_by AND NOT {held("agent_task")}),
       (SELECT coalesce(sum(event_count), 0) FROM ({_PURGEABLE_SEALS.replace(":before", ":audit_before")}) AS s)
""",
)

# The expired tasks a purge keeps for a legal hold: a figure for its audit event.
COUNT_HELD_EXPIRED = Statement(
    "count_held_expired",
    f"""
SELECT count(*) FROM agent_task WHERE expires_at <= :expired_by AND {held("agent_task")}
""",
)


@dataclass(frozen=True, slots=True)
class PurgeBatch:
    deleted: int
    resume_from: datetime  # where the next batch starts (the last deleted row's time)


async def try_purge_lock(conn: asyncpg.Connection) -> bool:
    """Take the cluster-wide purge lock for this session, if nobody holds it."""
    return bool(await TRY_PURGE_LOCK.fetchval(conn, lock_key=PURGE_LOCK_KEY))


async def release_purge_lock(conn: asyncpg.Connection) -> None:
    await RELEASE_PURGE_LOCK.execute(conn, lock_key=PURGE_LOCK_KEY)


async def database_now(conn: asyncpg.Connection) -> datetime:
    now: datetime = await DATABASE_NOW.fetchval(conn)
    return now


async def delete_expired_tasks(
    conn: asyncpg.Connection, *, expired_by: datetime, limit: int, resume_from: datetime | None = None
) -> PurgeBatch:
    """Delete up to `limit` tasks that expired by `expired_by`, oldest first."""
    row = await DELETE_EXPIRED_TASKS.fetchrow(
        conn, expired_by=expired_by, limit=limit, resume_from=resume_from or _EPOCH
    )
    assert row is not None
    return PurgeBatch(int(row[0]), row[1] or resume_from or _EPOCH)


@dataclass(frozen=True, slots=True)
class SealedPurgeBatch:
    events: int
    seals: int
    last_digest: str | None  # the digest of the newest seal deleted: where the kept chain picks up


async def delete_sealed_audit_events(conn: asyncpg.Connection, *, before: datetime, limit: int) -> SealedPurgeBatch:
    """Delete the oldest whole seals whose events are all older than `before`, with their events."""
    row = await DELETE_SEALED_AUDIT_EVENTS.fetchrow(conn, before=before, limit=limit)
    assert row is not None
    return SealedPurgeBatch(int(row[0]), int(row[1]), row[2])


async def count_held_expired(conn: asyncpg.Connection, *, expired_by: datetime) -> int:
    """How many tasks that expired by `expired_by` a legal hold keeps."""
    return int(await COUNT_HELD_EXPIRED.fetchval(conn, expired_by=expired_by))


async def count_expired(conn: asyncpg.Connection, *, expired_by: datetime, audit_before: datetime) -> tuple[int, int]:
    """What a purge would delete now: (tasks, audit events)."""
    row = await COUNT_EXPIRED.fetchrow(conn, expired_by=expired_by, audit_before=audit_before)
    assert row is not None
    return int(row[0]), int(row[1])


# -- whole days of audit events: a partition dropped with the seals that cover it ----------------------
#
# The seals that go with the partition ending at :bound are the oldest ones, up to the last whose
# events all passed the retention (:before) and that began before :bound: exactly the seals with an
# event in that partition or an older one (the older ones are gone already). The partition may go
# only if every event in it is covered by them: none has a transaction id at or past the newest
# one's watermark (a BRIN probe). Such a seal straddling :bound (the one sealed just after midnight)
# also lists a few events of the next day: those few, and only those, are deleted row by row.
_DOOMED_SEALS = """
SELECT id FROM audit_seal
WHERE id < coalesce((SELECT min(id) FROM audit_seal WHERE last_occurred_at >= :before OR first_occurred_at >= :bound),
                    9223372036854775807)"""

SEALS_FOR_PARTITION = Statement(
    "seals_for_partition",
    f"""
SELECT count(*), max(s.id), (SELECT xact_watermark FROM audit_seal WHERE id = max(s.id)),
       (SELECT digest FROM audit_seal WHERE id = max(s.id)), coalesce(sum(s.event_count), 0)
FROM audit_seal s WHERE s.id IN ({_DOOMED_SEALS})
""",
)

DELETE_STRADDLING_EVENTS = Statement(
    "delete_straddling_events",
    """
DELETE FROM audit_event
WHERE occurred_at >= :bound AND occurred_at < :before  -- the day or two after the dropped one, no more
  AND id = ANY (ARRAY(SELECT unnest(event_ids) FROM audit_seal WHERE id <= :through AND last_occurred_at >= :bound))
""",
)
DELETE_SEALS_THROUGH = Statement("delete_seals_through", "DELETE FROM audit_seal WHERE id <= :through")


@dataclass(frozen=True, slots=True)
class DroppedDay:
    partition: str
    events: int  # the events of the seals that went: the partition's rows and the straddling few
    seals: int
    last_digest: str | None


async def drop_sealed_partition(
    conn: asyncpg.Connection, *, partition: str, bound: datetime, before: datetime, dry_run: bool = False
) -> DroppedDay | None:
    """Drop the partition `partition` (ending at `bound`, all older than `before`) with the seals
    covering it, in one transaction; None (and nothing changed) while any of its events is unsealed.

    The DROP takes ACCESS EXCLUSIVE on audit_event for the commit only, under a short lock_timeout
    (asyncpg.LockNotAvailableError: nothing changed, try again)."""
    async with conn.transaction():
        row = await SEALS_FOR_PARTITION.fetchrow(conn, before=before, bound=bound)
        assert row is not None  # an aggregate: always one row
        seals, through, watermark, digest, events = row
        await conn.execute("SET LOCAL enable_seqscan = off")  # the probe goes through the BRIN index on xact
        uncovered = await conn.fetchval(
            f"SELECT 1 FROM {partition} WHERE xact >= $1 LIMIT 1", int(watermark) if watermark is not None else 0
        )
        await conn.execute("SET LOCAL enable_seqscan = on")
        if uncovered is not None:
            return None
        # Every event of the partition is in these seals (the probe), and every event of these seals is
        # in the partition or among the straddling few: their count is what goes, without a count(*)
        # over millions of rows.
        if dry_run:
            return DroppedDay(partition, int(events), int(seals), digest)
        if through is not None:
            await DELETE_STRADDLING_EVENTS.execute(conn, bound=bound, before=before, through=through)
            await DELETE_SEALS_THROUGH.execute(conn, through=through)
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(f"DROP TABLE {partition}")
    return DroppedDay(partition, int(events), int(seals), digest)
