"""In-process measures for scripts/bench_levers.py: what each lever of the read path can buy at
most, in microseconds of one request, each against its alternative, measured by turns in one run.

The ASGI app is called directly (no server, no socket, no database): what is left is the cost of
the layer being compared, which is that lever's ceiling.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.middleware import BodySizeLimitMiddleware, RequestIdMiddleware
from app.schemas import AgentResult
from app.telemetry import metrics
from app.telemetry.tracing import configure_observability

ROUNDS = 3
CALLS = 20_000
# FastAPI's own telemetry as the service has it (app.main) when nothing is traced: off. Left at its
# default, FastAPI asks the tracer provider about itself on every request (~10 us here).
UNTRACED: Any = {"tracing": False, "metrics": False, "logs": False}


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", b"Bearer ask_bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(_: dict[str, Any]) -> None:
    return None


def _per_call_us(calls: dict[str, Callable[[], Awaitable[None]]]) -> dict[str, float]:
    """Each callable's median microseconds per call over ROUNDS rounds taken by turns."""

    async def run() -> dict[str, float]:
        times: dict[str, list[float]] = {name: [] for name in calls}
        for fn in calls.values():
            await fn()
        for _ in range(ROUNDS):
            for name, fn in calls.items():
                started = time.perf_counter()
                for _ in range(CALLS):
                    await fn()
                times[name].append((time.perf_counter() - started) / CALLS * 1e6)
        return {name: round(sorted(t)[len(t) // 2], 1) for name, t in times.items()}

    return asyncio.run(run())


def _asgi(app: Any, path: str) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await app(_scope(path), _receive, _send)

    return call


def dependencies() -> dict[str, float]:
    """A read's route as it took its dependencies before (five: the unknown-query check, the
    caller with its own two, the service, the request id) against one, and none."""
    app = FastAPI(telemetry=UNTRACED)
    bearer = HTTPBearer(auto_error=False)

    async def service(request: Request) -> int:
        return 1

    async def principal(
        request: Request,
        svc: Annotated[int, Depends(service)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> int:
        return 2

    async def request_id(request: Request) -> str | None:
        return None

    async def query_check(request: Request) -> None:
        return None

    @app.get("/five/{task_id}", dependencies=[Depends(query_check)])
    async def five(
        task_id: uuid.UUID,
        p: Annotated[int, Depends(principal)],
        s: Annotated[int, Depends(service)],
        r: Annotated[str | None, Depends(request_id)],
    ) -> Response:
        return Response("{}", media_type="application/json")

    class One(HTTPBearer):
        async def __call__(self, request: Request) -> tuple[int, int, None]:  # type: ignore[override]
            await super().__call__(request)
            return 1, 2, None

    @app.get("/one/{task_id}")
    async def one(task_id: uuid.UUID, call: Annotated[tuple[int, int, None], Depends(One())]) -> Response:
        return Response("{}", media_type="application/json")

    @app.get("/none/{task_id}")
    async def none(task_id: uuid.UUID) -> Response:
        return Response("{}", media_type="application/json")

    task = uuid.uuid4()
    return _per_call_us({name: _asgi(app, f"/{name}/{task}") for name in ("five", "one", "none")})


def middleware() -> dict[str, float]:
    """The same route under no middleware of ours, the body-size limit, and both layers."""

    def app_with(layers: int) -> FastAPI:
        app = FastAPI(telemetry=UNTRACED)

        @app.get("/x")
        async def x() -> Response:
            return Response("{}", media_type="application/json")

        if layers >= 1:
            app.add_middleware(BodySizeLimitMiddleware, max_bytes=1_048_576)
        if layers >= 2:
            app.add_middleware(RequestIdMiddleware)
        return app

    return _per_call_us({name: _asgi(app_with(n), "/x") for n, name in enumerate(("none", "body_size", "both"))})


def _result() -> AgentResult:
    now = datetime.now(UTC)
    return AgentResult.model_validate(
        {
            "task_id": uuid.uuid4(),
            "status": "succeeded",
            "output": "answer " * 30,
            "error": None,
            "model": "offline:echo",
            "template": None,
            "prompt_hash": "ab" * 32,
            "context": {"team": "bench"},
            "usage": {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40, "cost_usd": 0.0},
            "cached": False,
            "created_at": now,
            "completed_at": now,
            "expires_at": now,
        }
    )


def serialization() -> dict[str, float]:
    result = _result()

    async def pydantic() -> None:
        result.model_dump_json()

    calls: dict[str, Callable[[], Awaitable[None]]] = {"model_dump_json": pydantic}
    try:
        import orjson
    except ImportError:
        print("serialization: orjson is not installed (uv run --with orjson ...): pydantic's alone measured")
    else:

        async def with_orjson() -> None:
            orjson.dumps(result.model_dump())

        calls["orjson.dumps(model_dump())"] = with_orjson
    return _per_call_us(calls)


def metric_updates() -> dict[str, float]:
    """What a read adds (one counter) and what a finished task records (counters and a histogram)."""
    configure_observability(token=None, version="bench")

    async def read() -> None:
        metrics.AUDITED_READS.add(1, {"channel": "rest", "outcome": "ok"})

    async def finished() -> None:
        metrics.task_finished(
            provider="offline",
            model="offline:echo",
            status="succeeded",
            error_code=None,
            cached=False,
            seconds=0.001,
            prompt_tokens=10,
            completion_tokens=30,
            cost_usd=Decimal(0),
        )

    async def nothing() -> None:
        return None

    return _per_call_us({"a read's counter": read, "a finished task's": finished, "an empty call": nothing})


def micro() -> dict[str, dict[str, float]]:
    print("in-process, microseconds per request (median of 3 rounds by turns):", flush=True)
    out = {
        "dependencies": dependencies(),
        "middleware": middleware(),
        "serialization": serialization(),
        "metrics": metric_updates(),
    }
    for lever, figures in out.items():
        print(f"  {lever:14} " + "   ".join(f"{name}: {us}" for name, us in figures.items()))
    return out
