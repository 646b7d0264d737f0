"""MCP errors in the REST error contract: `{code, message, details}`, quoting no input.

Three places make them:

- `mcp_errors`: a tool's or the resource's own service errors (`ServiceError`);
- `ArgumentErrors`, a FastMCP middleware: arguments that fail the tool's signature (FastMCP
  would answer pydantic's text, which quotes the value: `input_value={'text': 'SECRET'}`),
  and unknown tool or resource names (FastMCP repeats the name the caller sent);
- `TransportErrors`, around the MCP ASGI app: what the transport refuses before any tool runs,
  an invalid JSON-RPC message, a missing or wrong key, a foreign Host or Origin. The SDK
  answers those with its own bodies, which quote the message or point clients at OAuth.

Agent frameworks feed tool errors back to the model and into their traces; an echoed
argument would carry a mistyped prompt on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastmcp.exceptions import NotFoundError, ResourceError, ToolError
from fastmcp.exceptions import ValidationError as ArgumentError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from mcp import types as mt
from mcp_types import jsonrpc_message_adapter
from mcp_types.version import SUPPORTED_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response, safe_details, summary
from app.domain import DatabaseUnavailable, InvalidInput, ServiceError, Throttled


def error_text(exc: ServiceError, details: list[dict[str, Any]] | None = None) -> str:
    """The same `{code, message}` body as REST errors, as the MCP error's text."""
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, Throttled):
        body["retry_after"] = exc.retry_after
    if details:
        body["details"] = details
    return json.dumps(body)


def _invalid(exc: ValidationError, *, unknown: str) -> tuple[InvalidInput, list[dict[str, Any]]]:
    details = safe_details(exc.errors(), unknown=unknown)
    return InvalidInput(summary(details) or "the arguments are not valid"), details


@contextmanager
def mcp_errors(error: type[ToolError | ResourceError] = ToolError) -> Iterator[None]:
    """Service errors become MCP errors carrying their stable code."""
    try:
        yield
    except ServiceError as exc:
        # A caller's mistake is routine (FastMCP would log it at ERROR); an outage is worth a warning.
        level = logging.WARNING if isinstance(exc, DatabaseUnavailable) else logging.INFO
        raise error(error_text(exc), log_level=level) from None
    except ValidationError as exc:
        invalid, details = _invalid(exc, unknown="field")
        raise error(error_text(invalid, details), log_level=logging.INFO) from None


class ArgumentErrors(Middleware):
    """Tool arguments that fail the signature, and unknown names, answered without quoting them."""

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, Any],
    ) -> Any:
        try:
            return await call_next(context)
        except ArgumentError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError):
                invalid, details = InvalidInput("the arguments are not valid"), list[dict[str, Any]]()
            else:
                invalid, details = _invalid(cause, unknown="argument")
            raise ToolError(error_text(invalid, details), log_level=logging.INFO) from None
        except NotFoundError:
            raise NotFoundError("an unknown tool") from None  # FastMCP's text repeats the name

    async def on_read_resource(
        self,
        context: MiddlewareContext[mt.ReadResourceRequestParams],
        call_next: CallNext[mt.ReadResourceRequestParams, Any],
    ) -> Any:
        try:
            return await call_next(context)
        except NotFoundError:
            raise NotFoundError("an unknown resource; results are agent-result://{task_id}") from None


# What the transport refuses, in our words: the SDK's texts quote the message (400) or send
# clients into an OAuth registration flow (401).
_TRANSPORT_ERRORS = {
    400: ("validation_error", "the body is not a valid JSON-RPC 2.0 message (batches are not supported)"),
    401: ("unauthenticated", "a valid API key is required: Authorization: Bearer <key> (agent-service keys create)"),
    403: ("forbidden_origin", "requests from this Origin are refused; add it to MCP_ALLOWED_ORIGINS"),
    404: ("not_found", "no such MCP session: this server is stateless, send no Mcp-Session-Id"),
    405: ("method_not_allowed", "use POST for MCP messages"),
    406: ("not_acceptable", "Accept must include application/json and text/event-stream"),
    409: ("conflict", "only one event stream is allowed"),
    415: ("unsupported_media_type", "Content-Type must be application/json"),
    421: ("misdirected_request", "this Host is not served here; add it to MCP_ALLOWED_HOSTS"),
}
# What the 2026-07-28 protocol's single-exchange transport answers with a JSON-RPC error and an
# HTTP status of its own (404 for an unknown method, 400 for the rest). Each becomes our body with
# its own JSON-RPC code kept; never the SDK's text, which names the method or value sent.
_PROTOCOL_ERRORS = {
    -32601: (404, "unknown_method", "an MCP method this server does not offer at the protocol version sent"),
    -32602: (400, "validation_error", "the request's params do not follow the MCP schema for its method"),
    -32020: (400, "validation_error", "the Mcp-Method or Mcp-Name header does not match the body"),
    -32021: (400, "validation_error", "the request needs a client capability the client did not declare"),
    -32022: (
        400,
        "unsupported_protocol_version",
        f"this server speaks MCP protocol versions {', '.join(SUPPORTED_PROTOCOL_VERSIONS)}",
    ),
}
_INVALID_PARAMS = -32602  # also the legacy transport's code for a body that is no JSON-RPC message
_PARSE_ERROR = -32700
_INVALID_REQUEST = -32600
_UNAUTHENTICATED = -32001  # JSON-RPC's range for server-defined errors
SERVER_ERROR = -32000  # the same range: a refusal that is not about the request (throttled, an outage)


class TransportErrors:
    """Gives the MCP transport's refusals our JSON error body, for every status it refuses with.

    The MCP app's own JSON 403s (a missing scope) pass through. For an invalid JSON-RPC message
    the body is validated again here, to name what is wrong (never what was sent).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()  # the request, for the details of a 400 (bounded by MAX_REQUEST_BYTES)
        status: int | None = None
        answer = bytearray()

        async def keep_body() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def send_ours(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                is_json = "json" in headers.get("content-type", "")
                if message["status"] in _TRANSPORT_ERRORS and not (message["status"] == 403 and is_json):
                    status = message["status"]
                    return
            elif message["type"] == "http.response.body" and status is not None:
                answer.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                await self._answer(status, bytes(body), bytes(answer))(scope, receive, send)
                return
            await send(message)

        await self.app(scope, keep_body, send_ours)

    @staticmethod
    def _answer(status: int, request: bytes, answer: bytes) -> Any:
        rpc_error = _json_rpc_code(answer)
        if rpc_error is not None and (ours := _our_body(answer)) is not None:  # a tasks/* error: already ours
            response = error_response(status, ours["code"], ours["message"])
            text = f"{ours['code']}: {ours['message']}"
            # A request that was read and answered keeps its id (JSON-RPC: null only when none is known).
            return as_json_rpc_error(response, rpc_error, text, data=ours, rpc_id=_request_id_of(answer))
        if rpc_error in _PROTOCOL_ERRORS and not (rpc_error == _INVALID_PARAMS and not _is_json_rpc(request)):
            status, code, message = _PROTOCOL_ERRORS[rpc_error]
            return as_json_rpc_error(error_response(status, code, message), rpc_error, f"{code}: {message}")
        code, message = _TRANSPORT_ERRORS[status]
        details: list[dict[str, Any]] | None = None
        rpc_code = _INVALID_REQUEST
        if status == 400 and rpc_error == _PARSE_ERROR:
            message, rpc_code = "the body is not valid JSON", _PARSE_ERROR
        elif status == 400:
            try:
                jsonrpc_message_adapter.validate_json(request)
            except ValidationError as exc:
                details = safe_details(exc.errors(), unknown="member")
            except ValueError:
                pass
        elif status == 401:
            rpc_code = _UNAUTHENTICATED
        response = error_response(status, code, message, details)
        return as_json_rpc_error(response, rpc_code, f"{code}: {message}")


def as_json_rpc_error(
    response: JSONResponse, rpc_code: int, text: str, data: Any = None, rpc_id: int | str | None = None
) -> JSONResponse:
    """Our error body, which is also a JSON-RPC error response (the extra members are ignored
    by either reader). MCP SDK clients then show our message ("unauthenticated: a valid API key
    is required …") instead of their stand-in "Server returned an error response". The id is
    null, as JSON-RPC allows for a refused request: nothing of the request is sent back."""
    body = json.loads(bytes(response.body))
    error: dict[str, Any] = {"code": rpc_code, "message": text}
    if data is not None:
        error["data"] = data
    body.update({"jsonrpc": "2.0", "id": rpc_id, "error": error})
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return JSONResponse(body, status_code=response.status_code, headers=headers)


def _is_json_rpc(request: bytes) -> bool:
    try:
        jsonrpc_message_adapter.validate_json(request)
    except ValueError:  # pydantic's ValidationError included
        return False
    return True


def _json_rpc_code(answer: bytes) -> int | None:
    try:
        error = json.loads(answer).get("error", {})
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def _request_id_of(answer: bytes) -> int | str | None:
    """The id of the request an answer is to (a number or a string, as JSON-RPC allows), else None."""
    try:
        rpc_id = json.loads(answer).get("id")
    except (ValueError, AttributeError):
        return None
    return rpc_id if isinstance(rpc_id, int | str) and not isinstance(rpc_id, bool) else None


def _our_body(answer: bytes) -> dict[str, Any] | None:
    """The `{code, message}` body a handler of ours put in its JSON-RPC error's `data` (app.api.mcp_tasks)."""
    try:
        data = json.loads(answer).get("error", {}).get("data")
    except (ValueError, AttributeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("code"), str) and isinstance(data.get("message"), str):
        return data
    return None
