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
from app.domain.seals import SealRecord

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
    detail: AuditDetail | None = Field(
        description="a purge run's figures, an export's window, or the key a key-management act was about"
        " (its id, role, limits; never the key); null for other actions"
    )

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


class AuditSeal(BaseModel):
    """A signed checkpoint over audit events. `signature` is Ed25519 (base64) over the canonical
    JSON of every field here but `id`, `digest` and `signature`, plus `format` and `version`
    (see the audit trail documentation); `digest` is that JSON's SHA-256."""

    id: int
    sealed_at: datetime
    xact_watermark: int = Field(description="the events of transactions below this id not sealed before")
    first_event_id: int
    last_event_id: int
    event_count: int
    first_occurred_at: datetime
    last_occurred_at: datetime
    events_digest: str = Field(description="SHA-256 over the seal's list of [event id, event digest]")
    previous_digest: str = Field(description="the digest of the seal before; 64 zeros for the first")
    digest: str
    signature: str
    key_id: str = Field(description="the signing key's fingerprint: SHA-256 of its raw public key")

    @classmethod
    def from_record(cls, seal: SealRecord) -> AuditSeal:
        c = seal.content
        return cls.model_construct(
            id=c.seal_id,
            sealed_at=c.sealed_at,
            xact_watermark=c.xact_watermark,
            first_event_id=c.first_event_id,
            last_event_id=c.last_event_id,
            event_count=c.event_count,
            first_occurred_at=c.first_occurred_at,
            last_occurred_at=c.last_occurred_at,
            events_digest=c.events_digest,
            previous_digest=c.previous_digest,
            digest=seal.digest,
            signature=seal.signature,
            key_id=c.key_id,
        )


class AuditSealPage(BaseModel):
    items: list[AuditSeal]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
