"""The console's record pages: the audit log (auditors and admins) and retention (every key).

Both read through the operations REST uses, with channel `console`: the audit-log page is
`list_audit_events` (so every view of it is an audited `audit_read`, and a client is refused
exactly as at `GET /audit/events`), and the purge history is the same operation narrowed to
action `purge`. Filter values are checked here and refused with a message of the console's own:
a value that does not parse is never echoed back.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from app.console.chart import purge_chart
from app.console.pages import PREFIX, ConsoleRoute, page, request_id_of, service_of
from app.console.routes import CurrentSession
from app.domain import AuditAction, AuditOutcome, Channel, InvalidInput
from app.domain.audit import AuditFilters
from app.service.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=ConsoleRoute)
AUDIT = f"{PREFIX}/audit"
# A time filter outside these years is a typo or a probe, and near the ends of the calendar
# the shift to UTC would overflow.
_YEARS = range(1970, 9000)


def _member[E: StrEnum](kind: type[E], raw: str | None, name: str) -> E | None:
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be one of: " + ", ".join(m.value for m in kind)) from None


def _uuid(raw: str | None, name: str) -> uuid.UUID | None:
    if not raw or not raw.strip():
        return None
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise InvalidInput(f"{name} is a UUID, such as 7f1c9a2e-0000-4000-8000-000000000000") from None


def _time(raw: str | None, name: str) -> datetime | None:
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


def _form_time(when: datetime | None) -> str:
    """A time as the `datetime-local` field shows it (UTC, to the minute or second)."""
    if when is None:
        return ""
    return when.strftime("%Y-%m-%dT%H:%M:%S" if when.second else "%Y-%m-%dT%H:%M")


@router.get("/audit")
async def audit_page(
    request: Request,
    session: CurrentSession,
    actor_id: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    channel: str | None = None,
    task_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    cursor: str | None = None,
) -> Response:
    """The audit log, newest first, filtered, 20 a page (the audit cursor); an audited `audit_read`."""
    filters = AuditFilters(
        actor_id=_uuid(actor_id, "actor key id"),
        action=_member(AuditAction, action, "action"),
        outcome=_member(AuditOutcome, outcome, "outcome"),
        channel=_member(Channel, channel, "channel"),
        since=_time(since, "from"),
        until=_time(until, "to"),
    )
    if filters.since and filters.until and filters.until <= filters.since:
        raise InvalidInput("to must be later than from")
    wanted_task = _uuid(task_id, "task id")
    if cursor is not None and len(cursor) > 20:
        raise InvalidInput("cursor is not one this service issued", code="invalid_cursor")
    service, principal = service_of(request), session.principal
    events = await service.list_audit_events(
        principal,
        task_id=wanted_task,
        cursor=cursor or None,
        limit=DEFAULT_PAGE_SIZE,
        channel=Channel.CONSOLE,
        request_id=request_id_of(request),
        filters=filters,
    )
    seals = await service.list_audit_seals(principal, cursor=None, limit=1)
    shown = {
        "actor_id": str(filters.actor_id or ""),
        "action": _value(filters.action),
        "outcome": _value(filters.outcome),
        "channel": _value(filters.channel),
        "task_id": str(wanted_task or ""),
        "since": _form_time(filters.since),
        "until": _form_time(filters.until),
    }
    next_page = None
    if events.next_cursor:
        next_page = f"{AUDIT}?" + urlencode({**{k: v for k, v in shown.items() if v}, "cursor": events.next_cursor})
    context = {
        "events": events,
        "filters": shown,
        "actions": list(AuditAction),
        "outcomes": list(AuditOutcome),
        "channels": list(Channel),
        "newest_seal": seals.items[0] if seals.items else None,
        "next_page": next_page,
        "request_id": request_id_of(request),
    }
    return page(request, "audit.html", context, principal=principal, csrf=session.csrf)


def _value(member: StrEnum | None) -> str:
    return "" if member is None else member.value


@router.get("/retention")
async def retention_page(request: Request, session: CurrentSession) -> Response:
    """The retention policy and the next scheduled purge (every key); for auditors and admins
    also the purge history and its chart (an audited `audit_read`: purge figures count every
    client's rows, which, like the metrics, a client key may not see)."""
    service, principal = service_of(request), session.principal
    history = None
    if principal.sees_every_task:
        history = await service.list_audit_events(
            principal,
            task_id=None,
            cursor=None,
            limit=MAX_PAGE_SIZE,
            channel=Channel.CONSOLE,
            request_id=request_id_of(request),
            filters=AuditFilters(action=AuditAction.PURGE),
        )
    context = {
        "policy": service.retention,
        "next_purge_at": service.next_purge_at,
        "history": history,
        "chart": purge_chart(history.items) if history is not None else None,
    }
    return page(request, "retention.html", context, principal=principal, csrf=session.csrf)
