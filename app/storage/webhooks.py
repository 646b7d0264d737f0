"""The webhook outbox: claiming deliveries that are due, recording attempts, and an owner's audited look.

The rows themselves are written by PostgreSQL (the trigger of migration 0b1c2d3e4f5a) in the
transaction that ends a task. Replicas share the work without a coordinator: a claim takes due
rows `FOR UPDATE SKIP LOCKED` and stamps them with a random `claim` and a lease; an attempt's
result is recorded only under the claim that made it (a lease that ran out, and was claimed
again by another replica, is not overwritten by the late one).
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from app.domain import Actor, AuditAction, AuditOutcome
from app.domain.webhooks import Attempt, DeliveryState, DueDelivery, WebhookRecord, WebhookState
from app.storage.audit import _RECORD, _VERDICT, _actor
from app.storage.sql import Statement

WEBHOOK_READY_CHANNEL = "webhook_ready"  # payload: the task id; sent by the outbox trigger

CLAIM_DUE = Statement(
    "claim_due_webhooks",
    """
WITH due AS (
    SELECT task_id FROM webhook_delivery
    WHERE state = 'pending' AND next_attempt_at <= now() AND (claimed_until IS NULL OR claimed_until <= now())
    ORDER BY next_attempt_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_delivery AS d
    SET claim = gen_random_uuid(), claimed_until = now() + make_interval(secs => :lease_seconds::float8)
    FROM due WHERE d.task_id = due.task_id
    RETURNING d.task_id, d.owner_id, d.url, d.event_type, d.message_id, d.attempt_count, d.created_at, d.claim
)
SELECT claimed.*, k.webhook_secret, k.webhook_secret_previous, k.webhook_secret_previous_until
FROM claimed JOIN api_key AS k ON k.id = claimed.owner_id
""",
)


async def claim_due(conn: asyncpg.Connection, *, limit: int, lease_seconds: float) -> list[DueDelivery]:
    rows = await CLAIM_DUE.fetch(conn, limit=limit, lease_seconds=lease_seconds)
    return [DueDelivery(*row) for row in rows]


RECORD_ATTEMPT = Statement(
    "record_webhook_attempt",
    f"""
UPDATE webhook_delivery
SET attempts = attempts || jsonb_build_array(:attempt::jsonb),
    attempt_count = attempt_count + 1,
    state = :state::text,
    next_attempt_at = coalesce(:next_attempt_at::timestamptz, next_attempt_at),
    delivered_at = CASE WHEN :state::text = '{DeliveryState.DELIVERED}' THEN now() END,
    claim = NULL, claimed_until = NULL
WHERE task_id = :task_id AND claim = :claim::uuid
""",
)


async def record_attempt(
    conn: asyncpg.Connection,
    delivery: DueDelivery,
    attempt: Attempt,
    state: DeliveryState,
    next_attempt_at: datetime | None,
) -> bool:
    """Append the attempt and set the state; False when the claim was lost meanwhile."""
    status = await RECORD_ATTEMPT.execute(
        conn,
        task_id=delivery.task_id,
        claim=delivery.claim,
        attempt=attempt.as_json(),
        state=state.value,
        next_attempt_at=next_attempt_at,
    )
    return bool(status == "UPDATE 1")


NEXT_DUE = Statement(
    "next_webhook_due",
    "SELECT min(next_attempt_at) FROM webhook_delivery WHERE state = 'pending'",
)


async def next_due(conn: asyncpg.Connection) -> datetime | None:
    """When the next pending delivery is due (None: none is pending)."""
    value: datetime | None = await NEXT_DUE.fetchval(conn)
    return value


# The owner's (or an auditor's, an admin's) look at a task's webhook, with the same verdict as a
# read of the task, in one statement with its audit event.
READ_WEBHOOK_AUDITED = Statement(
    "read_webhook_audited",
    f"""
WITH found AS (
    SELECT id, owner_id, expires_at, webhook_url FROM agent_task WHERE id = :task_id
), {_VERDICT}, audit AS ({_RECORD}
    SELECT :actor_id, :actor_role, :channel, '{AuditAction.WEBHOOK_READ}', :task_id, outcome, :request_id FROM verdict
)
SELECT verdict.outcome, found.webhook_url, d.state, d.event_type, d.message_id, d.attempts, d.next_attempt_at,
       d.delivered_at
FROM verdict
LEFT JOIN found ON verdict.outcome = '{AuditOutcome.OK}'
LEFT JOIN webhook_delivery AS d ON d.task_id = found.id
""",
)


async def read_webhook_audited(
    conn: asyncpg.Connection, task_id: uuid.UUID, owner: uuid.UUID | None, actor: Actor
) -> tuple[AuditOutcome, WebhookRecord | None]:
    row = await READ_WEBHOOK_AUDITED.fetchrow(conn, task_id=task_id, owner=owner, **_actor(actor))
    assert row is not None  # the verdict CTE always yields exactly one row
    outcome = AuditOutcome(row[0])
    if outcome is not AuditOutcome.OK:
        return outcome, None
    url, state, event_type, message_id, attempts, next_at, delivered_at = row[1:]
    if url is None:
        shown = WebhookState.NONE
    elif state is None:
        shown = WebhookState.WAITING
    else:
        shown = WebhookState(state)
    pending = shown is WebhookState.PENDING
    return outcome, WebhookRecord(
        task_id,
        url,
        shown,
        event_type,
        message_id,
        list(attempts or []),
        next_at if pending else None,
        delivered_at,
    )
