"""A key's usage over a period: tokens and cost per model, summed from its task rows.

Only live rows count (an expired task is invisible to every read, this one included), so a
month older than the retention shrinks as its tasks expire and are purged, and an erased task
drops out of the sum. That suits a report; a budget that must outlive erasure needs a ledger
of its own.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from app.domain import Actor, AuditAction, AuditOutcome, ModelUsageRecord
from app.storage.sql import Statement

# The columns in ModelUsageRecord's order.
_SUMS = """
SELECT model,
       count(*) AS tasks,
       count(*) FILTER (WHERE cached) AS cached_tasks,
       coalesce(sum(prompt_tokens) FILTER (WHERE NOT cached), 0) AS prompt_tokens,
       coalesce(sum(completion_tokens) FILTER (WHERE NOT cached), 0) AS completion_tokens,
       coalesce(sum(total_tokens) FILTER (WHERE NOT cached), 0) AS total_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE NOT cached AND cost_usd IS NULL) AS unpriced_tasks
FROM agent_task
WHERE owner_id = :owner_id AND created_at >= :since AND created_at < :until AND expires_at > now()
  AND (prompt_tokens IS NOT NULL OR completion_tokens IS NOT NULL OR total_tokens IS NOT NULL)
GROUP BY model
ORDER BY model
"""

USAGE = Statement("usage", _SUMS)
# An auditor's or admin's look at another key's usage, and its audit event, in one statement.
USAGE_AUDITED = Statement(
    "usage_audited",
    f"""
WITH audit AS (
    INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id, detail)
    VALUES (:actor_id, :actor_role, :channel, '{AuditAction.USAGE_READ}', NULL, '{AuditOutcome.OK}', :request_id,
            :detail)
)
{_SUMS}""",
)


async def usage(
    conn: asyncpg.Connection, owner: uuid.UUID, since: datetime, until: datetime, *, audited_as: Actor | None = None
) -> list[ModelUsageRecord]:
    """The owner's usage per model for tasks created in [since, until); with `audited_as`, the
    look is recorded as that actor's `usage_read` (detail: whose usage, and from when)."""
    values: dict[str, Any] = {"owner_id": owner, "since": since, "until": until}
    if audited_as is None:
        rows = await USAGE.fetch(conn, **values)
    else:
        detail = {"owner_key_id": str(owner), "since": since.isoformat()}
        rows = await USAGE_AUDITED.fetch(
            conn,
            **values,
            actor_id=audited_as.key_id,
            actor_role=audited_as.role,
            channel=audited_as.channel.value,
            request_id=audited_as.request_id,
            detail=detail,
        )
    return [ModelUsageRecord(*row) for row in rows]
