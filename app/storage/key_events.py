"""The audit events of managing API keys and of console sessions: who did what to which key.

Each is written in the transaction of the act it records (`app.access.keys`, `app.access.sessions`),
so a key is never made, revoked or changed, and no session begins, without its event. The detail
names the key and its settings, never the key, its hash or its webhook secret: the callers build
it from `key_detail` alone.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from app.domain import Actor, ApiKeyRecord, AuditAction, AuditOutcome
from app.storage.sql import Statement

KEY_ACTIONS = frozenset({AuditAction.KEY_CREATE, AuditAction.KEY_REVOKE, AuditAction.KEY_LIMITS})
SESSION_ACTIONS = frozenset({AuditAction.SIGN_IN, AuditAction.SIGN_OUT})

RECORD_KEY_EVENT = Statement(
    "record_key_event",
    """
INSERT INTO audit_event (actor_id, actor_role, channel, action, task_id, outcome, request_id, detail)
VALUES (:actor_id, :actor_role, :channel, :action, NULL, :outcome, :request_id, :detail)
""",
)


def key_detail(record: ApiKeyRecord) -> dict[str, Any]:
    """What an audit event says of a key: its id, name, role, limits and data policy, nothing secret."""
    return {
        "key_id": str(record.id),
        "name": record.name,
        "role": record.role.value,
        "rate_limit_per_minute": record.rate_limit_per_minute,
        "max_running_tasks": record.max_running_tasks,
        "store_output": record.store_output.value,
        "max_retention_days": record.max_retention_days,
        "monthly_token_budget": record.monthly_token_budget,
        "monthly_usd_budget": None if record.monthly_usd_budget is None else str(record.monthly_usd_budget),
    }


async def record_event(
    conn: asyncpg.Connection,
    actor: Actor,
    action: AuditAction,
    outcome: AuditOutcome,
    detail: dict[str, Any] | None = None,
) -> None:
    """One key-management or session event (`KEY_ACTIONS`, `SESSION_ACTIONS`)."""
    if action not in KEY_ACTIONS | SESSION_ACTIONS:
        raise ValueError(f"{action} is not a key or session action")
    await RECORD_KEY_EVENT.execute(
        conn,
        actor_id=actor.key_id,
        actor_role=None if actor.role is None else actor.role.value,
        channel=actor.channel.value,
        action=action.value,
        outcome=outcome.value,
        request_id=actor.request_id,
        detail=detail,
    )
