"""Every error answer is JSON `{code, message}` with a stable code; never the request's content."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.domain import (
    ServiceError,
    Throttled,
)
from app.domain.errors import HTTP_STATUS
from app.schemas import ErrorBody

log = logging.getLogger(__name__)

STATUS_OF = HTTP_STATUS  # app.domain.errors: the one table every face answers with

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

# The documented error answers, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, unknown or revoked API key"},
    413: {"model": ErrorBody, "description": "`payload_too_large`: the request body is over the size limit"},
    422: {"model": ErrorBody, "description": "the request is not valid (see `code` and `details`)"},
    429: {
        "model": ErrorBody,
        "description": "`too_many_requests` or `too_many_running_tasks`: a per-key limit; see `Retry-After`",
    },
    503: {"model": ErrorBody, "description": "the database is not reachable; retry shortly"},
}


def error_response(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    body = ErrorBody.model_validate({"code": code, "message": message, "details": details})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    status = next((s for cls, s in STATUS_OF.items() if isinstance(exc, cls)), 500)
    response = error_response(status, exc.code, exc.message)
    if isinstance(exc, Throttled):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


# Errors about a name the caller made up: the name is theirs, so it is not repeated either.
_UNKNOWN_NAME_ERRORS = frozenset({"extra_forbidden", "unexpected_keyword_argument"})
MAX_ERROR_DETAILS = 20


def safe_details(errors: list[Any], *, unknown: str = "field") -> list[dict[str, Any]]:
    """Validation errors that name the field and the rule, never a value (it may be the prompt).

    `unknown` is what an invented name is called ("field" in a body, "argument" of a tool):
    such an error points at the object that held it, not at the name.
    """
    details = []
    for e in errors[:MAX_ERROR_DETAILS]:
        loc = [p for p in e.get("loc", ()) if isinstance(p, str | int)]
        kind = str(e.get("type", ""))
        message = str(e.get("msg", ""))
        if kind in _UNKNOWN_NAME_ERRORS:
            loc, message = loc[:-1], f"an unknown {unknown} is not allowed"
        details.append({"loc": loc, "msg": message, "type": kind})
    return details


def summary(details: list[dict[str, Any]]) -> str:
    """The first few details as one line: `loc: rule; loc: rule`."""
    return "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" if d["loc"] else d["msg"] for d in details[:5])


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = safe_details(list(exc.errors()))
    return error_response(422, "validation_error", summary(details) or "the request is not valid", details)


def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    response = error_response(exc.status_code, code, message)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # The type only: an exception's text can carry request content.
    log.error("unhandled %s", type(exc).__name__)
    return error_response(500, "internal_error", "the service failed to handle this request")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
