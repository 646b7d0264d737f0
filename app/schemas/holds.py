"""Legal holds: what an auditor places, and the holds in force."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from app.domain import (
    LegalHoldRecord,
)
from app.schemas.common import (
    STRICT,
)

# A matter's identifier as a legal department writes it ("CASE-2026-17"), never free text: it is
# shown in listings and the CLI, and a name or a description does not belong in it.
HOLD_REFERENCE_PATTERN = r"^[A-Za-z0-9_./:-]{1,100}$"


class HoldCreate(BaseModel):
    """A legal hold to place: its matter's `reference` and exactly one target, a task or an API key."""

    model_config = STRICT

    reference: str = Field(
        pattern=HOLD_REFERENCE_PATTERN, description="the matter: 1 to 100 of letters, digits and `-_./:`"
    )
    task_id: uuid.UUID | None = Field(default=None, strict=False, description="hold this task")
    owner_key_id: uuid.UUID | None = Field(
        default=None, strict=False, description="hold every task of this API key, made before or after"
    )

    @model_validator(mode="after")
    def _one_target(self) -> HoldCreate:
        if (self.task_id is None) == (self.owner_key_id is None):
            raise ValueError("give exactly one of task_id and owner_key_id")
        return self


class LegalHold(BaseModel):
    """A legal hold in force."""

    hold_id: uuid.UUID
    reference: str
    task_id: uuid.UUID | None
    owner_key_id: uuid.UUID | None
    created_at: datetime
    created_by: uuid.UUID | None = Field(description="the API key that placed it; null from the command line")

    @classmethod
    def from_record(cls, hold: LegalHoldRecord) -> LegalHold:
        return cls.model_construct(
            hold_id=hold.id,
            reference=hold.reference,
            task_id=hold.task_id,
            owner_key_id=hold.owner_key_id,
            created_at=hold.created_at,
            created_by=hold.created_by,
        )


class LegalHoldPage(BaseModel):
    items: list[LegalHold]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
