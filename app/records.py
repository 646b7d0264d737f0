"""Typed rows the repository returns: plain slotted dataclasses.

Measured: building a SQLModel table instance costs ~87 us a row, `model_construct`
~9 us, a slotted dataclass under 1 us, on a read path whose whole budget is
~200 us. So reads return these; `tests/test_models.py` checks that each one has
exactly its table's columns, in order, so the two cannot drift apart.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: uuid.UUID
    owner_id: uuid.UUID
    status: str
    model: str
    template: str | None
    prompt_hash: str
    prompt_hash_key_id: str
    context: dict[str, Any]
    params: dict[str, Any]
    output: str | None
    error_code: str | None
    error_message: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached: bool
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime
    cache_key: str | None
    idempotency_key: str | None
    request_hash: str | None
    lease_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: uuid.UUID
    name: str
    role: str
    key_hash: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    rate_limit_per_minute: int | None
    max_running_tasks: int | None


@dataclass(frozen=True, slots=True)
class AuditEventRecord:
    id: int
    occurred_at: datetime
    actor_id: uuid.UUID | None
    actor_role: str | None
    channel: str
    action: str
    task_id: uuid.UUID | None
    outcome: str
    request_id: str | None
    detail: dict[str, Any] | None


def column_list(record: type[Any]) -> str:
    """`a, b, c` in the dataclass's field order, so `Record(*row)` lines up."""
    return ", ".join(f.name for f in fields(record))
