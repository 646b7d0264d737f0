"""Which keys seal the stored results, and moving rows to the active key (re-encryption).

Each ciphertext names its key in its own bytes (`app.access.encryption`: version, id length,
id, ...), so the truth about which key a row needs is read from the ciphertexts themselves,
never from a column that could disagree with them: a row whose context was sealed by one
process and whose output by another, during a rotation, needs both keys.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.storage.sql import Statement


def _key_id(column: str) -> str:
    """SQL: the key id a sealed `column` names (bytes 3 to 2 + its length byte), NULL when empty."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL "
        f"ELSE convert_from(substring({column} FROM 3 FOR get_byte({column}, 1)), 'UTF8') END"
    )


# Per key id: the rows with a field it seals, and the latest expiry among them. A full scan: an
# operator's question, asked now and then, never on the request path.
KEY_STATUS = Statement(
    "result_key_status",
    f"""
WITH sealed AS (
    SELECT {_key_id("output")} AS key_id, id, expires_at FROM agent_task WHERE output IS NOT NULL
    UNION
    SELECT {_key_id("context")}, id, expires_at FROM agent_task WHERE context IS NOT NULL
    UNION  -- API keys' webhook signing secrets: they never expire
    SELECT {_key_id("webhook_secret")}, id, NULL FROM api_key WHERE webhook_secret IS NOT NULL
    UNION
    SELECT {_key_id("webhook_secret_previous")}, id, NULL FROM api_key WHERE webhook_secret_previous IS NOT NULL
)
SELECT key_id, count(DISTINCT id), max(expires_at),
       count(DISTINCT id) FILTER (WHERE expires_at IS NULL OR expires_at > now())
FROM sealed GROUP BY key_id ORDER BY key_id
""",
)

# The next rows, in id order after `after`, with a field sealed by a key other than `active`;
# locked (rows another transaction holds are skipped and met again on the next pass), so a
# runner finishing one of them waits a few milliseconds rather than having its answer undone.
LOCK_STALE_BATCH = Statement(
    "lock_stale_result_batch",
    f"""
SELECT id, owner_id, output, context FROM agent_task
WHERE id > :after
  AND ({_key_id("output")} <> :active OR {_key_id("context")} <> :active)
ORDER BY id
LIMIT :limit
FOR UPDATE SKIP LOCKED
""",
)

# The same rows, sealed again; in the batch's transaction, under its row locks.
RESEAL_BATCH = Statement(
    "reseal_result_batch",
    """
UPDATE agent_task AS t SET output = r.output, context = r.context
FROM unnest(:ids::uuid[], :outputs::bytea[], :contexts::bytea[]) AS r(id, output, context)
WHERE t.id = r.id
""",
)


# The API keys whose webhook secrets are sealed by a key other than `active`, locked (a handful
# of rows: one batch). Resealed with the key's id as their binding (app.access.keys).
LOCK_STALE_SECRETS = Statement(
    "lock_stale_webhook_secrets",
    f"""
SELECT id, webhook_secret, webhook_secret_previous FROM api_key
WHERE {_key_id("webhook_secret")} <> :active OR {_key_id("webhook_secret_previous")} <> :active
ORDER BY id
FOR UPDATE
""",
)

RESEAL_SECRET = Statement(
    "reseal_webhook_secret",
    "UPDATE api_key SET webhook_secret = :secret, webhook_secret_previous = :previous WHERE id = :id",
)


async def lock_stale_secrets(
    conn: asyncpg.Connection, *, active: str
) -> list[tuple[uuid.UUID, bytes | None, bytes | None]]:
    return [(row[0], row[1], row[2]) for row in await LOCK_STALE_SECRETS.fetch(conn, active=active)]


async def reseal_secret(
    conn: asyncpg.Connection, key_id: uuid.UUID, secret: bytes | None, previous: bytes | None
) -> None:
    await RESEAL_SECRET.execute(conn, id=key_id, secret=secret, previous=previous)


@dataclass(frozen=True, slots=True)
class KeyUse:
    """What one key still seals: rows (live and expired-not-yet-purged) and their latest expiry."""

    key_id: str
    rows: int
    latest_expiry: datetime | None
    live_rows: int


@dataclass(frozen=True, slots=True)
class SealedRow:
    id: uuid.UUID
    owner_id: uuid.UUID
    output: bytes | None
    context: bytes | None


async def key_status(conn: asyncpg.Connection) -> list[KeyUse]:
    rows = await KEY_STATUS.fetch(conn)
    return [KeyUse(row[0], int(row[1]), row[2], int(row[3])) for row in rows]


async def lock_stale_batch(conn: asyncpg.Connection, *, after: uuid.UUID, active: str, limit: int) -> list[SealedRow]:
    """Lock the next rows needing a key other than `active` (call inside a transaction)."""
    rows = await LOCK_STALE_BATCH.fetch(conn, after=after, active=active, limit=limit)
    return [SealedRow(row[0], row[1], row[2], row[3]) for row in rows]


async def reseal_batch(conn: asyncpg.Connection, rows: list[SealedRow]) -> None:
    await RESEAL_BATCH.execute(
        conn, ids=[r.id for r in rows], outputs=[r.output for r in rows], contexts=[r.context for r in rows]
    )
