"""The audit trail's vocabulary: channels, actions, outcomes, who acted, and the event row."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from app.domain.keys import Role


class Channel(StrEnum):
    REST = "rest"
    MCP = "mcp"
    CLI = "cli"
    SYSTEM = "system"
    CONSOLE = "console"  # the auditor's web console (app.console)


class AuditAction(StrEnum):
    CREATE = "create"
    READ = "read"
    LIST = "list"
    DELETE = "delete"
    AUDIT_READ = "audit_read"
    PURGE = "purge"
    PROMPT_SEARCH = "prompt_search"
    HOLD_PLACE = "hold_place"
    HOLD_RELEASE = "hold_release"
    AUDIT_EXPORT = "audit_export"  # a verifiable export of the audit trail (REST or CLI)
    CANCEL = "cancel"  # a request to stop a pending or running task
    WEBHOOK_READ = "webhook_read"  # a look at a task's webhook deliveries
    USAGE_READ = "usage_read"  # an auditor's or admin's look at another key's usage (GET /usage)
    KEY_CREATE = "key_create"  # an admin made an API key (detail: its id, role, limits; never the key)
    KEY_REVOKE = "key_revoke"  # an admin revoked an API key (detail: its id)
    KEY_LIMITS = "key_limits"  # an admin changed a key's limits or data policy (detail: the new values)
    SIGN_IN = "sign_in"  # a console sign-in; a failed one has no actor (the key presented is never kept)
    SIGN_OUT = "sign_out"  # a console sign-out


class AuditOutcome(StrEnum):
    OK = "ok"
    NOT_FOUND = "not_found"
    EXPIRED = "expired"
    DENIED = "denied"
    ERROR = "error"
    HELD = "held"  # an erasure refused: the task is under a legal hold
    FINISHED = "finished"  # a cancel refused: the task had already finished


@dataclass(frozen=True, slots=True)
class Actor:
    """Who an audit event is about: the caller (None for the service itself), the channel and the request."""

    key_id: uuid.UUID | None
    role: Role | None
    channel: Channel
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEventRecord:
    """One `audit_event` row, its columns in table order. Never a task's contents."""

    id: int
    occurred_at: datetime
    actor_id: uuid.UUID | None
    actor_role: Role | None
    channel: Channel
    action: AuditAction
    task_id: uuid.UUID | None
    outcome: AuditOutcome
    request_id: str | None
    detail: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> AuditEventRecord:
        role = row[3]
        return cls(
            row[0],
            row[1],
            row[2],
            None if role is None else Role(role),
            Channel(row[4]),
            AuditAction(row[5]),
            row[6],
            AuditOutcome(row[7]),
            row[8],
            row[9],
        )


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """What a reader of the audit log narrows it to (beyond one task): each None means any.

    `since` is inclusive, `until` exclusive, both on `occurred_at`. The console's audit-log page
    sets them; REST's `/audit/events` sets none, and each of them reads through the same operation.
    """

    actor_id: uuid.UUID | None = None
    action: AuditAction | None = None
    outcome: AuditOutcome | None = None
    channel: Channel | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__slots__)
