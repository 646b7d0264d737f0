"""A caller's reads, cancels and erasures of tasks, each one statement with its audit event, and the audit log.

Each audited operation is a single statement whose CTE writes the audit event, so an
operation can never succeed without its audit row, and the hot path is one round trip.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from app.domain import (
    Actor,
    AuditAction,
    AuditedTask,
    AuditEventRecord,
    AuditOutcome,
    Channel,
    TaskRecord,
    TaskStatus,
)
from app.domain.audit import AuditFilters
from app.domain.tasks import UNFINISHED, TaskFilters
from app.storage.holds import held
from app.storage.sql import Statement, column_list, sql_values
from app.storage.tasks import TASK_COLUMNS

AUDIT_COLUMNS = column_list(AuditEventRecord)
_MAX_TIME = "'infinity'::timestamptz"
_MAX_UUID = "'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid"
_MAX_BIGINT = "9223372036854775807"

# The verdict of an audited lookup of the task `task_id`, shared by read and delete, for a
# caller limited to the tasks of `owner` (NULL: any owner). Another client's task is 'denied'
# in the audit trail but looks exactly like an unknown one to the caller. An expired task is
# gone for everyone, before ownership is considered (so nobody, auditors included, learns it
# is still awaiting the purge), except a task under a legal hold, which a caller limited to no
# owner (an auditor's or admin's read, an admin's erasure) still finds. `held` says whether a
# hold is in force on the task found.
_VERDICT = f"""
verdict AS (
    SELECT CASE
        WHEN found.id IS NULL THEN '{AuditOutcome.NOT_FOUND}'
        WHEN found.expires_at <= now() AND NOT (:owner::uuid IS NULL AND found.held) THEN '{AuditOutcome.EXPIRED}'
        WHEN :owner::uuid IS NOT NULL AND found.owner_id <> :owner::uuid THEN '{AuditOutcome.DENIED}'
        ELSE '{AuditOutcome.OK}'
    END AS outcome, coalesce(found.held, false) AS held
    FROM (SELECT 1) AS one
    LEFT JOIN (SELECT found.id, found.owner_id, found.expires_at, {held("found")} AS held FROM found) AS found ON true
)"""

_RECORD = """
    INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id)"""

# The hot path: the task and the audit event of reading it, in one statement.
READ_TASK_AUDITED = Statement(
    "read_task_audited",
    f"""
WITH found AS (
    SELECT {TASK_COLUMNS} FROM agent_task WHERE id = :task_id
), {_VERDICT}, audit AS ({_RECORD}
    SELECT :actor_id, :actor_role, :channel, '{AuditAction.READ}', :task_id, outcome, :request_id FROM verdict
)
SELECT verdict.outcome, verdict.held, found.* FROM verdict LEFT JOIN found ON verdict.outcome = '{AuditOutcome.OK}'
""",
)


def _actor(actor: Actor) -> dict[str, Any]:
    return {
        "actor_id": actor.key_id,
        "actor_role": actor.role,
        "channel": actor.channel.value,
        "request_id": actor.request_id,
    }


async def read_task_audited(
    conn: asyncpg.Connection, task_id: uuid.UUID, owner: uuid.UUID | None, actor: Actor
) -> AuditedTask:
    """Fetch a task and record the read, in one statement and one round trip."""
    row = await READ_TASK_AUDITED.fetchrow(conn, task_id=task_id, owner=owner, **_actor(actor))
    assert row is not None  # the verdict CTE always yields exactly one row
    outcome = AuditOutcome(row[0])
    return AuditedTask(outcome, TaskRecord.from_row(row[2:]) if outcome is AuditOutcome.OK else None, row[1])


DELETE_TASK_AUDITED = Statement(
    "delete_task_audited",
    f"""
WITH found AS (
    SELECT id, owner_id, expires_at FROM agent_task WHERE id = :task_id FOR UPDATE
), {_VERDICT}, judged AS (  -- a task under a legal hold is not erased, and the refusal is recorded
    SELECT CASE WHEN outcome = '{AuditOutcome.OK}' AND held THEN '{AuditOutcome.HELD}' ELSE outcome END AS outcome
    FROM verdict
), erased AS (
    DELETE FROM agent_task USING judged WHERE agent_task.id = :task_id AND judged.outcome = '{AuditOutcome.OK}'
    RETURNING agent_task.id
), audit AS ({_RECORD}
    SELECT :actor_id, :actor_role, :channel, '{AuditAction.DELETE}', :task_id, outcome, :request_id FROM judged
)
SELECT outcome FROM judged
""",
)


async def delete_task_audited(
    conn: asyncpg.Connection, task_id: uuid.UUID, owner: uuid.UUID | None, actor: Actor
) -> AuditOutcome:
    """Erase a task now and record the attempt, whatever its outcome (`held`: refused for a legal hold)."""
    return AuditOutcome(await DELETE_TASK_AUDITED.fetchval(conn, task_id=task_id, owner=owner, **_actor(actor)))


TASK_CANCELLED_CHANNEL = "task_cancelled"  # payload: the task id; the replica running it stops its job

# A cancel: the same verdict as an erasure (owners their own tasks, admins any), then 'finished'
# for a task that has already ended. Only a pending or running row changes, and only here; every
# other final write leaves a cancelled row alone (`WHERE status IN (pending, running)`). A
# cancelled task keeps the retention of a failed one (`failed_retention_seconds`, or NULL).
CANCEL_TASK_AUDITED = Statement(
    "cancel_task_audited",
    f"""
WITH found AS (
    SELECT id, owner_id, expires_at, status FROM agent_task WHERE id = :task_id FOR UPDATE
), {_VERDICT}, judged AS (
    SELECT CASE
        WHEN verdict.outcome = '{AuditOutcome.OK}' AND found.status NOT IN ({sql_values(UNFINISHED)})
        THEN '{AuditOutcome.FINISHED}' ELSE verdict.outcome
    END AS outcome
    FROM verdict LEFT JOIN found ON true
), cancelled AS (
    UPDATE agent_task SET status = '{TaskStatus.CANCELLED}', error_code = 'cancelled',
        error_message = 'cancelled at the request of its owner or an admin',
        completed_at = now(), lease_expires_at = NULL,
        expires_at = CASE WHEN :failed_retention_seconds::float8 IS NULL THEN expires_at
            ELSE least(expires_at, created_at + make_interval(secs => :failed_retention_seconds::float8)) END
    FROM judged WHERE agent_task.id = :task_id AND judged.outcome = '{AuditOutcome.OK}'
    RETURNING {column_list(TaskRecord, prefix="agent_task.")}
), audit AS ({_RECORD}
    SELECT :actor_id, :actor_role, :channel, '{AuditAction.CANCEL}', :task_id, outcome, :request_id FROM judged
)
SELECT judged.outcome, cancelled.* FROM judged LEFT JOIN cancelled ON true
""",
)
NOTIFY_CANCELLED = Statement("notify_task_cancelled", f"SELECT pg_notify('{TASK_CANCELLED_CHANNEL}', :task_id)")


async def cancel_task_audited(
    conn: asyncpg.Connection,
    task_id: uuid.UUID,
    owner: uuid.UUID | None,
    actor: Actor,
    *,
    failed_retention_seconds: float | None,
) -> tuple[AuditOutcome, TaskRecord | None]:
    """Cancel a pending or running task and record the attempt, whatever its outcome; announce a
    cancel on `TASK_CANCELLED_CHANNEL` in the same transaction, so the replica running the task
    hears of it only once it is committed."""
    async with conn.transaction():
        row = await CANCEL_TASK_AUDITED.fetchrow(
            conn, task_id=task_id, owner=owner, failed_retention_seconds=failed_retention_seconds, **_actor(actor)
        )
        assert row is not None  # the verdict CTE always yields exactly one row
        outcome = AuditOutcome(row[0])
        if outcome is not AuditOutcome.OK:
            return outcome, None
        await NOTIFY_CANCELLED.execute(conn, task_id=str(task_id))
    return outcome, TaskRecord.from_row(row[1:])


LIST_TASKS_AUDITED = Statement(
    "list_tasks_audited",
    f"""
WITH audit AS ({_RECORD}
    VALUES (:actor_id, :actor_role, :channel, '{AuditAction.LIST}', NULL, '{AuditOutcome.OK}', :request_id)
)
SELECT {TASK_COLUMNS} FROM agent_task
WHERE owner_id = :owner_id AND expires_at > now()
  AND (created_at, id) < (coalesce(:before_created_at::timestamptz, {_MAX_TIME}),
                          coalesce(:before_id::uuid, {_MAX_UUID}))
ORDER BY created_at DESC, id DESC
LIMIT :limit
""",
)


async def list_tasks_audited(
    conn: asyncpg.Connection,
    owner: uuid.UUID,
    *,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    actor: Actor,
) -> list[TaskRecord]:
    """An owner's live tasks, newest first, strictly before the `before` cursor."""
    created_at, task_id = before if before is not None else (None, None)
    rows = await LIST_TASKS_AUDITED.fetch(
        conn, owner_id=owner, before_created_at=created_at, before_id=task_id, limit=limit, **_actor(actor)
    )
    return [TaskRecord.from_row(row) for row in rows]


BROWSE_TASKS_AUDITED = Statement(
    "browse_tasks_audited",
    f"""
WITH audit AS ({_RECORD}
    VALUES (:actor_id, :actor_role, :channel, '{AuditAction.LIST}', :task_id::uuid, '{AuditOutcome.OK}', :request_id)
)
SELECT {TASK_COLUMNS} FROM agent_task
WHERE (:owner_id::uuid IS NULL OR owner_id = :owner_id::uuid) AND expires_at > now()
  AND (:status::text IS NULL OR status = :status::text)
  AND (:task_id::uuid IS NULL OR id = :task_id::uuid)
  AND (:model::text IS NULL OR model = :model::text)
  AND (:owner_filter::uuid IS NULL OR owner_id = :owner_filter::uuid)
  AND (:created_from::timestamptz IS NULL OR created_at >= :created_from::timestamptz)
  AND (:created_to::timestamptz IS NULL OR created_at < :created_to::timestamptz)
  AND (created_at, id) < (coalesce(:before_created_at::timestamptz, {_MAX_TIME}),
                          coalesce(:before_id::uuid, {_MAX_UUID}))
ORDER BY created_at DESC, id DESC
LIMIT :limit
""",
)


async def browse_tasks_audited(
    conn: asyncpg.Connection,
    owner: uuid.UUID | None,
    *,
    filters: TaskFilters,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    actor: Actor,
) -> list[TaskRecord]:
    """Live tasks of one owner (None: of every owner), narrowed by `filters` (status, id, model,
    owner, creation time), newest first, strictly before the `before` cursor; the listing is
    audited (`list`, with the task id asked for)."""
    created_at, before_id = before if before is not None else (None, None)
    rows = await BROWSE_TASKS_AUDITED.fetch(
        conn,
        owner_id=owner,
        status=None if filters.status is None else filters.status.value,
        task_id=filters.task_id,
        model=filters.model,
        owner_filter=filters.owner_id,
        created_from=filters.created_from,
        created_to=filters.created_to,
        before_created_at=created_at,
        before_id=before_id,
        limit=limit,
        **_actor(actor),
    )
    return [TaskRecord.from_row(row) for row in rows]


def _audit_read(task_id: str) -> str:
    """The audit event of reading the audit log (of one task, or `NULL`: of all)."""
    return f"""{_RECORD}
    VALUES (:actor_id, :actor_role, :channel, '{AuditAction.AUDIT_READ}', {task_id}, '{AuditOutcome.OK}',
            :request_id)"""


LIST_EVENTS_FOR_TASK = Statement(
    "list_events_for_task",
    f"""
WITH audit AS ({_audit_read(":task_id")})
SELECT {AUDIT_COLUMNS} FROM audit_event
WHERE task_id = :task_id AND id < coalesce(:before_id::bigint, {_MAX_BIGINT})
ORDER BY id DESC LIMIT :limit
""",
)

LIST_EVENTS = Statement(
    "list_events",
    f"""
WITH audit AS ({_audit_read("NULL")})
SELECT {AUDIT_COLUMNS} FROM audit_event
WHERE id < coalesce(:before_id::bigint, {_MAX_BIGINT})
ORDER BY id DESC LIMIT :limit
""",
)


# Narrowed by the console's filters (each NULL: any). Kept apart from the two plain listings
# above, whose simple plans REST's `/audit/events` relies on.
LIST_EVENTS_FILTERED = Statement(
    "list_events_filtered",
    f"""
WITH audit AS ({_audit_read(":task_id::uuid")})
SELECT {AUDIT_COLUMNS} FROM audit_event
WHERE id < coalesce(:before_id::bigint, {_MAX_BIGINT})
  AND (:task_id::uuid IS NULL OR task_id = :task_id::uuid)
  AND (:actor_filter::uuid IS NULL OR actor_id = :actor_filter::uuid)
  AND (:action::text IS NULL OR action = :action::text)
  AND (:outcome::text IS NULL OR outcome = :outcome::text)
  AND (:event_channel::text IS NULL OR channel = :event_channel::text)
  AND (:since::timestamptz IS NULL OR occurred_at >= :since::timestamptz)
  AND (:until::timestamptz IS NULL OR occurred_at < :until::timestamptz)
ORDER BY id DESC LIMIT :limit
""",
)


def _value(member: AuditAction | AuditOutcome | Channel | None) -> str | None:
    return None if member is None else member.value


async def list_audit_events_audited(
    conn: asyncpg.Connection,
    *,
    task_id: uuid.UUID | None,
    before_id: int | None,
    limit: int,
    actor: Actor,
    filters: AuditFilters | None = None,
) -> list[AuditEventRecord]:
    """Audit events, newest first (all, or one task's, narrowed by `filters`); reading the audit
    log is itself audited (`audit_read`, with the task id asked for)."""
    if filters is not None and filters.any:
        rows = await LIST_EVENTS_FILTERED.fetch(
            conn,
            task_id=task_id,
            before_id=before_id,
            limit=limit,
            actor_filter=filters.actor_id,
            action=_value(filters.action),
            outcome=_value(filters.outcome),
            event_channel=_value(filters.channel),
            since=filters.since,
            until=filters.until,
            **_actor(actor),
        )
    elif task_id is None:
        rows = await LIST_EVENTS.fetch(conn, before_id=before_id, limit=limit, **_actor(actor))
    else:
        rows = await LIST_EVENTS_FOR_TASK.fetch(
            conn, task_id=task_id, before_id=before_id, limit=limit, **_actor(actor)
        )
    return [AuditEventRecord.from_row(row) for row in rows]


RECORD_PURGE = Statement(
    "record_purge",
    f"""
INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id, detail)
VALUES (:actor_id, :actor_role, :channel, '{AuditAction.PURGE}', NULL, :outcome, :request_id, :detail)
""",
)


async def record_purge(conn: asyncpg.Connection, actor: Actor, outcome: AuditOutcome, detail: dict[str, Any]) -> None:
    """The purge run's audit event: figures only, never row contents."""
    await RECORD_PURGE.execute(conn, outcome=outcome.value, detail=detail, **_actor(actor))


RECORD_EXPORT = Statement(
    "record_export",
    f"""
INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id, detail)
VALUES (:actor_id, :actor_role, :channel, '{AuditAction.AUDIT_EXPORT}', NULL, '{AuditOutcome.OK}', :request_id, :detail)
""",
)


async def record_export(conn: asyncpg.Connection, actor: Actor, detail: dict[str, Any]) -> None:
    """An export of the audit trail: its window only."""
    await RECORD_EXPORT.execute(conn, detail=detail, **_actor(actor))
