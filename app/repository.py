"""Every SQL statement of the service, typed in and out.

Functions take an asyncpg connection from `Database.transaction()` (the caller
owns the commit) and return records from `app.records`. Each audited operation
is a single statement whose CTE writes the audit event, so an operation can
never succeed without its audit row, and the hot path is one round trip.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.models import AuditAction, AuditOutcome, Channel, Role, TaskStatus
from app.records import ApiKeyRecord, AuditEventRecord, TaskRecord, column_list

TASK_COLUMNS = column_list(TaskRecord)
KEY_COLUMNS = column_list(ApiKeyRecord)
AUDIT_COLUMNS = column_list(AuditEventRecord)

_MAX_TIME = "'infinity'::timestamptz"
_MAX_UUID = "'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid"
_MAX_BIGINT = "9223372036854775807"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who an audit event is about: the caller, the channel and the request."""

    key_id: uuid.UUID | None
    role: Role | None
    channel: Channel
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    id: uuid.UUID
    owner_id: uuid.UUID
    status: TaskStatus
    model: str
    template: str | None
    prompt_hash: str
    prompt_hash_key_id: str
    context: dict[str, Any]
    params: dict[str, Any]
    retention_seconds: float
    cache_key: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    lease_seconds: float | None = None  # pending and running tasks carry a lease


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    status: TaskStatus
    output: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class AuditedTask:
    """An audited lookup: the task when the caller may see it, and the outcome that was recorded."""

    outcome: AuditOutcome
    task: TaskRecord | None


# -- API keys ---------------------------------------------------------------------------


async def insert_api_key(
    conn: asyncpg.Connection,
    *,
    name: str,
    role: Role,
    key_hash: str,
    key_prefix: str,
    rate_limit_per_minute: int | None = None,
    max_running_tasks: int | None = None,
) -> ApiKeyRecord:
    row = await conn.fetchrow(
        "INSERT INTO api_key (id, name, role, key_hash, key_prefix, rate_limit_per_minute, max_running_tasks) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}",
        uuid.uuid4(),
        name,
        role.value,
        key_hash,
        key_prefix,
        rate_limit_per_minute,
        max_running_tasks,
    )
    return ApiKeyRecord(*row)


async def set_key_limits(
    conn: asyncpg.Connection, key_id: uuid.UUID, *, rate_limit_per_minute: int | None, max_running_tasks: int | None
) -> ApiKeyRecord | None:
    """Replace a key's own limits (None: the server default); None when no key has that id."""
    row = await conn.fetchrow(
        f"UPDATE api_key SET rate_limit_per_minute = $2, max_running_tasks = $3 WHERE id = $1 RETURNING {KEY_COLUMNS}",
        key_id,
        rate_limit_per_minute,
        max_running_tasks,
    )
    return None if row is None else ApiKeyRecord(*row)


# GCRA: a request is allowed while the key's next_allowed_at is at most `tolerance` ahead of
# now; each allowed request moves it one `interval` on. A refused request changes nothing.
_TAKE_RATE_SLOT = """
INSERT INTO rate_limit AS r (api_key_id, next_allowed_at)
VALUES ($1, now() + make_interval(secs => $2::float8))
ON CONFLICT (api_key_id) DO UPDATE
   SET next_allowed_at = greatest(r.next_allowed_at, now()) + make_interval(secs => $2::float8)
 WHERE r.next_allowed_at <= now() + make_interval(secs => $3::float8)
RETURNING true
"""


async def take_rate_slot(
    conn: asyncpg.Connection, key_id: uuid.UUID, *, interval_seconds: float, tolerance_seconds: float
) -> float | None:
    """Count one request against the key's rate; None if allowed, else seconds until one would be."""
    if await conn.fetchval(_TAKE_RATE_SLOT, key_id, interval_seconds, tolerance_seconds):
        return None
    wait = await conn.fetchval(
        "SELECT extract(epoch FROM next_allowed_at - now())::float8 - $2 FROM rate_limit WHERE api_key_id = $1",
        key_id,
        tolerance_seconds,
    )
    return max(float(wait or 0.0), 0.0)


async def lock_owner_tasks(conn: asyncpg.Connection, owner: uuid.UUID) -> None:
    """Serialize task admission for one key until the transaction ends (every replica)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('agent_task owner ' || $1::uuid::text, 0))", owner
    )


async def count_running_tasks(conn: asyncpg.Connection, owner: uuid.UUID) -> int:
    """A key's unfinished tasks that a live runner vouches for (abandoned ones are not counted)."""
    count = await conn.fetchval(
        f"""
        SELECT count(*) FROM agent_task
        WHERE owner_id = $1 AND status IN ('{TaskStatus.PENDING}', '{TaskStatus.RUNNING}')
          AND lease_expires_at > now() AND expires_at > now()
        """,
        owner,
    )
    return int(count)


async def find_active_key(conn: asyncpg.Connection, key_hash: str) -> ApiKeyRecord | None:
    row = await conn.fetchrow(f"SELECT {KEY_COLUMNS} FROM api_key WHERE key_hash = $1 AND revoked_at IS NULL", key_hash)
    return None if row is None else ApiKeyRecord(*row)


async def list_api_keys(conn: asyncpg.Connection) -> list[ApiKeyRecord]:
    rows = await conn.fetch(f"SELECT {KEY_COLUMNS} FROM api_key ORDER BY created_at, id")
    return [ApiKeyRecord(*row) for row in rows]


async def revoke_api_key(conn: asyncpg.Connection, key_id: uuid.UUID) -> ApiKeyRecord | None:
    """Revoke a key (idempotent); None when no key has that id."""
    row = await conn.fetchrow(
        f"UPDATE api_key SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING {KEY_COLUMNS}",
        key_id,
    )
    return None if row is None else ApiKeyRecord(*row)


async def count_api_keys(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM api_key"))


# -- tasks ------------------------------------------------------------------------------

_NEW_TASK_COLUMNS = """id, owner_id, status, model, template, prompt_hash, prompt_hash_key_id, context, params,
    expires_at, cache_key, idempotency_key, request_hash"""
_NEW_TASK_VALUES = """$1, $2, $3, $4, $5, $6, $7, $8, $9,
    now() + make_interval(secs => $10), $11, $12, $13"""
_AUDIT_CREATE = f"""
    INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id)
    SELECT $2, $14, $15, '{AuditAction.CREATE}', id, '{AuditOutcome.OK}', $16 FROM task"""

_INSERT_TASK = f"""
WITH task AS (
    INSERT INTO agent_task ({_NEW_TASK_COLUMNS}, lease_expires_at)
    VALUES ({_NEW_TASK_VALUES}, now() + make_interval(secs => $17::float8))
    RETURNING {TASK_COLUMNS}
), audit AS ({_AUDIT_CREATE}
)
SELECT {TASK_COLUMNS} FROM task
"""


def _copy_answer_into_new_task(source: str) -> str:
    """A statement that stores a new, finished task whose answer comes from the `source` CTE."""
    return f"""
WITH source AS ({source}
), task AS (
    INSERT INTO agent_task ({_NEW_TASK_COLUMNS},
                            output, prompt_tokens, completion_tokens, total_tokens, cached, completed_at)
    SELECT {_NEW_TASK_VALUES},
           output, prompt_tokens, completion_tokens, total_tokens, true, now()
    FROM source
    RETURNING {TASK_COLUMNS}
), audit AS ({_AUDIT_CREATE}
)
SELECT {TASK_COLUMNS} FROM task
"""


_ANSWER = "SELECT output, prompt_tokens, completion_tokens, total_tokens FROM agent_task"

# A cache hit: a new task whose answer is copied from a finished one. $17: the source.
_INSERT_CACHED_COPY = _copy_answer_into_new_task(
    f"{_ANSWER} WHERE id = $17 AND status = '{TaskStatus.SUCCEEDED}' AND expires_at > now()"
)

# The fast path of a cache hit, one statement with no lock: the owner's newest fresh
# succeeded answer with this cache key ($11) is copied into a new task. $17: the TTL.
_INSERT_CACHE_HIT = _copy_answer_into_new_task(
    f"""{_ANSWER}
    WHERE owner_id = $2 AND cache_key = $11 AND status = '{TaskStatus.SUCCEEDED}' AND expires_at > now()
      AND created_at > now() - make_interval(secs => $17::float8)
    ORDER BY created_at DESC
    LIMIT 1"""
)


def _new_task_args(task: NewTask, actor: Actor) -> tuple[Any, ...]:
    return (
        task.id,
        task.owner_id,
        task.status.value,
        task.model,
        task.template,
        task.prompt_hash,
        task.prompt_hash_key_id,
        task.context,
        task.params,
        task.retention_seconds,
        task.cache_key,
        task.idempotency_key,
        task.request_hash,
        actor.role,
        actor.channel.value,
        actor.request_id,
    )


async def insert_task(conn: asyncpg.Connection, task: NewTask, actor: Actor) -> TaskRecord:
    """Store a new task and its `create` audit event in one statement."""
    row = await conn.fetchrow(_INSERT_TASK, *_new_task_args(task, actor), task.lease_seconds)
    return TaskRecord(*row)


async def insert_cached_copy(
    conn: asyncpg.Connection, task: NewTask, actor: Actor, source_id: uuid.UUID
) -> TaskRecord | None:
    """Store a cache hit (answer copied from `source_id`) and its audit event; None if the source is gone."""
    row = await conn.fetchrow(_INSERT_CACHED_COPY, *_new_task_args(task, actor), source_id)
    return None if row is None else TaskRecord(*row)


async def insert_cache_hit(
    conn: asyncpg.Connection, task: NewTask, actor: Actor, *, max_age_seconds: float
) -> TaskRecord | None:
    """A cache hit in one round trip (answer copied from the newest fresh match); None on a miss."""
    row = await conn.fetchrow(_INSERT_CACHE_HIT, *_new_task_args(task, actor), max_age_seconds)
    return None if row is None else TaskRecord(*row)


async def find_cached(
    conn: asyncpg.Connection, owner: uuid.UUID, cache_key: str, *, max_age_seconds: float
) -> TaskRecord | None:
    """The owner's newest live task with this cache key that is finished or still being answered.

    Finished means succeeded within the cache TTL; in flight means pending or running
    under a live lease (its answer is coming: wait for it rather than ask again).
    """
    row = await conn.fetchrow(
        f"""
        SELECT {TASK_COLUMNS} FROM agent_task
        WHERE owner_id = $1 AND cache_key = $2 AND expires_at > now()
          AND created_at > now() - make_interval(secs => $3::float8)
          AND (status = '{TaskStatus.SUCCEEDED}'
               OR (status IN ('{TaskStatus.PENDING}', '{TaskStatus.RUNNING}') AND lease_expires_at > now()))
        ORDER BY status = '{TaskStatus.SUCCEEDED}' DESC, created_at DESC
        LIMIT 1
        """,
        owner,
        cache_key,
        max_age_seconds,
    )
    return None if row is None else TaskRecord(*row)


async def lock_cache_key(conn: asyncpg.Connection, cache_key: str) -> None:
    """Serialize look-up-then-insert for one cache key across processes (until the transaction ends)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", cache_key)


async def get_task(conn: asyncpg.Connection, task_id: uuid.UUID) -> TaskRecord | None:
    """A task by id, unaudited: for the service's own bookkeeping, never a caller's read."""
    row = await conn.fetchrow(f"SELECT {TASK_COLUMNS} FROM agent_task WHERE id = $1", task_id)
    return None if row is None else TaskRecord(*row)


async def find_by_idempotency_key(
    conn: asyncpg.Connection, owner: uuid.UUID, key: str, *, window_seconds: float
) -> tuple[TaskRecord, bool] | None:
    """The task made with this key, and whether it is within the window (and not expired)."""
    row = await conn.fetchrow(
        f"SELECT created_at > now() - make_interval(secs => $3::float8) AND expires_at > now(), {TASK_COLUMNS} "
        "FROM agent_task WHERE owner_id = $1 AND idempotency_key = $2",
        owner,
        key,
        window_seconds,
    )
    return None if row is None else (TaskRecord(*row[1:]), bool(row[0]))


_COMPLETE_AS_COPY = f"""
UPDATE agent_task AS t
SET status = '{TaskStatus.SUCCEEDED}', output = s.output, prompt_tokens = s.prompt_tokens,
    completion_tokens = s.completion_tokens, total_tokens = s.total_tokens, cached = true,
    completed_at = now(), lease_expires_at = NULL
FROM agent_task AS s
WHERE t.id = $1 AND s.id = $2 AND s.status = '{TaskStatus.SUCCEEDED}'
RETURNING {", ".join(f"t.{name}" for name in TASK_COLUMNS.split(", "))}
"""


async def complete_as_copy(conn: asyncpg.Connection, task_id: uuid.UUID, source_id: uuid.UUID) -> TaskRecord | None:
    """Finish a task with the answer of an identical one (single flight); None if either is gone."""
    row = await conn.fetchrow(_COMPLETE_AS_COPY, task_id, source_id)
    return None if row is None else TaskRecord(*row)


async def release_idempotency_key(conn: asyncpg.Connection, task_id: uuid.UUID) -> None:
    """Free a key whose window has passed, so the caller may use it again."""
    await conn.execute("UPDATE agent_task SET idempotency_key = NULL WHERE id = $1", task_id)


async def mark_running(conn: asyncpg.Connection, task_id: uuid.UUID, lease_seconds: float) -> bool:
    """pending -> running; False when the task is gone or no longer pending."""
    result = await conn.execute(
        f"UPDATE agent_task SET status = '{TaskStatus.RUNNING}', "
        "lease_expires_at = now() + make_interval(secs => $2::float8) "
        f"WHERE id = $1 AND status = '{TaskStatus.PENDING}'",
        task_id,
        lease_seconds,
    )
    return bool(result == "UPDATE 1")


async def renew_leases(conn: asyncpg.Connection, task_ids: list[uuid.UUID], lease_seconds: float) -> int:
    """The runner's heartbeat: it is still working on these tasks."""
    result = await conn.execute(
        "UPDATE agent_task SET lease_expires_at = now() + make_interval(secs => $2::float8) "
        f"WHERE id = ANY($1::uuid[]) AND status IN ('{TaskStatus.PENDING}', '{TaskStatus.RUNNING}')",
        task_ids,
        lease_seconds,
    )
    return int(result.split()[-1])


async def interrupt_abandoned(conn: asyncpg.Connection) -> list[uuid.UUID]:
    """Tasks whose runner stopped renewing its lease (it died) end `failed` with `interrupted`."""
    rows = await conn.fetch(
        f"""
        UPDATE agent_task
        SET status = '{TaskStatus.FAILED}', error_code = 'interrupted',
            error_message = 'the service stopped before the task finished; submit it again',
            completed_at = now(), lease_expires_at = NULL
        WHERE status IN ('{TaskStatus.PENDING}', '{TaskStatus.RUNNING}') AND lease_expires_at < now()
        RETURNING id
        """
    )
    return [r["id"] for r in rows]


# $9: a shorter retention for failed tasks (seconds from creation), or NULL for none.
_COMPLETE_TASK = f"""
UPDATE agent_task
SET status = $2::varchar, output = $3, error_code = $4, error_message = $5,
    prompt_tokens = $6, completion_tokens = $7, total_tokens = $8, completed_at = now(),
    lease_expires_at = NULL,
    expires_at = CASE
        WHEN $2::varchar = '{TaskStatus.FAILED}' AND $9::float8 IS NOT NULL
        THEN least(expires_at, created_at + make_interval(secs => $9::float8))
        ELSE expires_at
    END
WHERE id = $1
RETURNING {TASK_COLUMNS}
"""


async def complete_task(
    conn: asyncpg.Connection,
    task_id: uuid.UUID,
    outcome: TaskOutcome,
    *,
    failed_retention_seconds: float | None = None,
) -> TaskRecord | None:
    """Record a task's result; None when the task was erased while it ran."""
    row = await conn.fetchrow(
        _COMPLETE_TASK,
        task_id,
        outcome.status.value,
        outcome.output,
        outcome.error_code,
        outcome.error_message,
        outcome.prompt_tokens,
        outcome.completion_tokens,
        outcome.total_tokens,
        failed_retention_seconds,
    )
    return None if row is None else TaskRecord(*row)


# The verdict of an audited lookup, shared by read and delete. $1 task id, $2 the owner
# the caller is limited to (NULL: any owner). Another client's task is 'denied' in the
# audit trail but looks exactly like an unknown one to the caller. An expired task is gone
# for everyone, before ownership is considered (so nobody, auditors included, learns it is
# still awaiting the purge).
_VERDICT = f"""
verdict AS (
    SELECT CASE
        WHEN found.id IS NULL THEN '{AuditOutcome.NOT_FOUND}'
        WHEN found.expires_at <= now() THEN '{AuditOutcome.EXPIRED}'
        WHEN $2::uuid IS NOT NULL AND found.owner_id <> $2::uuid THEN '{AuditOutcome.DENIED}'
        ELSE '{AuditOutcome.OK}'
    END AS outcome
    FROM (SELECT 1) AS one LEFT JOIN found ON true
)"""

_READ_TASK_AUDITED = f"""
WITH found AS (
    SELECT {TASK_COLUMNS} FROM agent_task WHERE id = $1
), {_VERDICT}, audit AS (
    INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id)
    SELECT $3, $4, $5, '{AuditAction.READ}', $1, outcome, $6 FROM verdict
)
SELECT verdict.outcome, found.* FROM verdict LEFT JOIN found ON verdict.outcome = '{AuditOutcome.OK}'
"""


async def read_task_audited(
    conn: asyncpg.Connection, task_id: uuid.UUID, owner: uuid.UUID | None, actor: Actor
) -> AuditedTask:
    """The hot path: fetch a task and record the read, in one statement and one round trip."""
    row = await conn.fetchrow(
        _READ_TASK_AUDITED, task_id, owner, actor.key_id, actor.role, actor.channel.value, actor.request_id
    )
    assert row is not None  # the verdict CTE always yields exactly one row
    outcome = AuditOutcome(row[0])
    return AuditedTask(outcome, TaskRecord(*row[1:]) if outcome is AuditOutcome.OK else None)


_DELETE_TASK_AUDITED = f"""
WITH found AS (
    SELECT id, owner_id, expires_at FROM agent_task WHERE id = $1 FOR UPDATE
), {_VERDICT}, erased AS (
    DELETE FROM agent_task USING verdict WHERE agent_task.id = $1 AND verdict.outcome = '{AuditOutcome.OK}'
    RETURNING agent_task.id
), audit AS (
    INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id)
    SELECT $3, $4, $5, '{AuditAction.DELETE}', $1, outcome, $6 FROM verdict
)
SELECT outcome FROM verdict
"""


async def delete_task_audited(
    conn: asyncpg.Connection, task_id: uuid.UUID, owner: uuid.UUID | None, actor: Actor
) -> AuditOutcome:
    """Erase a task now and record the attempt, whatever its outcome."""
    outcome = await conn.fetchval(
        _DELETE_TASK_AUDITED, task_id, owner, actor.key_id, actor.role, actor.channel.value, actor.request_id
    )
    return AuditOutcome(outcome)


_LIST_TASKS_AUDITED = f"""
WITH audit AS (
    INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id)
    VALUES ($1, $5, $6, '{AuditAction.LIST}', NULL, '{AuditOutcome.OK}', $7)
)
SELECT {TASK_COLUMNS} FROM agent_task
WHERE owner_id = $1 AND expires_at > now()
  AND (created_at, id) < (coalesce($2::timestamptz, {_MAX_TIME}), coalesce($3::uuid, {_MAX_UUID}))
ORDER BY created_at DESC, id DESC
LIMIT $4
"""


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
    rows = await conn.fetch(
        _LIST_TASKS_AUDITED, owner, created_at, task_id, limit, actor.role, actor.channel.value, actor.request_id
    )
    return [TaskRecord(*row) for row in rows]


# -- audit events -----------------------------------------------------------------------

_AUDIT_READ = f"""
INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id)
VALUES ($1, $2, $3, '{AuditAction.AUDIT_READ}', $4, '{AuditOutcome.OK}', $5)
"""

_LIST_EVENTS_FOR_TASK = f"""
WITH audit AS ({_AUDIT_READ})
SELECT {AUDIT_COLUMNS} FROM audit_event
WHERE task_id = $4 AND id < coalesce($6::bigint, {_MAX_BIGINT})
ORDER BY id DESC LIMIT $7
"""

_LIST_EVENTS = f"""
WITH audit AS ({_AUDIT_READ})
SELECT {AUDIT_COLUMNS} FROM audit_event
WHERE id < coalesce($6::bigint, {_MAX_BIGINT})
ORDER BY id DESC LIMIT $7
"""


async def list_audit_events_audited(
    conn: asyncpg.Connection, *, task_id: uuid.UUID | None, before_id: int | None, limit: int, actor: Actor
) -> list[AuditEventRecord]:
    """Audit events, newest first; reading the audit log is itself audited."""
    query = _LIST_EVENTS if task_id is None else _LIST_EVENTS_FOR_TASK
    rows = await conn.fetch(
        query, actor.key_id, actor.role, actor.channel.value, task_id, actor.request_id, before_id, limit
    )
    return [AuditEventRecord(*row) for row in rows]


# -- schema -----------------------------------------------------------------------------


async def schema_revision(conn: asyncpg.Connection) -> str | None:
    """The Alembic revision the database is at, or None before the first migration."""
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version")  # type: ignore[no-any-return]
    except asyncpg.UndefinedTableError:
        return None


# -- retention --------------------------------------------------------------------------

# One purge at a time across every replica sharing the database.
PURGE_LOCK_KEY = 0x61676E74  # "agnt"

# A batch is chosen through the time index, resuming where the previous batch ended
# (so no batch walks over the index entries of rows already deleted), and deleted by
# physical row id (a TID scan). No row locks are taken first: the advisory lock keeps
# other purges out, and the time condition is checked again at delete time, so a row
# changed in between is simply left for the next run.
_PURGE_TASKS = """
WITH doomed AS (
    SELECT ctid FROM agent_task
    WHERE expires_at <= $1 AND expires_at >= $3
    ORDER BY expires_at LIMIT $2
), gone AS (
    DELETE FROM agent_task
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM doomed)) AND expires_at <= $1
    RETURNING expires_at
)
SELECT count(*), max(expires_at) FROM gone
"""

_PURGE_AUDIT = """
WITH doomed AS (
    SELECT ctid FROM audit_event
    WHERE occurred_at < $1 AND occurred_at >= $3
    ORDER BY occurred_at LIMIT $2
), gone AS (
    DELETE FROM audit_event
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM doomed)) AND occurred_at < $1
    RETURNING occurred_at
)
SELECT count(*), max(occurred_at) FROM gone
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PurgeBatch:
    deleted: int
    resume_from: datetime  # where the next batch starts (the last deleted row's time)


async def try_purge_lock(conn: asyncpg.Connection) -> bool:
    """Take the cluster-wide purge lock for this session, if nobody holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", PURGE_LOCK_KEY))


async def release_purge_lock(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK_KEY)


async def database_now(conn: asyncpg.Connection) -> datetime:
    return await conn.fetchval("SELECT now()")  # type: ignore[no-any-return]


async def delete_expired_tasks(
    conn: asyncpg.Connection, *, expired_by: datetime, limit: int, resume_from: datetime | None = None
) -> PurgeBatch:
    """Delete up to `limit` tasks that expired by `expired_by`, oldest first."""
    row = await conn.fetchrow(_PURGE_TASKS, expired_by, limit, resume_from or _EPOCH)
    assert row is not None
    return PurgeBatch(int(row[0]), row[1] or resume_from or _EPOCH)


async def delete_audit_events_before(
    conn: asyncpg.Connection, *, before: datetime, limit: int, resume_from: datetime | None = None
) -> PurgeBatch:
    row = await conn.fetchrow(_PURGE_AUDIT, before, limit, resume_from or _EPOCH)
    assert row is not None
    return PurgeBatch(int(row[0]), row[1] or resume_from or _EPOCH)


async def count_expired(conn: asyncpg.Connection, *, expired_by: datetime, audit_before: datetime) -> tuple[int, int]:
    """What a purge would delete now: (tasks, audit events)."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM agent_task WHERE expires_at <= $1),"
        "       (SELECT count(*) FROM audit_event WHERE occurred_at < $2)",
        expired_by,
        audit_before,
    )
    assert row is not None
    return int(row[0]), int(row[1])


async def record_purge(conn: asyncpg.Connection, actor: Actor, outcome: AuditOutcome, detail: dict[str, Any]) -> None:
    """The purge run's audit event: figures only, never row contents."""
    await conn.execute(
        "INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id, detail) "
        f"VALUES ($1, $2, $3, '{AuditAction.PURGE}', NULL, $4, $5, $6)",
        actor.key_id,
        actor.role,
        actor.channel.value,
        outcome.value,
        actor.request_id,
        detail,
    )
