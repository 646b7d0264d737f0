"""The audit log's export and seal-chain check, for auditors and admins.

The export is the very operation `GET /audit/export` and `agent-service audit export` use (a
verifiable JSON Lines file: events, their seals, a signed manifest), audited as `audit_export`
with channel `console` before its first line. The chain check recomputes every seal and event
digest from the database, as `agent-service audit verify` does, when asked (the page's button),
not on every view of the audit log: it reads the whole sealed trail.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from app.console.forms import a_time, a_window
from app.console.pages import PREFIX, ConsoleRoute, page, request_id_of, service_of
from app.console.routes import CurrentSession
from app.domain import Channel, Forbidden, InvalidInput

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=ConsoleRoute)
NDJSON = "application/x-ndjson"


@router.get("/audit/export")
async def export_audit(
    request: Request, session: CurrentSession, since: str | None = None, until: str | None = None
) -> Response:
    """The audit trail of a window (from inclusive, to exclusive, UTC) as a verifiable download.
    The role is checked before the window, so a client key learns nothing of the form's rules."""
    if not session.principal.sees_every_task:
        raise Forbidden("the audit trail is for the auditor and admin roles")
    start, end = a_time(since, "export from"), a_time(until, "export to")
    if start is None or end is None:
        raise InvalidInput("an export needs both ends of its window: from and to (UTC)")
    a_window(start, end, to="export to", start="export from")
    lines = await service_of(request).export_audit(
        session.principal, since=start, until=end, channel=Channel.CONSOLE, request_id=request_id_of(request)
    )
    name = f"audit-export-{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}.ndjson"
    return StreamingResponse(
        lines, media_type=NDJSON, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get("/audit/verify")
async def verify_chain(request: Request, session: CurrentSession) -> Response:
    """Check the seal chain now: every seal's signature and link, every sealed event's digest."""
    report = await service_of(request).verify_audit_chain(session.principal)
    context = {"report": report, "checked_at": datetime.now(UTC)}
    return page(request, "verify.html", context, principal=session.principal, csrf=session.csrf)
