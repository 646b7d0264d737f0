"""The console's pages: sign in and out, the tasks, a task (an audited read), its holds.

Thin, like the REST routes: read the session, call one operation with channel `console`, render.
Every state change is a POST carrying the session's CSRF token (the sign-in form: a double-submit
cookie); every answer is HTML. Role rules are the operations' own: a client sees its own tasks,
auditors and admins every task, its audit trail and its holds.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from app.console.forms import a_model, a_time, a_uuid, a_window, form_time, member, value_of
from app.console.pages import (
    HERE,
    PREFIX,
    SESSION_COOKIE,
    SIGN_IN,
    SIGN_IN_COOKIE,
    ConsoleRoute,
    SignInRequired,
    check_csrf,
    clear_cookie,
    client_of,
    form_of,
    page,
    request_id_of,
    service_of,
    set_cookie,
)
from app.domain import Channel, InvalidInput, NotFound, Principal, TaskStatus, Unauthenticated
from app.domain.tasks import TaskFilters
from app.schemas import HoldCreate
from app.service.pagination import DEFAULT_PAGE_SIZE

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=ConsoleRoute)
TASKS = f"{PREFIX}/tasks"
AUDIT_TRAIL_ROWS = 100
BAD_KEY = "That API key is not valid: unknown, revoked or mistyped."


def static() -> Mount:
    """The console's stylesheet (and any image), shipped inside the package."""
    return Mount(f"{PREFIX}/static", app=StaticFiles(directory=HERE / "static"), name="console-static")


@dataclass(frozen=True, slots=True)
class Session:
    """The signed-in caller of this request, and the CSRF token its forms carry."""

    token: str
    principal: Principal
    csrf: str


async def current_session(request: Request) -> Session:
    """The live session behind the cookie, with this request counted against the key's rate limit
    (as an API request would be); none: to the sign-in page."""
    service = service_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    try:
        principal = await service.session_principal(token)
    except Unauthenticated:
        raise SignInRequired from None
    await service.count_request(principal)
    assert token is not None  # a session was found by it
    return Session(token, principal, service.session_csrf(token))


CurrentSession = Annotated[Session, Depends(current_session)]


async def checked_form(request: Request, session: Session) -> dict[str, str]:
    form = await form_of(request)
    check_csrf(session.csrf, form.get("csrf"))
    return form


def _task_id(raw: str) -> uuid.UUID:
    """A task id from a path: anything that is not one is no such task, like an unknown one."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound from None


# -- signing in and out ------------------------------------------------------------------------


@router.get("")
async def console_home() -> Response:
    return RedirectResponse(TASKS, status_code=303)


def _sign_in_form(request: Request, *, status_code: int = 200, problem: str | None = None) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = page(request, "sign_in.html", {"sign_in_csrf": token, "problem": problem}, status_code=status_code)
    set_cookie(request, response, SIGN_IN_COOKIE, token)
    return response


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    return _sign_in_form(request)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """Exchange an API key for a session. A wrong key is counted by the failure throttle (per
    client address, as for the API); past its limit the answer is 429 with Retry-After."""
    form = await form_of(request)
    check_csrf(request.cookies.get(SIGN_IN_COOKIE), form.get("csrf"))
    service = service_of(request)
    try:
        signed_in = await service.sign_in(
            form.get("api_key", "").strip(), client=client_of(request), request_id=request_id_of(request)
        )
    except Unauthenticated:
        return _sign_in_form(request, status_code=401, problem=BAD_KEY)
    response = RedirectResponse(TASKS, status_code=303)
    set_cookie(request, response, SESSION_COOKIE, signed_in.token, max_age=int(service.session_lifetime_seconds))
    clear_cookie(request, response, SIGN_IN_COOKIE)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: CurrentSession) -> Response:
    await checked_form(request, session)
    await service_of(request).sign_out(session.token, session.principal, request_id=request_id_of(request))
    response = RedirectResponse(SIGN_IN, status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    return response


# -- tasks -------------------------------------------------------------------------------------


@router.get("/tasks")
async def tasks_page(
    request: Request,
    session: CurrentSession,
    status: str | None = None,
    task_id: str | None = None,
    model: str | None = None,
    owner_id: str | None = None,
    created_from: str | None = None,
    created_to: str | None = None,
    cursor: str | None = None,
) -> Response:
    """The tasks the caller may see, newest first, filtered by status, id, model, owner key (auditors
    and admins) and creation time (audited as a `list`). A value that does not parse is a 422 page."""
    principal = session.principal
    filters = TaskFilters(
        status=member(TaskStatus, status, "status"),
        task_id=a_uuid(task_id, "a task id"),
        model=a_model(model),
        owner_id=a_uuid(owner_id, "an owner key id") if principal.sees_every_task else None,
        created_from=a_time(created_from, "created from"),
        created_to=a_time(created_to, "created to"),
    )
    a_window(filters.created_from, filters.created_to, to="created to", start="created from")
    if cursor is not None and len(cursor) > 200:
        raise InvalidInput("cursor is not one this service issued", code="invalid_cursor")
    listing = await service_of(request).browse_tasks(
        principal,
        filters=filters,
        cursor=cursor or None,
        limit=DEFAULT_PAGE_SIZE,
        channel=Channel.CONSOLE,
        request_id=request_id_of(request),
    )
    shown = {
        "status": value_of(filters.status),
        "task_id": str(filters.task_id or ""),
        "model": filters.model or "",
        "owner_id": str(filters.owner_id or ""),
        "created_from": form_time(filters.created_from),
        "created_to": form_time(filters.created_to),
    }
    next_page = None
    if listing.next_cursor:
        next_page = f"{TASKS}?" + urlencode({**{k: v for k, v in shown.items() if v}, "cursor": listing.next_cursor})
    context = {"listing": listing, "filters": shown, "statuses": list(TaskStatus), "next_page": next_page}
    return page(request, "tasks.html", context, principal=principal, csrf=session.csrf)


@router.get("/tasks/{task_id}")
async def task_page(request: Request, session: CurrentSession, task_id: str) -> Response:
    """One task: its metadata and output (an audited read, channel `console`), and for auditors and
    admins its audit trail (itself an audited `audit_read`) and its holds."""
    service, principal, request_id = service_of(request), session.principal, request_id_of(request)
    wanted = _task_id(task_id)
    result = await service.get_result(principal, wanted, channel=Channel.CONSOLE, request_id=request_id)
    trail, holds = None, None
    if principal.sees_every_task:
        trail = await service.list_audit_events(
            principal,
            task_id=wanted,
            cursor=None,
            limit=AUDIT_TRAIL_ROWS,
            channel=Channel.CONSOLE,
            request_id=request_id,
        )
        holds = await service.task_holds(principal, wanted)
    context = {"result": result, "trail": trail, "holds": holds, "request_id": request_id}
    return page(request, "task.html", context, principal=principal, csrf=session.csrf)


@router.post("/tasks/{task_id}/holds")
async def place_hold(request: Request, session: CurrentSession, task_id: str) -> Response:
    """Place a legal hold on the task (auditors and admins; audited), then back to its page."""
    form = await checked_form(request, session)
    wanted = _task_id(task_id)
    try:
        hold = HoldCreate(reference=form.get("reference", "").strip(), task_id=wanted)
    except ValidationError:
        raise InvalidInput("a hold's reference is 1 to 100 letters, digits and -_./: (the matter's id)") from None
    await service_of(request).place_hold(
        session.principal, hold, channel=Channel.CONSOLE, request_id=request_id_of(request)
    )
    return RedirectResponse(f"{TASKS}/{wanted}", status_code=303)


@router.post("/holds/{hold_id}/release")
async def release_hold(request: Request, session: CurrentSession, hold_id: str) -> Response:
    """Release a legal hold (auditors and admins; audited), then back to the task's page."""
    form = await checked_form(request, session)
    try:
        wanted = uuid.UUID(hold_id)
    except ValueError:
        raise NotFound("no such legal hold in force") from None
    back = _task_id(form.get("task_id", ""))
    await service_of(request).release_hold(
        session.principal, wanted, channel=Channel.CONSOLE, request_id=request_id_of(request)
    )
    return RedirectResponse(f"{TASKS}/{back}", status_code=303)
