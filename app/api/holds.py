"""REST routes for legal holds (auditor and admin keys): place, list and release.

Like every route, thin: parse, authenticate, call one service method. Each function's name is
its operation id.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from app.api.deps import Authenticated, CheckedRoute
from app.api.errors import ERROR_RESPONSES
from app.domain import Channel
from app.schemas import ErrorBody, HoldCreate, LegalHold, LegalHoldPage
from app.service.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

router = APIRouter(route_class=CheckedRoute, tags=["holds"])

Responses = dict[int | str, dict[str, Any]]
_FORBIDDEN: Responses = {403: {"model": ErrorBody, "description": "`forbidden`: a client key"}}
_KEYED: Responses = {status: answer for status, answer in ERROR_RESPONSES.items() if status != 413}
_WITH_BODY: Responses = {
    **ERROR_RESPONSES,
    400: {"model": ErrorBody, "description": "`bad_request`: the body could not be read as JSON text (UTF-8)"},
}
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")]


@router.post(
    "/holds",
    status_code=201,
    response_model=LegalHold,
    responses={**_WITH_BODY, **_FORBIDDEN, 404: {"model": ErrorBody, "description": "no such task or API key"}},
)
async def place_legal_hold(hold: HoldCreate, call: Authenticated) -> Response:
    """Place a legal hold on a task or on every task of an API key (auditor and admin roles; audited)."""
    placed = await call.service.place_hold(call.principal, hold, channel=Channel.REST, request_id=call.request_id)
    return Response(placed.model_dump_json(), status_code=201, media_type="application/json")


@router.get("/holds", response_model=LegalHoldPage, responses={**_KEYED, **_FORBIDDEN})
async def list_legal_holds(call: Authenticated, cursor: Cursor = None, limit: Limit = DEFAULT_PAGE_SIZE) -> Response:
    """List the legal holds in force, newest first (auditor and admin roles)."""
    page = await call.service.list_holds(call.principal, cursor=cursor, limit=limit)
    return Response(page.model_dump_json(), media_type="application/json")


@router.delete(
    "/holds/{hold_id}",
    status_code=204,
    responses={**_KEYED, **_FORBIDDEN, 404: {"model": ErrorBody, "description": "no such legal hold in force"}},
)
async def release_legal_hold(hold_id: uuid.UUID, call: Authenticated) -> Response:
    """Release a legal hold (auditor and admin roles; audited). The hold's row stays, as history."""
    await call.service.release_hold(call.principal, hold_id, channel=Channel.REST, request_id=call.request_id)
    return Response(status_code=204)
