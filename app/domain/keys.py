"""API keys and the caller a request acts as."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    CLIENT = "client"
    AUDITOR = "auditor"
    ADMIN = "admin"


class StoreOutput(StrEnum):
    """Whether a key's answers may be written at all: `never` makes each of its tasks
    `store: false`, whatever the task says (a caller whose data must not be kept)."""

    NEVER = "never"
    ALLOWED = "allowed"


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One `api_key` row, its columns in table order: the key's SHA-256, never the key."""

    id: uuid.UUID
    name: str
    role: Role
    key_hash: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    rate_limit_per_minute: int | None
    max_running_tasks: int | None
    store_output: StoreOutput
    max_retention_days: float | None  # a ceiling below the server's RESULT_RETENTION_DAYS; None: none
    webhook_secret_at: datetime | None  # when its webhook signing secret was set; None: it has none
    monthly_token_budget: int | None = None  # None: no budget
    monthly_usd_budget: Decimal | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ApiKeyRecord:
        return cls(
            row[0],
            row[1],
            Role(row[2]),
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            StoreOutput(row[9]),
            row[10],
            row[11],
            row[12],
            row[13],
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: an API key's id, name and role, with its effective limits."""

    key_id: uuid.UUID
    name: str
    role: Role
    # Effective per-key limits (the key's own, else the server's); 0 is no limit.
    rate_limit_per_minute: int = 0
    max_running_tasks: int = 0
    # The key's data policy: whether its answers may be stored, and its own retention ceiling.
    store_output: StoreOutput = StoreOutput.ALLOWED
    max_retention_days: float | None = None
    # Whether the key has a webhook signing secret: a task may name a webhook only then.
    signs_webhooks: bool = False
    # The key's monthly budgets (None: none), checked at each submission against the ledger.
    monthly_token_budget: int | None = None
    monthly_usd_budget: Decimal | None = None

    @property
    def has_budget(self) -> bool:
        return self.monthly_token_budget is not None or self.monthly_usd_budget is not None

    @property
    def sees_every_task(self) -> bool:
        """Auditors and admins may read any task; clients only their own."""
        return self.role in (Role.AUDITOR, Role.ADMIN)

    @property
    def owner_filter(self) -> uuid.UUID | None:
        """The owner a query must be limited to, or None for no limit."""
        return None if self.sees_every_task else self.key_id
