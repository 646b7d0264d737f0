"""A task's completion webhook as its owner reads it: the address, the delivery and each attempt."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from app.domain.webhooks import WebhookRecord, WebhookState


class WebhookAttempt(BaseModel):
    at: datetime
    status_code: int | None = Field(description="the receiver's HTTP status; null when none came")
    error: str | None = Field(
        description="null for a 2xx; else http_status, timeout, connect_error, dns_error, refused_address "
        "(not a public address, SSRF protection), redirect (never followed), http_error or secret_unavailable"
    )
    duration_ms: float


class WebhookStatus(BaseModel):
    """`state`: none (the task named no webhook), waiting (it has not ended), pending (not yet
    accepted; `next_attempt_at` says when the next try is), delivered, failed (given up after
    WEBHOOK_RETRY_HOURS)."""

    task_id: uuid.UUID
    url: str | None
    state: WebhookState
    event_type: str | None = Field(description="agent_task.succeeded, agent_task.failed or agent_task.cancelled")
    message_id: str | None = Field(description="the `webhook-id` header, the same on every attempt")
    attempts: list[WebhookAttempt]
    next_attempt_at: datetime | None
    delivered_at: datetime | None

    @classmethod
    def from_record(cls, record: WebhookRecord) -> WebhookStatus:
        return cls(
            task_id=record.task_id,
            url=record.url,
            state=record.state,
            event_type=record.event_type,
            message_id=record.message_id,
            attempts=[WebhookAttempt.model_validate(a) for a in record.attempts],
            next_attempt_at=record.next_attempt_at,
            delivered_at=record.delivered_at,
        )
