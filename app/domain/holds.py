"""Legal holds: a matter's claim on data that keeps it past retention, until released."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class LegalHoldRecord:
    """One `legal_hold` row, its columns in table order. It targets one task (`task_id`) or
    every task of one API key (`owner_key_id`), never both; a released hold keeps its row."""

    id: uuid.UUID
    reference: str
    task_id: uuid.UUID | None
    owner_key_id: uuid.UUID | None
    created_at: datetime
    created_by: uuid.UUID | None
    released_at: datetime | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> LegalHoldRecord:
        return cls(*row)
