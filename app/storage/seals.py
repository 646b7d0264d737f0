"""The audit seals' statements: sealing, reading the chain back, and the events each seal covers.

Nothing here touches the audited statements (app.storage.audit): an event's transaction id
comes from its column's DEFAULT, and the sealer reads only what has committed for everyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from app.domain import AuditEventRecord
from app.domain.seals import SealContent, SealRecord
from app.storage.audit import AUDIT_COLUMNS
from app.storage.sql import Statement

# One sealer at a time across every replica sharing the database (not the read path's business).
SEAL_LOCK_KEY = 0x7365616C  # "seal"
_CONTENT = (
    "id, sealed_at, xact_watermark, first_event_id, last_event_id, event_count, first_occurred_at, "
    "last_occurred_at, events_digest, previous_digest, key_id, digest, signature"
)
_SNAPSHOT_XMIN = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_SNAPSHOT_XMAX = "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"

TRY_SEAL_LOCK = Statement("try_seal_lock", "SELECT pg_try_advisory_lock(:lock_key)")
RELEASE_SEAL_LOCK = Statement("release_seal_lock", "SELECT pg_advisory_unlock(:lock_key)")

# In the sealer's REPEATABLE READ transaction, so the watermark and the events read belong to
# one snapshot: every transaction below its xmin has ended, and none can start below it.
SEAL_START = Statement(
    "seal_start",
    f"""
SELECT now(), {_SNAPSHOT_XMIN}, last.digest, last.xact_watermark
FROM (SELECT 1) AS one
LEFT JOIN (SELECT digest, xact_watermark FROM audit_seal ORDER BY id DESC LIMIT 1) AS last ON true
""",
)

# Where a seal of at most `cap` events must stop: the transaction id of the first event past it.
SEAL_CUT = Statement(
    "seal_cut",
    """
SELECT xact FROM audit_event WHERE xact >= :from_xact AND xact < :to_xact ORDER BY xact OFFSET :cap LIMIT 1
""",
)

EVENTS_TO_SEAL = Statement(
    "events_to_seal",
    f"SELECT {AUDIT_COLUMNS} FROM audit_event WHERE xact >= :from_xact AND xact < :to_xact ORDER BY id",
)

NEXT_SEAL_ID = Statement("next_seal_id", "SELECT nextval(pg_get_serial_sequence('audit_seal', 'id'))")

INSERT_SEAL = Statement(
    "insert_seal",
    f"""
INSERT INTO audit_seal ({_CONTENT}, event_ids, event_digests)
VALUES (:id, :sealed_at, :xact_watermark, :first_event_id, :last_event_id, :event_count, :first_occurred_at,
        :last_occurred_at, :events_digest, :previous_digest, :key_id, :digest, :signature, :event_ids, :event_digests)
""",
)

LIST_SEALS = Statement(
    "list_seals",
    f"SELECT {_CONTENT} FROM audit_seal WHERE id < coalesce(:before_id::bigint, 9223372036854775807) "
    "ORDER BY id DESC LIMIT :limit",
)

SEALS_AFTER = Statement(
    "seals_after",
    f"SELECT {_CONTENT}, event_ids, event_digests FROM audit_seal WHERE id > :after_id AND id <= :until_id "
    "ORDER BY id LIMIT :limit",
)

# The transaction-id floor of the seal `seal_id`: the watermark of the seal before it (0 for none).
XACT_FLOOR = Statement(
    "xact_floor",
    "SELECT coalesce((SELECT xact_watermark FROM audit_seal WHERE id < :seal_id ORDER BY id DESC LIMIT 1), 0)",
)

FIRST_SEAL_SINCE = Statement(
    "first_seal_since",
    "SELECT min(id) FROM audit_seal WHERE last_occurred_at >= :since",
)

# A seal's events lie between its first and last occurred_at (their minimum and maximum): the window
# keeps the look-up to the day partitions that hold them (a changed occurred_at shows as deleted).
EVENTS_BY_ID = Statement(
    "events_by_id",
    f"""
SELECT {AUDIT_COLUMNS} FROM audit_event
WHERE id = ANY(:ids::bigint[]) AND occurred_at >= :first_at AND occurred_at <= :last_at ORDER BY id
""",
)

# An event in a sealed transaction range that its seal does not list: inserted afterwards.
FIRST_UNLISTED = Statement(
    "first_unlisted",
    """
SELECT id FROM audit_event
WHERE xact >= :from_xact AND xact < :to_xact AND NOT (id = ANY(:ids::bigint[]))
ORDER BY id LIMIT 1
""",
)

# Past the last seal: events awaiting the next seal, and any whose transaction id has not even
# been handed out yet (which only a forged row can have).
UNSEALED = Statement(
    "unsealed",
    f"""
SELECT count(*) FILTER (WHERE xact < {_SNAPSHOT_XMAX}),
       min(id) FILTER (WHERE xact >= {_SNAPSHOT_XMAX})
FROM audit_event WHERE xact >= :from_xact
""",
)

PURGE_RECORDED = Statement(
    "purge_recorded",
    "SELECT min(id) FROM audit_event WHERE action = 'purge' AND detail->>'sealed_through' = :digest",
)

# The seals an export covers: every seal from the first to the last one with an event in the window.
SEALS_IN_WINDOW = Statement(
    "seals_in_window",
    "SELECT min(id), max(id) FROM audit_seal WHERE first_occurred_at < :until AND last_occurred_at >= :since",
)

UNSEALED_IN_WINDOW = Statement(
    "unsealed_in_window",
    """
SELECT count(*) FROM audit_event
WHERE occurred_at >= :since AND occurred_at < :until
  AND xact >= coalesce((SELECT xact_watermark FROM audit_seal ORDER BY id DESC LIMIT 1), 0)
""",
)


def _seal(row: Sequence[Any], *, lists: bool) -> SealRecord:
    content = SealContent(*row[:11])
    if not lists:
        return SealRecord(content, row[11], row[12])
    return SealRecord(content, row[11], row[12], tuple(row[13]), tuple(row[14]))


async def try_seal_lock(conn: asyncpg.Connection) -> bool:
    return bool(await TRY_SEAL_LOCK.fetchval(conn, lock_key=SEAL_LOCK_KEY))


async def release_seal_lock(conn: asyncpg.Connection) -> None:
    await RELEASE_SEAL_LOCK.execute(conn, lock_key=SEAL_LOCK_KEY)


async def seal_start(conn: asyncpg.Connection) -> tuple[datetime, int, str | None, int]:
    """(now, this snapshot's xmin, the last seal's digest or None, the last seal's watermark or 0)."""
    row = await SEAL_START.fetchrow(conn)
    assert row is not None
    return row[0], int(row[1]), row[2], int(row[3] or 0)


async def seal_cut(conn: asyncpg.Connection, *, from_xact: int, to_xact: int, cap: int) -> int | None:
    """Where to stop a seal short so it covers at most `cap` events (None: no need)."""
    cut = await SEAL_CUT.fetchval(conn, from_xact=from_xact, to_xact=to_xact, cap=cap)
    return None if cut is None else int(cut)


async def events_to_seal(conn: asyncpg.Connection, *, from_xact: int, to_xact: int) -> list[AuditEventRecord]:
    rows = await EVENTS_TO_SEAL.fetch(conn, from_xact=from_xact, to_xact=to_xact)
    return [AuditEventRecord.from_row(row) for row in rows]


async def next_seal_id(conn: asyncpg.Connection) -> int:
    return int(await NEXT_SEAL_ID.fetchval(conn))


async def insert_seal(conn: asyncpg.Connection, seal: SealRecord) -> None:
    c = seal.content
    await INSERT_SEAL.execute(
        conn,
        id=c.seal_id,
        sealed_at=c.sealed_at,
        xact_watermark=c.xact_watermark,
        first_event_id=c.first_event_id,
        last_event_id=c.last_event_id,
        event_count=c.event_count,
        first_occurred_at=c.first_occurred_at,
        last_occurred_at=c.last_occurred_at,
        events_digest=c.events_digest,
        previous_digest=c.previous_digest,
        key_id=c.key_id,
        digest=seal.digest,
        signature=seal.signature,
        event_ids=list(seal.event_ids),
        event_digests=list(seal.event_digests),
    )


async def list_seals(conn: asyncpg.Connection, *, before_id: int | None, limit: int) -> list[SealRecord]:
    """Seals newest first, without their event lists."""
    return [_seal(row, lists=False) for row in await LIST_SEALS.fetch(conn, before_id=before_id, limit=limit)]


async def seals_after(
    conn: asyncpg.Connection, *, after_id: int, until_id: int = 2**63 - 1, limit: int = 100
) -> list[SealRecord]:
    """Seals in chain order after `after_id` (up to `until_id`), with their event lists: a page to walk."""
    rows = await SEALS_AFTER.fetch(conn, after_id=after_id, until_id=until_id, limit=limit)
    return [_seal(row, lists=True) for row in rows]


async def xact_floor(conn: asyncpg.Connection, seal_id: int) -> int:
    return int(await XACT_FLOOR.fetchval(conn, seal_id=seal_id))


async def first_seal_since(conn: asyncpg.Connection, since: datetime) -> int | None:
    found = await FIRST_SEAL_SINCE.fetchval(conn, since=since)
    return None if found is None else int(found)


async def events_by_id(conn: asyncpg.Connection, seal: SealRecord) -> list[AuditEventRecord]:
    """The events a seal lists, as stored now."""
    c = seal.content
    rows = await EVENTS_BY_ID.fetch(
        conn, ids=list(seal.event_ids), first_at=c.first_occurred_at, last_at=c.last_occurred_at
    )
    return [AuditEventRecord.from_row(row) for row in rows]


async def first_unlisted(conn: asyncpg.Connection, *, from_xact: int, to_xact: int, ids: Sequence[int]) -> int | None:
    found = await FIRST_UNLISTED.fetchval(conn, from_xact=from_xact, to_xact=to_xact, ids=list(ids))
    return None if found is None else int(found)


async def unsealed(conn: asyncpg.Connection, *, from_xact: int) -> tuple[int, int | None]:
    """(events awaiting a seal, the first event whose transaction id lies in the future)."""
    row = await UNSEALED.fetchrow(conn, from_xact=from_xact)
    assert row is not None
    return int(row[0]), row[1]


async def purge_recorded(conn: asyncpg.Connection, digest: str) -> int | None:
    """The purge event that recorded removing the seal of `digest` (and all before it), if any."""
    found = await PURGE_RECORDED.fetchval(conn, digest=digest)
    return None if found is None else int(found)


async def seals_in_window(conn: asyncpg.Connection, *, since: datetime, until: datetime) -> tuple[int, int] | None:
    row = await SEALS_IN_WINDOW.fetchrow(conn, since=since, until=until)
    assert row is not None
    return None if row[0] is None else (int(row[0]), int(row[1]))


async def unsealed_in_window(conn: asyncpg.Connection, *, since: datetime, until: datetime) -> int:
    return int(await UNSEALED_IN_WINDOW.fetchval(conn, since=since, until=until))
