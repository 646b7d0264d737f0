"""The audit trail as auditors read it, and the audited search by prompt. Never a task's contents."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema

from app.domain import (
    AuditAction,
    AuditEventRecord,
    AuditOutcome,
    Channel,
    Role,
    TaskRecord,
    TaskStatus,
)

AuditDetail = Annotated[
    dict[str, Any], WithJsonSchema({"type": "object", "title": "Detail", "additionalProperties": True})
]


class AuditEvent(BaseModel):
    """Who did what to which task, over which channel, with what outcome. Never a task's contents."""

    id: int
    occurred_at: datetime
    actor_id: uuid.UUID | None = Field(description="the API key that acted; null for the service itself")
    actor_role: Role | None
    channel: Channel
    action: AuditAction
    task_id: uuid.UUID | None
    outcome: AuditOutcome
    request_id: str | None
    detail: AuditDetail | None = Field(description="a purge run's figures; null for other actions")

    @classmethod
    def from_record(cls, event: AuditEventRecord) -> AuditEvent:
        return cls.model_construct(**{name: getattr(event, name) for name in cls.model_fields})


class AuditEventPage(BaseModel):
    items: list[AuditEvent]
    next_cursor: str | None


class PromptMatch(BaseModel):
    """A live task that carried the searched prompt: whose it is and what became of it, never its output."""

    task_id: uuid.UUID
    owner_id: uuid.UUID
    status: TaskStatus
    model: str
    template: str | None
    created_at: datetime
    expires_at: datetime

    @classmethod
    def from_record(cls, task: TaskRecord) -> PromptMatch:
        return cls.model_construct(
            task_id=task.id,
            owner_id=task.owner_id,
            status=task.status,
            model=task.model,
            template=task.template,
            created_at=task.created_at,
            expires_at=task.expires_at,
        )


class PromptMatchPage(BaseModel):
    items: list[PromptMatch]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
