"""Dependencies declared once: the service, the caller, the request id.

All `async def`: FastAPI runs plain `def` dependencies in a thread pool, which cost the
hot path more than the work they do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.domain import InvalidInput, Principal
from app.service.operations import AgentService

_bearer = HTTPBearer(auto_error=False, description="An API key from `agent-service keys create`.")


async def get_service(request: Request) -> AgentService:
    service: AgentService = request.app.state.service
    return service


ServiceDep = Annotated[AgentService, Depends(get_service)]


async def get_principal(
    request: Request,
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, with this request counted against its rate limit.

    Failed authentications are throttled per client address: the peer's, or the one a trusted
    proxy forwarded (uvicorn's `--forwarded-allow-ips`)."""
    client = request.client.host if request.client else None
    principal = await service.authenticate(credentials.credentials if credentials else None, client=client)
    await service.count_request(principal)
    return principal


async def get_request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
RequestId = Annotated[str | None, Depends(get_request_id)]


_QUERY_NAMES: dict[int, frozenset[str]] = {}  # by route: routes are made once, at start-up


def _query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters an operation declares, its dependencies' included."""
    if (known := _QUERY_NAMES.get(id(route))) is not None:
        return known

    def names(dependant: Dependant) -> Iterator[str]:
        yield from (param.alias for param in dependant.query_params)
        for sub in dependant.dependencies:
            yield from names(sub)

    known = _QUERY_NAMES[id(route)] = frozenset(names(route.dependant))
    return known


async def reject_unknown_query(request: Request) -> None:
    """An unknown query parameter is a 422, not silently ignored: a misspelt `wait=false` would
    otherwise wait, and a prompt put in the query string would be taken as if it were nothing.
    The message names what the operation takes, never what was sent."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    allowed = _query_names(route) if isinstance(route, APIRoute) else frozenset()
    if any(name not in allowed for name in request.query_params):
        takes = ", ".join(sorted(allowed)) or "none"
        raise InvalidInput(f"an unknown query parameter is not allowed (this operation takes: {takes})")
