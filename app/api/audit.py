"""REST routes of the sealed audit trail (auditor and admin keys): the public key, the seals, an export.

Thin, like every route: parse, authenticate, call one service method. Each function's name is
its operation id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from app.api.deps import Authenticated, CheckedRoute
from app.api.errors import ERROR_RESPONSES
from app.domain import Channel
from app.schemas import AuditSealPage, ErrorBody
from app.service.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

router = APIRouter(route_class=CheckedRoute, tags=["audit"])

Responses = dict[int | str, dict[str, Any]]
_FORBIDDEN: Responses = {403: {"model": ErrorBody, "description": "`forbidden`: a client key"}}
_KEYED: Responses = {status: answer for status, answer in ERROR_RESPONSES.items() if status != 413}
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")]
PEM = "application/x-pem-file"
NDJSON = "application/x-ndjson"


@router.get(
    "/audit/public-key",
    response_class=Response,
    responses={
        **_KEYED,
        **_FORBIDDEN,
        200: {"content": {PEM: {"schema": {"type": "string"}}}, "description": "the Ed25519 public key, PEM"},
    },
)
async def get_audit_public_key(call: Authenticated) -> Response:
    """The public key that checks every audit seal and export, as PEM (auditor and admin roles)."""
    return Response(call.service.audit_public_key(call.principal), media_type=PEM)


@router.get("/audit/seals", response_model=AuditSealPage, responses={**_KEYED, **_FORBIDDEN})
async def list_audit_seals(call: Authenticated, cursor: Cursor = None, limit: Limit = DEFAULT_PAGE_SIZE) -> Response:
    """List the audit seals, newest first: the signed chain of checkpoints (auditor and admin roles)."""
    page = await call.service.list_audit_seals(call.principal, cursor=cursor, limit=limit)
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={
        **_KEYED,
        **_FORBIDDEN,
        200: {
            "content": {NDJSON: {"schema": {"type": "string"}}},
            "description": "JSON Lines: a header, the events, their seals, a signed manifest",
        },
    },
)
async def export_audit_trail(
    call: Authenticated,
    since: Annotated[datetime, Query(description="ISO 8601; the window's start (inclusive)")],
    until: Annotated[datetime, Query(description="ISO 8601; the window's end (exclusive)")],
) -> StreamingResponse:
    """Export a time window of the audit trail, verifiable offline (auditor and admin roles; audited)."""
    lines = await call.service.export_audit(
        call.principal, since=since, until=until, channel=Channel.REST, request_id=call.request_id
    )
    return StreamingResponse(lines, media_type=NDJSON, headers={"Content-Disposition": "attachment"})
