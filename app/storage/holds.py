"""Legal holds: placing, listing and releasing them (each with its audit event, in one statement),
and the SQL fragment every other statement uses to ask whether a task is held."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from app.domain import Actor, AuditAction, AuditOutcome, LegalHoldRecord
from app.storage.sql import Statement, column_list

HOLD_COLUMNS = column_list(LegalHoldRecord)
_MAX_TIME = "'infinity'::timestamptz"
_MAX_UUID = "'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid"


def held(task: str) -> str:
    """SQL: the task row `task` (an alias with `id` and `owner_id`) is under a hold in force, its
    own or its owner's. Both lookups go through the partial indexes of the holds in force."""
    return f"""EXISTS (
        SELECT 1 FROM legal_hold
        WHERE legal_hold.released_at IS NULL
          AND (legal_hold.task_id = {task}.id OR legal_hold.owner_key_id = {task}.owner_id))"""


_AUDIT = f"""
    INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id, detail)
    SELECT :actor_id, :actor_role, :channel, :action, task_id, '{AuditOutcome.OK}', :request_id,
           jsonb_build_object('hold_id', id, 'owner_key_id', owner_key_id)"""

# A hold is placed only on something there is: a task row (live, or expired and not yet purged,
# which is what a hold is for) or an API key. The audit event carries ids only, never the reference.
PLACE_HOLD = Statement(
    "place_hold",
    f"""
WITH target AS (
    SELECT 1 WHERE (:task_id::uuid IS NULL OR EXISTS (SELECT 1 FROM agent_task WHERE id = :task_id::uuid))
               AND (:owner_key_id::uuid IS NULL OR EXISTS (SELECT 1 FROM api_key WHERE id = :owner_key_id::uuid))
), placed AS (
    INSERT INTO legal_hold (id, reference, task_id, owner_key_id, created_by)
    SELECT :hold_id, :reference, :task_id::uuid, :owner_key_id::uuid, :actor_id FROM target
    RETURNING {HOLD_COLUMNS}
), audit AS ({_AUDIT} FROM placed
)
SELECT {HOLD_COLUMNS} FROM placed
""",
)

RELEASE_HOLD = Statement(
    "release_hold",
    f"""
WITH released AS (
    UPDATE legal_hold SET released_at = now() WHERE id = :hold_id AND released_at IS NULL
    RETURNING id, task_id, owner_key_id
), audit AS ({_AUDIT} FROM released
)
SELECT count(*) FROM released
""",
)

LIST_HOLDS = Statement(
    "list_holds",
    f"""
SELECT {HOLD_COLUMNS} FROM legal_hold
WHERE released_at IS NULL
  AND (created_at, id) < (coalesce(:before_created_at::timestamptz, {_MAX_TIME}),
                          coalesce(:before_id::uuid, {_MAX_UUID}))
ORDER BY created_at DESC, id DESC
LIMIT :limit
""",
)


# The holds in force on one task: its own, and those on its owner's every task.
LIST_TASK_HOLDS = Statement(
    "list_task_holds",
    f"""
SELECT {HOLD_COLUMNS} FROM legal_hold
WHERE released_at IS NULL
  AND (task_id = :task_id OR owner_key_id = (SELECT owner_id FROM agent_task WHERE id = :task_id))
ORDER BY created_at DESC, id DESC
LIMIT :limit
""",
)


def _actor(actor: Actor, action: AuditAction) -> dict[str, Any]:
    return {
        "actor_id": actor.key_id,
        "actor_role": actor.role,
        "channel": actor.channel.value,
        "request_id": actor.request_id,
        "action": action.value,
    }


async def place_hold(
    conn: asyncpg.Connection,
    *,
    hold_id: uuid.UUID,
    reference: str,
    task_id: uuid.UUID | None,
    owner_key_id: uuid.UUID | None,
    actor: Actor,
) -> LegalHoldRecord | None:
    """Place a hold and record it; None when its task or key does not exist."""
    row = await PLACE_HOLD.fetchrow(
        conn,
        hold_id=hold_id,
        reference=reference,
        task_id=task_id,
        owner_key_id=owner_key_id,
        **_actor(actor, AuditAction.HOLD_PLACE),
    )
    return None if row is None else LegalHoldRecord.from_row(row)


async def release_hold(conn: asyncpg.Connection, hold_id: uuid.UUID, actor: Actor) -> bool:
    """Release a hold in force and record it; False when there is no such hold in force."""
    return bool(await RELEASE_HOLD.fetchval(conn, hold_id=hold_id, **_actor(actor, AuditAction.HOLD_RELEASE)))


async def list_holds(
    conn: asyncpg.Connection, *, before: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[LegalHoldRecord]:
    """The holds in force, newest first, strictly before the `before` cursor."""
    created_at, hold_id = before if before is not None else (None, None)
    rows = await LIST_HOLDS.fetch(conn, before_created_at=created_at, before_id=hold_id, limit=limit)
    return [LegalHoldRecord.from_row(row) for row in rows]


async def list_task_holds(conn: asyncpg.Connection, task_id: uuid.UUID, *, limit: int) -> list[LegalHoldRecord]:
    """The holds in force on a task (its own and its owner's), newest first."""
    return [LegalHoldRecord.from_row(row) for row in await LIST_TASK_HOLDS.fetch(conn, task_id=task_id, limit=limit)]
