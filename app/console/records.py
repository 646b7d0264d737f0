"""The console's record pages: the audit log (auditors and admins) and retention (every key).

Both read through the operations REST uses, with channel `console`: the audit-log page is
`list_audit_events` (so every view of it is an audited `audit_read`, and a client is refused
exactly as at `GET /audit/events`), and the purge history is the same operation narrowed to
action `purge`. Filter values are checked here and refused with a message of the console's own:
a value that does not parse is never echoed back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from app.console.chart import purge_chart
from app.console.forms import a_time, a_uuid, a_window, form_time, member, value_of
from app.console.pages import PREFIX, ConsoleRoute, page, request_id_of, service_of
from app.console.routes import CurrentSession
from app.domain import AuditAction, AuditOutcome, Channel, InvalidInput
from app.domain.audit import AuditFilters
from app.service.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=ConsoleRoute)
AUDIT = f"{PREFIX}/audit"


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
        actor_id=a_uuid(actor_id, "actor key id"),
        action=member(AuditAction, action, "action"),
        outcome=member(AuditOutcome, outcome, "outcome"),
        channel=member(Channel, channel, "channel"),
        since=a_time(since, "from"),
        until=a_time(until, "to"),
    )
    a_window(filters.since, filters.until)
    wanted_task = a_uuid(task_id, "task id")
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
        "action": value_of(filters.action),
        "outcome": value_of(filters.outcome),
        "channel": value_of(filters.channel),
        "task_id": str(wanted_task or ""),
        "since": form_time(filters.since),
        "until": form_time(filters.until),
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
        **_export_window(),
        "next_page": next_page,
        "request_id": request_id_of(request),
    }
    return page(request, "audit.html", context, principal=principal, csrf=session.csrf)


def _export_window() -> dict[str, str]:
    """The export form's default window: the last seven days, to the next whole minute."""
    until = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    return {"export_since": form_time(until - timedelta(days=7)), "export_until": form_time(until)}


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
