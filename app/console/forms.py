"""Reading the console's query strings and forms: each value checked, and refused with a message
of the console's own (422), so a value that does not parse is never echoed back."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from app.domain import InvalidInput

# A time filter outside these years is a typo or a probe, and near the ends of the calendar
# the shift to UTC would overflow.
_YEARS = range(1970, 9000)
MAX_MODEL_CHARS = 200  # agent_task.model's width
MAX_LIMIT = 1_000_000_000  # an int4 column's range, with room to spare


def member[E: StrEnum](kind: type[E], raw: str | None, name: str) -> E | None:
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be one of: " + ", ".join(m.value for m in kind)) from None


def a_uuid(raw: str | None, name: str) -> uuid.UUID | None:
    if not raw or not raw.strip():
        return None
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise InvalidInput(f"{name} is a UUID, such as 7f1c9a2e-0000-4000-8000-000000000000") from None


def a_time(raw: str | None, name: str) -> datetime | None:
    """A time from the form's `datetime-local` field (or any ISO 8601 time); one without a zone is UTC."""
    if not raw or not raw.strip():
        return None
    try:
        when = datetime.fromisoformat(raw.strip())
        if when.year not in _YEARS:
            raise ValueError("implausible year")
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(f"{name} is a date and time, such as 2026-01-31T09:30 (UTC)") from None


def a_window(since: datetime | None, until: datetime | None, *, to: str = "to", start: str = "from") -> None:
    if since and until and until <= since:
        raise InvalidInput(f"{to} must be later than {start}")


def form_time(when: datetime | None) -> str:
    """A time as the `datetime-local` field shows it (UTC, to the minute or second)."""
    if when is None:
        return ""
    return when.strftime("%Y-%m-%dT%H:%M:%S" if when.second else "%Y-%m-%dT%H:%M")


def a_model(raw: str | None) -> str | None:
    """A model's name as tasks store it (`provider:model` or an alias), matched exactly."""
    if not raw or not raw.strip():
        return None
    model = raw.strip()
    if len(model) > MAX_MODEL_CHARS or not model.isprintable():
        raise InvalidInput(f"a model is its name as a task gives it, at most {MAX_MODEL_CHARS} characters")
    return model


def a_limit(raw: str | None, name: str) -> int | None:
    """A per-key limit: blank is the server's default (None), 0 is none, else a whole number."""
    if raw is None or not raw.strip():
        return None
    value = raw.strip()
    if not value.isdigit() or len(value) > 10 or int(value) > MAX_LIMIT:
        raise InvalidInput(f"{name} is blank (the server's default), 0 (none) or a whole number")
    return int(value)


def a_days(raw: str | None, name: str) -> float | None:
    """A number of days (blank: None); the rules of its range are the key operations' own."""
    if raw is None or not raw.strip():
        return None
    try:
        days = float(raw.strip())
    except ValueError:
        raise InvalidInput(f"{name} is a number of days, such as 30 or 0.5") from None
    if not math.isfinite(days) or days < 0 or days > 36_500:
        raise InvalidInput(f"{name} is a number of days, such as 30 or 0.5")
    return days


def a_usd(raw: str | None, name: str) -> Decimal | None:
    """US dollars (blank: None), kept as the exact decimal typed, to the millionth."""
    if raw is None or not raw.strip():
        return None
    try:
        usd = Decimal(raw.strip())
    except InvalidOperation:
        raise InvalidInput(f"{name} is an amount in US dollars, such as 250 or 12.50") from None
    if not usd.is_finite() or usd < 0 or usd > Decimal(10) ** 12:
        raise InvalidInput(f"{name} is an amount in US dollars, such as 250 or 12.50")
    return usd.quantize(Decimal("0.000001"))


def value_of(member_or_none: StrEnum | None) -> str:
    return "" if member_or_none is None else member_or_none.value
