"""A task: its status, the row storage returns, what a submission writes and how a run ends.

Rows are plain slotted dataclasses, not SQLModel instances. Measured: building a table
instance costs ~87 us a row, `model_construct` ~9 us, a slotted dataclass under 1 us, on a
read path whose whole budget is ~200 us. `tests/unit/storage/test_tables.py` checks that each
record has exactly its table's columns, in order, so the two cannot drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from app.domain.audit import AuditOutcome


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped at a caller's request before it finished

    @property
    def finished(self) -> bool:
        """Succeeded, failed or cancelled: nothing will change the task any more."""
        return self in _FINISHED


_FINISHED = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
UNFINISHED = (TaskStatus.PENDING, TaskStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One `agent_task` row, its columns in table order."""

    id: uuid.UUID
    owner_id: uuid.UUID
    status: TaskStatus
    model: str
    template: str | None
    prompt_hash: str
    prompt_hash_key_id: str
    context: bytes | None  # sealed (app.access.encryption): never plain in a row
    params: dict[str, Any]
    output: bytes | None  # sealed, like context
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
    # False for a `store: false` task: its answer went to the waiting caller only, and its
    # output and context were never written (NULL).
    output_stored: bool
    webhook_url: str | None = None  # where the task's end is POSTed (app.service.deliveries)
    # What the provider call cost in US dollars (app.llm.pricing); None: unpriced, or no call made
    # yet. A cache hit or a single-flight copy made no call: 0.
    cost_usd: Decimal | None = None
    # `json_schema` or `json_object`: the answer (sealed in `output`) is JSON, validated against the
    # task's response_format, and reads parse it as `output_json`. None: plain text. The schema
    # itself is never stored (its keyed hash is part of `cache_key` and `request_hash`).
    response_format: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TaskRecord:
        """A row of `SELECT <every column in order>`; the status becomes its enum."""
        return cls(row[0], row[1], TaskStatus(row[2]), *row[3:])


@dataclass(frozen=True, slots=True)
class NewTask:
    """What storing a submitted task writes. Hashes only: the prompt never reaches storage."""

    id: uuid.UUID
    owner_id: uuid.UUID
    status: TaskStatus
    model: str
    template: str | None
    prompt_hash: str
    prompt_hash_key_id: str
    context: bytes | None  # sealed for this task's id and owner
    params: dict[str, Any]
    retention_seconds: float
    cache_key: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    lease_seconds: float | None = None  # pending and running tasks carry a lease
    output_stored: bool = True  # False: `store: false`, so `context` is None and no output is written
    webhook_url: str | None = None  # checked (app.webhooks.addresses); POSTed to when the task ends
    response_format: str | None = None  # `json_schema` or `json_object` (the kind only, never the schema)


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """How a run ended: the answer and its usage, or a stable error code and a safe message."""

    status: TaskStatus
    output: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: Decimal | None = None  # None: the model is not in the price list, or usage is incomplete


@dataclass(frozen=True, slots=True)
class OpenedResult:
    """A task's sealed fields, opened for the caller in front of us. `unreadable` is the error
    code when they cannot be (`key_retired`: the sealing key was removed on purpose;
    `result_unreadable`: the ciphertext was altered or moved); the answer is then null."""

    output: str | None
    context: dict[str, Any]
    unreadable: str | None = None


@dataclass(frozen=True, slots=True)
class AuditedTask:
    """An audited lookup: the task when the caller may see it, and the outcome that was recorded."""

    outcome: AuditOutcome
    task: TaskRecord | None
    held: bool = False  # under a legal hold in force (its own or its owner's)


@dataclass(frozen=True, slots=True)
class PromptHashes:
    """Every hash a task carrying one prompt may have, for the auditor's search: the
    owner-bound hash per owner, and the global hash of rows written before that binding."""

    key_id: str
    by_owner: dict[uuid.UUID, str]
    legacy_key_id: str
    legacy_hash: str


@dataclass(frozen=True, slots=True)
class TaskFilters:
    """What the console's task list narrows the live tasks to: each None means any.

    `owner_id` is a filter an auditor or admin chooses, on top of the role's own limit (a client
    is always limited to its own tasks). `created_from` is inclusive, `created_to` exclusive.
    """

    status: TaskStatus | None = None
    task_id: uuid.UUID | None = None
    model: str | None = None
    owner_id: uuid.UUID | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
