"""Completion webhooks: what a delivery is, and its attempts. No I/O here.

A task that names a webhook gets one delivery when it ends, written by PostgreSQL itself in the
transaction that sets the task's final status (a trigger on `agent_task`), so no ending can be
missed and none is announced that was rolled back. Its message id (`msg_` and the task id) is the
same on every attempt, which is what lets a receiver drop a duplicate (Standard Webhooks).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class DeliveryState(StrEnum):
    """`pending`: not yet accepted by the receiver (attempts may have failed and a retry is
    due); `delivered`: a 2xx was received; `failed`: retried for WEBHOOK_RETRY_HOURS in vain."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookState(StrEnum):
    """What a caller reads of a task's webhook: a delivery's state, or why there is none yet."""

    NONE = "none"  # the task named no webhook
    WAITING = "waiting"  # it did; the task has not ended yet
    PENDING = DeliveryState.PENDING.value
    DELIVERED = DeliveryState.DELIVERED.value
    FAILED = DeliveryState.FAILED.value


EVENT_TYPES = ("agent_task.succeeded", "agent_task.failed", "agent_task.cancelled")


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery claimed by this replica for one attempt, with the owner key's sealed secrets."""

    task_id: uuid.UUID
    owner_id: uuid.UUID
    url: str
    event_type: str
    message_id: str
    attempt_count: int
    created_at: datetime
    claim: uuid.UUID  # fences this replica's result: a claim taken over by another is not recorded
    secret: bytes | None  # sealed (ResultCipher, bound to the key's id)
    previous_secret: bytes | None  # the one before a rotation, still signing until `previous_until`
    previous_until: datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try: when, how it ended (the HTTP status, or an error code), and how long it took."""

    at: datetime
    status_code: int | None
    error: str | None  # timeout, connect_error, refused_address, redirect, http_status, secret_unavailable
    duration_ms: float

    @property
    def accepted(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 1),
        }


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """A task's webhook as its owner sees it: the address, the delivery's state and every attempt."""

    task_id: uuid.UUID
    url: str | None
    state: WebhookState
    event_type: str | None
    message_id: str | None
    attempts: list[dict[str, Any]]
    next_attempt_at: datetime | None
    delivered_at: datetime | None
