"""Dependencies declared once: the service, the caller, the request id.

An authenticated operation takes one dependency, `Authenticated`: the caller, the service and
the request id together. FastAPI solves each dependency (and each of its own) on every request;
measured in-process (scripts/bench_levers.py), the five a read used to take cost about 40 us a
request more than one, a tenth of a read's CPU. For the same reason the unknown-query check is
part of the route (`CheckedRoute`), not a dependency.

All `async def`: FastAPI runs plain `def` dependencies in a thread pool, which cost the
hot path more than the work they do.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from app.domain import InvalidInput, Principal
from app.service.operations import AgentService


async def get_service(request: Request) -> AgentService:
    service: AgentService = request.app.state.service
    return service


ServiceDep = Annotated[AgentService, Depends(get_service)]


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated request: the operations, the caller (this request counted against its
    rate limit) and the request id (`RequestIdMiddleware`'s)."""

    service: AgentService
    principal: Principal
    request_id: str | None


class _Authenticate(HTTPBearer):
    """The bearer scheme, and the caller behind it, in one dependency.

    A subclass of `HTTPBearer` so that OpenAPI documents the scheme on every operation that
    takes it, as before. Failed authentications are throttled per client address: the peer's,
    or the one a trusted proxy forwarded (uvicorn's `--forwarded-allow-ips`)."""

    async def __call__(self, request: Request) -> Call:  # type: ignore[override]  # the caller, not the header
        credentials = await super().__call__(request)
        service: AgentService = request.app.state.service
        client = request.client.host if request.client else None
        principal = await service.authenticate(credentials.credentials if credentials else None, client=client)
        await service.count_request(principal)
        return Call(service, principal, request.scope.get("state", {}).get("request_id"))


Authenticated = Annotated[
    Call,
    Depends(
        _Authenticate(
            scheme_name="HTTPBearer",  # the scheme's name in OpenAPI, as before (not the class's)
            auto_error=False,
            description="An API key from `agent-service keys create`.",
        )
    ),
]


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


def reject_unknown_query(request: Request, route: APIRoute) -> None:
    """An unknown query parameter is a 422, not silently ignored: a misspelt `wait=false` would
    otherwise wait, and a prompt put in the query string would be taken as if it were nothing.
    The message names what the operation takes, never what was sent."""
    if not request.scope.get("query_string"):
        return
    allowed = _query_names(route)
    if any(name not in allowed for name in request.query_params):
        takes = ", ".join(sorted(allowed)) or "none"
        raise InvalidInput(f"an unknown query parameter is not allowed (this operation takes: {takes})")


class CheckedRoute(APIRoute):
    """A route that refuses unknown query parameters (`reject_unknown_query`) before anything
    else runs: the routers of the API use it as their `route_class`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            reject_unknown_query(request, self)
            return await handler(request)

        return checked
