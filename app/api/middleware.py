"""Pure ASGI middleware (BaseHTTPMiddleware would break context variables)."""

from __future__ import annotations

import re
import uuid

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.telemetry.logs import request_id_var

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class RequestIdMiddleware:
    """Takes the caller's X-Request-ID (if sane) or makes one, and returns it on the answer.

    The id is also stored in the ASGI scope's state, where the MCP face finds it:
    MCP messages are handled in tasks that do not inherit this context.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                candidate = value.decode("latin-1")
                request_id = candidate if _VALID_ID.match(candidate) else None
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        trace.get_current_span().set_attribute("request_id", request_id)  # the request's span, if traced
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodySizeLimitMiddleware:
    """413 `payload_too_large` for a body over `max_bytes`, on REST and MCP alike.

    Not FastAPI's `max_body_size`: Starlette's limiter answers in plain text from outside
    the app's error handlers, and the MCP SDK may swallow the error it raises mid-body.

    A declared Content-Length is checked before anything is read; a chunked body is
    counted as it arrives and cut off at the limit (the app then sees a disconnect,
    and its own answer is dropped in favour of the 413).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        received = 0
        started = refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "payload_too_large", f"the request body is larger than {self.max_bytes} bytes (MAX_REQUEST_BYTES)"
        )
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
