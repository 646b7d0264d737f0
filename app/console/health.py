"""The console's health page: the readiness checks (every signed-in key, as `GET /ready` tells
anyone), and for auditors and admins the live tasks by status and this process's main metrics
(from the Prometheus registry `GET /metrics` exports: its figures count every client's tasks, so
a client key may not see them, exactly as at /metrics). Rendered on the server; no script."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.console.pages import PREFIX, ConsoleRoute, page, service_of
from app.console.routes import CurrentSession
from app.domain import TaskStatus
from app.domain.tasks import UNFINISHED

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=ConsoleRoute)


@router.get("/health")
async def health_page(request: Request, session: CurrentSession) -> Response:
    overview = await service_of(request).health_overview(session.principal)
    live = None
    if overview.live_tasks is not None:
        live = [(s.value, overview.live_tasks.get(s.value, 0)) for s in TaskStatus]
    in_flight = sum(overview.live_tasks.get(s.value, 0) for s in UNFINISHED) if overview.live_tasks else 0
    context = {"overview": overview, "live": live, "in_flight": in_flight}
    return page(request, "health.html", context, principal=session.principal, csrf=session.csrf)
