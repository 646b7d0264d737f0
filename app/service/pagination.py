"""Page sizes and the opaque cursors of the listings."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime

from app.domain import InvalidInput

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# What PostgreSQL's bigint (the audit log's ids) can hold.
MAX_EVENT_ID = 2**63 - 1
# Cursors are dated by rows this service wrote: anything outside these years is forged, and
# near the ends of Python's calendar a time-zone shift would overflow (a 500, not a 422).
_CURSOR_YEARS = range(1970, 9000)


def _forged() -> InvalidInput:
    return InvalidInput("cursor is not one this service issued", code="invalid_cursor")


def page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}", code="invalid_limit")
    return limit


def encode_task_cursor(created_at: datetime, task_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{task_id}".encode()).decode().rstrip("=")


def decode_task_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, task_id = raw.split("|")
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None or when.year not in _CURSOR_YEARS:
            raise ValueError("naive or implausible timestamp")
        return when.astimezone(UTC), uuid.UUID(task_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise _forged() from None


def decode_int_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    # ASCII digits only: str.isdigit() also takes "²" and other scripts' digits, which int() refuses.
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19 or not 1 <= int(cursor) <= MAX_EVENT_ID:
        raise _forged()
    return int(cursor)
