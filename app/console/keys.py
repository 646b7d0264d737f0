"""The console's keys page (admin keys only): list, create (the key shown once), limits, revoke.

Each act goes through the admin operations (`app.service.key_admin`), the rules the CLI's
`agent-service keys` follows too, and is audited with channel `console` (`key_create`,
`key_limits`, `key_revoke`). Any other role is refused with 403 before anything is looked up, so
a key's id tells it nothing; for an admin, an id that names no key is "Not found".

The page a new key is shown on is the one answer that ever carries it (and its webhook secret):
it is not a redirect, and like every console page it is sent with `Cache-Control: no-store`.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from app.console.forms import a_days, a_limit, a_usd, member
from app.console.pages import PREFIX, ConsoleRoute, page, request_id_of, service_of
from app.console.routes import CurrentSession, checked_form
from app.domain import Channel, InvalidInput, NotFound, Role, StoreOutput
from app.service.key_admin import KeySettings, require_admin

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=ConsoleRoute)
KEYS = f"{PREFIX}/keys"


def _key_id(raw: str) -> uuid.UUID:
    """A key id from a path: anything that is not one is no such key."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("no API key has that id") from None


def _context() -> dict[str, object]:
    return {"roles": list(Role), "store_outputs": list(StoreOutput)}


@router.get("/keys")
async def keys_page(request: Request, session: CurrentSession) -> Response:
    """Every API key, oldest first (never a key or its hash), and the form that makes one."""
    keys = await service_of(request).list_keys(session.principal)
    context = {"keys": keys, **_context()}
    return page(request, "keys.html", context, principal=session.principal, csrf=session.csrf)


@router.post("/keys")
async def create_key(request: Request, session: CurrentSession) -> Response:
    """Make a key; the answer is the only page that ever shows it and its webhook secret."""
    require_admin(session.principal)  # before the form is read: a client learns nothing of its rules
    form = await checked_form(request, session)
    settings = KeySettings(
        rate_limit_per_minute=a_limit(form.get("rate_limit_per_minute"), "the rate limit"),
        max_running_tasks=a_limit(form.get("max_running_tasks"), "the running-task limit"),
        store_output=member(StoreOutput, form.get("store_output"), "store output") or StoreOutput.ALLOWED,
        max_retention_days=a_days(form.get("max_retention_days"), "the retention ceiling"),
        monthly_token_budget=a_limit(form.get("monthly_token_budget"), "the monthly token budget") or None,
        monthly_usd_budget=a_usd(form.get("monthly_usd_budget"), "the monthly dollar budget") or None,
    )
    role = member(Role, form.get("role"), "role") or Role.CLIENT
    made = await service_of(request).create_key(
        session.principal,
        form.get("name", ""),
        role,
        settings,
        channel=Channel.CONSOLE,
        request_id=request_id_of(request),
    )
    context = {"made": made.record, "plain": made.key, "webhook_secret": made.webhook_secret}
    return page(request, "key_created.html", context, principal=session.principal, csrf=session.csrf)


@router.get("/keys/{key_id}")
async def key_page(request: Request, session: CurrentSession, key_id: str) -> Response:
    """One key: its settings, the form that changes its limits, and the one that revokes it."""
    require_admin(session.principal)
    wanted = _key_id(key_id)
    found = next((k for k in await service_of(request).list_keys(session.principal) if k.id == wanted), None)
    if found is None:
        raise NotFound("no API key has that id")
    context = {"key": found, **_context()}
    return page(request, "key.html", context, principal=session.principal, csrf=session.csrf)


@router.post("/keys/{key_id}/limits")
async def set_limits(request: Request, session: CurrentSession, key_id: str) -> Response:
    """New limits, data policy and budgets for a key (a blank limit: the server's default; a
    blank retention ceiling or budget: none), then back to the list."""
    require_admin(session.principal)
    form = await checked_form(request, session)
    wanted = _key_id(key_id)
    store = member(StoreOutput, form.get("store_output"), "store output")
    if store is None:
        raise InvalidInput("store output must be one of: " + ", ".join(s.value for s in StoreOutput))
    await service_of(request).set_key_limits(
        session.principal,
        wanted,
        rate_limit_per_minute=a_limit(form.get("rate_limit_per_minute"), "the rate limit"),
        max_running_tasks=a_limit(form.get("max_running_tasks"), "the running-task limit"),
        store_output=store,
        max_retention_days=a_days(form.get("max_retention_days"), "the retention ceiling") or 0.0,
        monthly_token_budget=a_limit(form.get("monthly_token_budget"), "the monthly token budget") or 0,
        monthly_usd_budget=a_usd(form.get("monthly_usd_budget"), "the monthly dollar budget") or Decimal(0),
        channel=Channel.CONSOLE,
        request_id=request_id_of(request),
    )
    return RedirectResponse(KEYS, status_code=303)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, session: CurrentSession, key_id: str) -> Response:
    """Revoke a key once the box saying so is ticked: refused everywhere at once, its console
    sessions ended (a revoked admin's own included: the next page is the sign-in form)."""
    require_admin(session.principal)
    form = await checked_form(request, session)
    wanted = _key_id(key_id)
    if form.get("confirm") != "yes":
        raise InvalidInput("to revoke a key, tick the box that confirms it: a revoked key cannot be restored")
    await service_of(request).revoke_key(
        session.principal, wanted, channel=Channel.CONSOLE, request_id=request_id_of(request)
    )
    return RedirectResponse(KEYS, status_code=303)
