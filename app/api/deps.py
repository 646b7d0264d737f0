"""Dependencies declared once: the service, the caller, the request id.

All `async def`: FastAPI runs plain `def` dependencies in a thread pool, which cost the
hot path more than the work they do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.domain import Principal
from app.service.operations import AgentService

_bearer = HTTPBearer(auto_error=False, description="An API key from `agent-service keys create`.")


async def get_service(request: Request) -> AgentService:
    service: AgentService = request.app.state.service
    return service


ServiceDep = Annotated[AgentService, Depends(get_service)]


async def get_principal(
    service: ServiceDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller, with this request counted against its rate limit."""
    principal = await service.authenticate(credentials.credentials if credentials else None)
    await service.count_request(principal)
    return principal


async def get_request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
RequestId = Annotated[str | None, Depends(get_request_id)]
