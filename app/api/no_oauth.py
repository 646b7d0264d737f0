"""The answers a client gets where it looks for OAuth: this server takes API keys instead.

MCP clients that meet a 401 start OAuth whatever the 401 says: MCP Inspector 2.12's CLI, for
one, looks up `/.well-known/oauth-protected-resource`, the authorization server's metadata and
OpenID's, then tries Dynamic Client Registration at `/register`, and shows the user what that
last step answered. So each of those paths answers 404 with our error body, saying plainly that
there is no OAuth here and what to send instead; the user then reads "the key is wrong", not
"Not Found" (issue 12).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.api.errors import error_response

CODE = "oauth_not_supported"
MESSAGE = (
    "this server does not use OAuth: it takes an API key, sent as Authorization: Bearer <key> "
    "(agent-service keys create); if a key was sent, it is unknown or revoked"
)
# Where the MCP authorization spec (RFC 9728, RFC 8414, OpenID discovery) and the clients'
# fallbacks (the authorization server at the MCP server's own origin) look.
PATHS = (
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-authorization-server/mcp",
    "/.well-known/openid-configuration",
    "/.well-known/openid-configuration/mcp",
    "/mcp/.well-known/openid-configuration",
    "/register",
    "/authorize",
    "/token",
)


async def no_oauth(_: Request) -> Response:
    return error_response(404, CODE, MESSAGE)


def routes() -> list[BaseRoute]:
    return [Route(path, endpoint=no_oauth, methods=["GET", "POST"], include_in_schema=False) for path in PATHS]
