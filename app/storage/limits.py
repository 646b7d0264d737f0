"""Per-key limits shared by every replica: the request rate (GCRA) and the running-task count."""

from __future__ import annotations

import uuid

import asyncpg

from app.domain.tasks import UNFINISHED
from app.storage.sql import Statement, sql_values

# GCRA: a request is allowed while the key's next_allowed_at is at most `tolerance_seconds`
# ahead of now; each allowed request moves it `interval_seconds` on. A refused request changes
# nothing.
TAKE_RATE_SLOT = Statement(
    "take_rate_slot",
    """
INSERT INTO rate_limit AS r (api_key_id, next_allowed_at)
VALUES (:key_id, now() + make_interval(secs => :interval_seconds::float8))
ON CONFLICT (api_key_id) DO UPDATE
   SET next_allowed_at = greatest(r.next_allowed_at, now()) + make_interval(secs => :interval_seconds::float8)
 WHERE r.next_allowed_at <= now() + make_interval(secs => :tolerance_seconds::float8)
RETURNING true
""",
)

RATE_WAIT = Statement(
    "rate_wait",
    """
SELECT extract(epoch FROM next_allowed_at - now())::float8 - :tolerance_seconds
FROM rate_limit WHERE api_key_id = :key_id
""",
)


async def take_rate_slot(
    conn: asyncpg.Connection, key_id: uuid.UUID, *, interval_seconds: float, tolerance_seconds: float
) -> float | None:
    """Count one request against the key's rate; None if allowed, else seconds until one would be."""
    if await TAKE_RATE_SLOT.fetchval(
        conn, key_id=key_id, interval_seconds=interval_seconds, tolerance_seconds=tolerance_seconds
    ):
        return None
    wait = await RATE_WAIT.fetchval(conn, key_id=key_id, tolerance_seconds=tolerance_seconds)
    return max(float(wait or 0.0), 0.0)


LOCK_OWNER_TASKS = Statement(
    "lock_owner_tasks",
    "SELECT pg_advisory_xact_lock(hashtextextended('agent_task owner ' || :owner_id::uuid::text, 0))",
)


async def lock_owner_tasks(conn: asyncpg.Connection, owner: uuid.UUID) -> None:
    """Serialize task admission for one key until the transaction ends (every replica)."""
    await LOCK_OWNER_TASKS.execute(conn, owner_id=owner)


COUNT_RUNNING_TASKS = Statement(
    "count_running_tasks",
    f"""
SELECT count(*) FROM agent_task
WHERE owner_id = :owner_id AND status IN ({sql_values(UNFINISHED)})
  AND lease_expires_at > now() AND expires_at > now()
""",
)


async def count_running_tasks(conn: asyncpg.Connection, owner: uuid.UUID) -> int:
    """A key's unfinished tasks that a live runner vouches for (abandoned ones are not counted)."""
    return int(await COUNT_RUNNING_TASKS.fetchval(conn, owner_id=owner))
