"""Tasks: storing a submission (or a cache hit), running it under a lease, and its result.

Every function takes an asyncpg connection (the caller owns the transaction) and returns the
records of `app.domain`. A task is stored together with its `create` audit event in one
statement, so no task exists without its audit row.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from app.domain import Actor, AuditAction, AuditOutcome, NewTask, TaskOutcome, TaskRecord, TaskStatus
from app.domain.tasks import UNFINISHED
from app.storage.sql import Statement, column_list, sql_values

TASK_COLUMNS = column_list(TaskRecord)
_LIVE = sql_values(UNFINISHED)  # a runner vouches for these (a lease)

_NEW_TASK_COLUMNS = """id, owner_id, status, model, template, prompt_hash, prompt_hash_key_id, context, params,
    expires_at, cache_key, idempotency_key, request_hash, output_stored, webhook_url, response_format"""
_NEW_TASK_VALUES = """:id, :owner_id, :status, :model, :template, :prompt_hash, :prompt_hash_key_id, :context, :params,
    now() + make_interval(secs => :retention_seconds), :cache_key, :idempotency_key, :request_hash, :output_stored,
    :webhook_url, :response_format"""
_AUDIT_CREATE = f"""
    INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id)
    SELECT :actor_id, :actor_role, :channel, '{AuditAction.CREATE}', id, '{AuditOutcome.OK}', :request_id FROM task"""
# An idempotency key lives until its task expires: a new task with the key takes it over from an
# expired one (else a replay that finds its task expired could not make a new one). The insert
# reads `released` (FROM _KEY_RELEASED), so the key is let go before the new row claims it.
_RELEASE_EXPIRED_KEY = """
released AS (
    UPDATE agent_task SET idempotency_key = NULL
    WHERE owner_id = :owner_id AND idempotency_key = :idempotency_key AND expires_at <= now()
    RETURNING id
)"""
_KEY_RELEASED = "(SELECT count(*) FROM released) AS key_released"

INSERT_TASK = Statement(
    "insert_task",
    f"""
WITH {_RELEASE_EXPIRED_KEY}, task AS (
    INSERT INTO agent_task ({_NEW_TASK_COLUMNS}, lease_expires_at)
    SELECT {_NEW_TASK_VALUES}, now() + make_interval(secs => :lease_seconds::float8)
    FROM {_KEY_RELEASED}
    RETURNING {TASK_COLUMNS}
), audit AS ({_AUDIT_CREATE}
)
SELECT {TASK_COLUMNS} FROM task
""",
)


# A cache hit: a new, finished task whose answer is the source's, opened and sealed again for the
# new row by the service (`:output`; a ciphertext opens only in its own row). The source must
# still be a fresh succeeded task when the copy is written: an expired answer is gone. A
# not-stored answer (`output_stored` false) is never a source: it was for its caller only.
INSERT_CACHED_COPY = Statement(
    "insert_cached_copy",
    f"""
WITH source AS (
    SELECT prompt_tokens, completion_tokens, total_tokens FROM agent_task
    WHERE id = :source_id AND status = '{TaskStatus.SUCCEEDED}' AND expires_at > now() AND output_stored
), {_RELEASE_EXPIRED_KEY}, task AS (
    INSERT INTO agent_task ({_NEW_TASK_COLUMNS},
                            output, prompt_tokens, completion_tokens, total_tokens, cached, completed_at, cost_usd)
    SELECT {_NEW_TASK_VALUES},
           :output, prompt_tokens, completion_tokens, total_tokens, true, now(), 0
    FROM source, {_KEY_RELEASED}
    RETURNING {TASK_COLUMNS}
), audit AS ({_AUDIT_CREATE}
)
SELECT {TASK_COLUMNS} FROM task
""",
)


def _new_task_values(task: NewTask, actor: Actor) -> dict[str, Any]:
    return {
        "id": task.id,
        "owner_id": task.owner_id,
        "status": task.status.value,
        "model": task.model,
        "template": task.template,
        "prompt_hash": task.prompt_hash,
        "prompt_hash_key_id": task.prompt_hash_key_id,
        "context": task.context,
        "params": task.params,
        "retention_seconds": task.retention_seconds,
        "cache_key": task.cache_key,
        "idempotency_key": task.idempotency_key,
        "request_hash": task.request_hash,
        "output_stored": task.output_stored,
        "webhook_url": task.webhook_url,
        "response_format": task.response_format,
        "actor_id": actor.key_id,
        "actor_role": actor.role,
        "channel": actor.channel.value,
        "request_id": actor.request_id,
    }


async def insert_task(conn: asyncpg.Connection, task: NewTask, actor: Actor) -> TaskRecord:
    """Store a new task and its `create` audit event in one statement."""
    row = await INSERT_TASK.fetchrow(conn, **_new_task_values(task, actor), lease_seconds=task.lease_seconds)
    assert row is not None
    return TaskRecord.from_row(row)


async def insert_cached_copy(
    conn: asyncpg.Connection, task: NewTask, actor: Actor, source_id: uuid.UUID, output: bytes | None
) -> TaskRecord | None:
    """Store a cache hit (the answer of `source_id`, sealed for this row as `output`) and its
    audit event; None if the source is gone or has expired."""
    row = await INSERT_CACHED_COPY.fetchrow(conn, **_new_task_values(task, actor), source_id=source_id, output=output)
    return None if row is None else TaskRecord.from_row(row)


FIND_CACHED = Statement(
    "find_cached",
    f"""
SELECT {TASK_COLUMNS} FROM agent_task
WHERE owner_id = :owner_id AND cache_key = :cache_key AND expires_at > now() AND output_stored
  AND created_at > now() - make_interval(secs => :max_age_seconds::float8)
  AND (status = '{TaskStatus.SUCCEEDED}' OR (status IN ({_LIVE}) AND lease_expires_at > now()))
ORDER BY status = '{TaskStatus.SUCCEEDED}' DESC, created_at DESC
LIMIT 1
""",
)


async def find_cached(
    conn: asyncpg.Connection, owner: uuid.UUID, cache_key: str, *, max_age_seconds: float
) -> TaskRecord | None:
    """The owner's newest live task with this cache key that is finished or still being answered.

    Finished means succeeded within the cache TTL; in flight means pending or running
    under a live lease (its answer is coming: wait for it rather than ask again). A task whose
    answer is not stored is neither: there is nothing to copy, and it never will be.
    """
    row = await FIND_CACHED.fetchrow(conn, owner_id=owner, cache_key=cache_key, max_age_seconds=max_age_seconds)
    return None if row is None else TaskRecord.from_row(row)


LOCK_CACHE_KEY = Statement("lock_cache_key", "SELECT pg_advisory_xact_lock(hashtextextended(:cache_key, 0))")


async def lock_cache_key(conn: asyncpg.Connection, cache_key: str) -> None:
    """Serialize look-up-then-insert for one cache key across processes (until the transaction ends)."""
    await LOCK_CACHE_KEY.execute(conn, cache_key=cache_key)


GET_TASK = Statement("get_task", f"SELECT {TASK_COLUMNS} FROM agent_task WHERE id = :task_id")


async def get_task(conn: asyncpg.Connection, task_id: uuid.UUID) -> TaskRecord | None:
    """A task by id, unaudited: for the service's own bookkeeping, never a caller's read."""
    row = await GET_TASK.fetchrow(conn, task_id=task_id)
    return None if row is None else TaskRecord.from_row(row)


FIND_BY_IDEMPOTENCY_KEY = Statement(
    "find_by_idempotency_key",
    f"""
SELECT created_at > now() - make_interval(secs => :window_seconds::float8) AND expires_at > now(), {TASK_COLUMNS}
FROM agent_task WHERE owner_id = :owner_id AND idempotency_key = :idempotency_key
""",
)


async def find_by_idempotency_key(
    conn: asyncpg.Connection, owner: uuid.UUID, key: str, *, window_seconds: float
) -> tuple[TaskRecord, bool] | None:
    """The task made with this key, and whether it is within the window (and not expired)."""
    row = await FIND_BY_IDEMPOTENCY_KEY.fetchrow(
        conn, owner_id=owner, idempotency_key=key, window_seconds=window_seconds
    )
    return None if row is None else (TaskRecord.from_row(row[1:]), bool(row[0]))


RELEASE_IDEMPOTENCY_KEY = Statement(
    "release_idempotency_key", "UPDATE agent_task SET idempotency_key = NULL WHERE id = :task_id"
)


async def release_idempotency_key(conn: asyncpg.Connection, task_id: uuid.UUID) -> None:
    """Free a key whose window has passed, so the caller may use it again."""
    await RELEASE_IDEMPOTENCY_KEY.execute(conn, task_id=task_id)


COMPLETE_AS_COPY = Statement(
    "complete_as_copy",
    f"""
UPDATE agent_task AS t
SET status = '{TaskStatus.SUCCEEDED}', output = :output, prompt_tokens = s.prompt_tokens,
    completion_tokens = s.completion_tokens, total_tokens = s.total_tokens, cached = true, cost_usd = 0,
    completed_at = now(), lease_expires_at = NULL
FROM agent_task AS s
WHERE t.id = :task_id AND t.status IN ({_LIVE})
  AND s.id = :source_id AND s.status = '{TaskStatus.SUCCEEDED}' AND s.expires_at > now()
  AND s.output_stored
RETURNING {column_list(TaskRecord, prefix="t.")}
""",
)


async def complete_as_copy(
    conn: asyncpg.Connection, task_id: uuid.UUID, source_id: uuid.UUID, output: bytes | None
) -> TaskRecord | None:
    """Finish a task with the answer of an identical one (single flight), sealed for this row as
    `output`; None if either is gone, or the source has expired (a leader may finish after its
    own `expires_at`): never copy that."""
    row = await COMPLETE_AS_COPY.fetchrow(conn, task_id=task_id, source_id=source_id, output=output)
    return None if row is None else TaskRecord.from_row(row)


MARK_RUNNING = Statement(
    "mark_running",
    f"""
UPDATE agent_task
SET status = '{TaskStatus.RUNNING}', lease_expires_at = now() + make_interval(secs => :lease_seconds::float8)
WHERE id = :task_id AND status = '{TaskStatus.PENDING}'
""",
)


async def mark_running(conn: asyncpg.Connection, task_id: uuid.UUID, lease_seconds: float) -> bool:
    """pending -> running; False when the task is gone or no longer pending."""
    return await MARK_RUNNING.execute(conn, task_id=task_id, lease_seconds=lease_seconds) == "UPDATE 1"


RENEW_LEASES = Statement(
    "renew_leases",
    f"""
UPDATE agent_task SET lease_expires_at = now() + make_interval(secs => :lease_seconds::float8)
WHERE id = ANY(:task_ids::uuid[]) AND status IN ({_LIVE})
""",
)


async def renew_leases(conn: asyncpg.Connection, task_ids: list[uuid.UUID], lease_seconds: float) -> int:
    """The runner's heartbeat: it is still working on these tasks."""
    result = await RENEW_LEASES.execute(conn, task_ids=task_ids, lease_seconds=lease_seconds)
    return int(result.split()[-1])


CANCELLED_AMONG = Statement(
    "cancelled_among",
    f"SELECT id FROM agent_task WHERE id = ANY(:task_ids::uuid[]) AND status = '{TaskStatus.CANCELLED}'",
)


async def cancelled_among(conn: asyncpg.Connection, task_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Which of these tasks were cancelled: the heartbeat's fallback for a lost notification."""
    return [row["id"] for row in await CANCELLED_AMONG.fetch(conn, task_ids=task_ids)]


INTERRUPT_ABANDONED = Statement(
    "interrupt_abandoned",
    f"""
UPDATE agent_task
SET status = '{TaskStatus.FAILED}', error_code = 'interrupted',
    error_message = 'the service stopped before the task finished; submit it again',
    completed_at = now(), lease_expires_at = NULL
WHERE status IN ({_LIVE}) AND lease_expires_at < now()
RETURNING id
""",
)


async def interrupt_abandoned(conn: asyncpg.Connection) -> list[uuid.UUID]:
    """Tasks whose runner stopped renewing its lease (it died) end `failed` with `interrupted`."""
    return [row["id"] for row in await INTERRUPT_ABANDONED.fetch(conn)]


# `failed_retention_seconds`: a shorter retention for failed tasks (from creation), or NULL for none.
COMPLETE_TASK = Statement(
    "complete_task",
    f"""
UPDATE agent_task
SET status = :status::varchar, output = :output,
    error_code = :error_code, error_message = :error_message,
    prompt_tokens = :prompt_tokens, completion_tokens = :completion_tokens, total_tokens = :total_tokens,
    cost_usd = :cost_usd, completed_at = now(), lease_expires_at = NULL,
    expires_at = CASE
        WHEN :status::varchar = '{TaskStatus.FAILED}' AND :failed_retention_seconds::float8 IS NOT NULL
        THEN least(expires_at, created_at + make_interval(secs => :failed_retention_seconds::float8))
        ELSE expires_at
    END
WHERE id = :task_id AND status IN ({_LIVE})  -- never over a cancel
RETURNING {TASK_COLUMNS}
""",
)


async def complete_task(
    conn: asyncpg.Connection,
    task_id: uuid.UUID,
    outcome: TaskOutcome,
    *,
    output: bytes | None,
    failed_retention_seconds: float | None = None,
) -> TaskRecord | None:
    """Record a task's result (its answer sealed for this row as `output`); None when the task
    was erased or cancelled while it ran (a cancel stands: the answer is dropped)."""
    row = await COMPLETE_TASK.fetchrow(
        conn,
        task_id=task_id,
        status=outcome.status.value,
        output=output,
        error_code=outcome.error_code,
        error_message=outcome.error_message,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        total_tokens=outcome.total_tokens,
        cost_usd=outcome.cost_usd,
        failed_retention_seconds=failed_retention_seconds,
    )
    return None if row is None else TaskRecord.from_row(row)


# The health page's figures: live tasks by status, every owner's (unfinished ones are in flight).
COUNT_LIVE_TASKS_BY_STATUS = Statement(
    "count_live_tasks_by_status",
    "SELECT status, count(*) FROM agent_task WHERE expires_at > now() GROUP BY status ORDER BY status",
)


async def count_live_tasks_by_status(conn: asyncpg.Connection) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in await COUNT_LIVE_TASKS_BY_STATUS.fetch(conn)}
