"""The auditor's search by prompt: the live tasks carrying any of a prompt's hashes, audited.

The prompt never reaches this layer: the service computes every hash the prompt may have
(one per owner, and the global one of rows from before hashes were bound to owners), and the
statement matches (owner, hash) pairs. One statement records the search and every task it
returned, so a search can never succeed without its audit rows.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from app.domain import Actor, AuditAction, AuditOutcome, PromptHashes, TaskRecord
from app.storage.sql import Statement
from app.storage.tasks import TASK_COLUMNS

# Every key that ever existed, revoked ones included: their tasks live on until they expire.
OWNER_IDS = Statement("owner_ids", "SELECT id FROM api_key")

SEARCH_TASKS_AUDITED = Statement(
    "search_tasks_audited",
    f"""
WITH wanted (owner_id, prompt_hash) AS (
    SELECT * FROM unnest(:owners::uuid[], :hashes::text[])
), matched AS (
    SELECT {TASK_COLUMNS} FROM agent_task
    WHERE expires_at > now()
      AND (created_at, id) < (coalesce(:before_created_at::timestamptz, 'infinity'::timestamptz),
                              coalesce(:before_id::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid))
      AND ((prompt_hash_key_id = :key_id AND (owner_id, prompt_hash) IN (SELECT owner_id, prompt_hash FROM wanted))
           OR (prompt_hash_key_id = :legacy_key_id AND prompt_hash = :legacy_hash))
    ORDER BY created_at DESC, id DESC
    LIMIT :limit + 1
), page AS (
    SELECT id, created_at FROM matched ORDER BY created_at DESC, id DESC LIMIT :limit
), audit AS (
    INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id, detail)
    SELECT :actor_id, :actor_role, :channel, '{AuditAction.PROMPT_SEARCH}', task_id, '{AuditOutcome.OK}',
           :request_id, detail
    FROM (
        SELECT NULL::uuid AS task_id, jsonb_build_object('matches', (SELECT count(*) FROM page)) AS detail,
               0 AS rank, NULL::timestamptz AS created_at
        UNION ALL
        SELECT id, NULL, 1, created_at FROM page
    ) AS events
    ORDER BY rank, created_at DESC, task_id DESC
)
SELECT {TASK_COLUMNS} FROM matched ORDER BY created_at DESC, id DESC
""",
)


async def owner_ids(conn: asyncpg.Connection) -> list[uuid.UUID]:
    return [row[0] for row in await OWNER_IDS.fetch(conn)]


async def search_tasks_audited(
    conn: asyncpg.Connection,
    hashes: PromptHashes,
    *,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    actor: Actor,
) -> list[TaskRecord]:
    """Up to `limit` + 1 live tasks carrying the prompt, newest first; the first `limit` are audited."""
    created_at, task_id = before if before is not None else (None, None)
    rows = await SEARCH_TASKS_AUDITED.fetch(
        conn,
        owners=list(hashes.by_owner),
        hashes=list(hashes.by_owner.values()),
        key_id=hashes.key_id,
        legacy_key_id=hashes.legacy_key_id,
        legacy_hash=hashes.legacy_hash,
        before_created_at=created_at,
        before_id=task_id,
        limit=limit,
        actor_id=actor.key_id,
        actor_role=actor.role,
        channel=actor.channel.value,
        request_id=actor.request_id,
    )
    return [TaskRecord.from_row(row) for row in rows]
