"""What every console page shares: templates, the security headers, the session cookie, CSRF, and
error pages.

The console is a face of its own (beside `app.api`): it speaks HTML, not JSON, so a domain error
becomes a page with the same status the API would answer, and a message written by the service
(never the request's input). Every page carries a strict Content-Security-Policy: scripts, styles,
images, forms and fetches from this origin only, no inline script or style, no framing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from app.domain import (
    InvalidInput,
    Principal,
    ServiceError,
    Throttled,
)
from app.domain.errors import HTTP_STATUS
from app.service.operations import AgentService

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
SIGN_IN = f"{PREFIX}/sign-in"
SESSION_COOKIE = "console_session"
SIGN_IN_COOKIE = "console_sign_in"  # the sign-in form's double-submit CSRF token
MAX_FORM_BYTES = 16_384

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # A page may show a task's output: no cache of the browser's or a proxy's keeps it.
    "Cache-Control": "no-store",
}


class CsrfRefused(ServiceError):
    code = "csrf_refused"
    default_message = "this form has expired or did not come from the console; reload the page and try again"


_STATUS_OF: dict[type[ServiceError], int] = {CsrfRefused: 403, **HTTP_STATUS}


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["when"] = _when


class SignInRequired(Exception):
    """No live session: the page sends the browser to the sign-in form."""


def service_of(request: Request) -> AgentService:
    service: AgentService = request.app.state.service
    return service


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def client_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def secure_cookies(request: Request) -> bool:
    """`Secure` cookies: as configured (CONSOLE_SECURE_COOKIE), else when the request came over HTTPS."""
    configured: bool | None = getattr(request.app.state, "console_secure_cookie", None)
    return configured if configured is not None else request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path=PREFIX, httponly=True, samesite="strict", secure=secure_cookies(request))


async def form_of(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body's fields (the first of each), read without multipart."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput("the form is too large")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the form could not be read") from None
    return {name: values[0] for name, values in fields.items()}


def check_csrf(expected: str | None, sent: str | None) -> None:
    if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfRefused


def page(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    principal: Principal | None = None,
    csrf: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {"principal": principal, "csrf": csrf, **(context or {})},
        status_code=status_code,
    )


def error_page(request: Request, exc: ServiceError) -> HTMLResponse:
    status = next((s for cls, s in _STATUS_OF.items() if isinstance(exc, cls)), 500)
    context = {"status": status, "code": exc.code, "message": exc.message}
    response = page(request, "error.html", context, status_code=status)
    if isinstance(exc, Throttled):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


class ConsoleRoute(APIRoute):
    """A console route: a domain error becomes an HTML page, no session a redirect to sign in, and
    every answer gets the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                response = RedirectResponse(SIGN_IN, status_code=303)
                clear_cookie(request, response, SESSION_COOKIE)
            except ServiceError as exc:
                response = error_page(request, exc)
            response.headers.update(SECURITY_HEADERS)
            return response

        return console_handler
