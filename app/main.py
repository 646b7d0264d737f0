"""The ASGI application: REST routes, MCP at /mcp on the same port, one lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from fastmcp.utilities.lifespan import combine_lifespans
from starlette.routing import Route

from app.api import rest
from app.api.errors import install_error_handlers
from app.api.mcp import build_mcp
from app.api.middleware import RequestIdMiddleware
from app.observability import keep_payloads_out_of_logs
from app.service import AgentService
from app.settings import Settings, get_settings

__version__ = version("agent-service")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing connects until the lifespan starts."""
    keep_payloads_out_of_logs()
    service = AgentService(settings or get_settings())
    mcp_app = build_mcp(service).http_app(path="/mcp")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="LLM Agent Service",
        version=__version__,
        summary="Run LLM tasks over REST and MCP; read results back later by task_id, privately and audited.",
        lifespan=combine_lifespans(lifespan, mcp_app.lifespan),
    )
    app.state.service = service
    install_error_handlers(app)
    app.include_router(rest.router)
    # Exactly /mcp goes to the MCP app (no redirect, no catch-all mount swallowing REST 404s and 405s).
    app.router.routes.append(
        Route("/mcp", endpoint=mcp_app, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    )
    app.add_middleware(RequestIdMiddleware)
    return app
