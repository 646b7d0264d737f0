"""MCP in memory: FastMCP's client on the service's MCP server, as a given caller."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastmcp import Client
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

from app.api.mcp import ApiKeyVerifier, build_mcp
from app.service.operations import AgentService
from tests.support.app import Caller


@asynccontextmanager
async def mcp_as(service: AgentService, caller: Caller | None, **client: Any) -> AsyncIterator[Client[Any]]:
    """An in-memory client whose requests carry `caller`'s verified token, as /mcp's auth middleware would set."""
    server = build_mcp(service)
    user = None
    if caller is not None:
        token = await ApiKeyVerifier(service).verify_token(caller.key)
        assert token is not None
        user = AuthenticatedUser(token)
    reset = auth_context_var.set(user)
    try:
        async with Client(server, **client) as connected:
            yield connected
    finally:
        auth_context_var.reset(reset)


def error_of(result: Any) -> dict[str, Any]:
    assert result.is_error
    return json.loads(result.content[0].text)  # type: ignore[no-any-return]
