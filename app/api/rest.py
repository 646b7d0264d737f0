"""REST routes: parse, authenticate, call one service method, shape the answer.

Each route's function name is its OpenAPI operation id (`app.main` says so), so a generated
client's methods read like these names: `run_agent_task`, `get_agent_result`, ...
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from app.api.deps import Authenticated, CheckedRoute, ServiceDep
from app.api.errors import ERROR_RESPONSES
from app.api.streaming import EVENT_SCHEMA as STREAM_EVENT_SCHEMA
from app.api.streaming import MEDIA_TYPE as STREAM_MEDIA_TYPE
from app.api.streaming import event_stream
from app.domain import Channel
from app.schemas import (
    AgentResult,
    AgentResultPage,
    AgentTask,
    AuditEventPage,
    ErrorBody,
    Liveness,
    ModelCatalog,
    PromptMatchPage,
    PromptSearch,
    ReadinessReport,
    RetentionPolicy,
    UsageReport,
    WebhookStatus,
)
from app.service.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

router = APIRouter(route_class=CheckedRoute)

Responses = dict[int | str, dict[str, Any]]
_NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "unknown, expired, or another client's task"}}
_HELD: Responses = {409: {"model": ErrorBody, "description": "`legal_hold`: the task is under a legal hold"}}
_FINISHED: Responses = {409: {"model": ErrorBody, "description": "`already_finished`: the task has ended"}}
_FORBIDDEN: Responses = {403: {"model": ErrorBody, "description": "the key's role does not allow this"}}
# What an operation behind a key can answer: 413 only where a request has a body to be too large.
_KEYED: Responses = {status: answer for status, answer in ERROR_RESPONSES.items() if status != 413}
_WITH_BODY: Responses = {
    **ERROR_RESPONSES,
    400: {"model": ErrorBody, "description": "`bad_request`: the body could not be read as JSON text (UTF-8)"},
}
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")]


def _json(model: BaseModel, status_code: int = 200) -> Response:
    # Rows are already typed: skip FastAPI's re-validation of the response (hot path).
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


@router.post(
    "/tools/run_agent_task",
    response_model=AgentResult,
    responses={
        **_WITH_BODY,
        200: {
            "description": "the result; with `stream=true`, server-sent events: `task`, `delta`s, then `result` "
            "or `error` (see the REST reference)",
            "content": {STREAM_MEDIA_TYPE: {"schema": STREAM_EVENT_SCHEMA}},
        },
        202: {
            "model": AgentResult,
            "description": "accepted (`wait=false`): poll the `Location`",
            "headers": {"Location": {"description": "where the result will be", "schema": {"type": "string"}}},
        },
        409: {"model": ErrorBody, "description": "`idempotency_conflict`: the key was used with another request"},
    },
    tags=["tasks"],
)
async def run_agent_task(
    task: AgentTask,
    call: Authenticated,
    wait: Annotated[bool, Query(description="false: answer 202 at once and run the task in the background")] = True,
    stream: Annotated[
        bool, Query(description="true: the answer as server-sent events while it is generated (needs wait)")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=r"^[\x21-\x7e]{1,200}$",
            description="The same key from the same caller within 24 hours returns the same task.",
        ),
    ] = None,
) -> Response:
    """Run an agent task and return its result."""
    if stream:
        return event_stream(
            await call.service.start_stream(
                call.principal,
                task,
                channel=Channel.REST,
                request_id=call.request_id,
                wait=wait,
                idempotency_key=idempotency_key,
            )
        )
    submission = await call.service.run_task(
        call.principal,
        task,
        channel=Channel.REST,
        request_id=call.request_id,
        wait=wait,
        idempotency_key=idempotency_key,
    )
    response = _json(submission.result, 202 if submission.accepted else 200)
    if submission.accepted:
        response.headers["Location"] = f"/resources/get_agent_result/{submission.result.task_id}"
    if submission.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@router.get(
    "/resources/get_agent_result/{task_id}",
    response_model=AgentResult,
    responses={**_KEYED, **_NOT_FOUND},
    tags=["tasks"],
)
async def get_agent_result(task_id: uuid.UUID, call: Authenticated) -> Response:
    """Read a task's result by id (audited)."""
    return _json(
        await call.service.get_result(call.principal, task_id, channel=Channel.REST, request_id=call.request_id)
    )


@router.get(
    "/resources/agent_results",
    response_model=AgentResultPage,
    responses=_KEYED,
    tags=["tasks"],
)
async def list_agent_results(
    call: Authenticated,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> Response:
    """List the caller's tasks, newest first, without outputs."""
    page = await call.service.list_results(
        call.principal, cursor=cursor, limit=limit, channel=Channel.REST, request_id=call.request_id
    )
    return _json(page)


@router.delete(
    "/resources/get_agent_result/{task_id}",
    status_code=204,
    responses={**_KEYED, **_NOT_FOUND, **_FORBIDDEN, **_HELD},
    tags=["tasks"],
)
async def delete_agent_result(task_id: uuid.UUID, call: Authenticated) -> Response:
    """Erase a task and its result now (audited)."""
    await call.service.delete_result(call.principal, task_id, channel=Channel.REST, request_id=call.request_id)
    return Response(status_code=204)


@router.post(
    "/resources/get_agent_result/{task_id}/cancel",
    response_model=AgentResult,
    responses={**_KEYED, **_NOT_FOUND, **_FORBIDDEN, **_FINISHED},
    tags=["tasks"],
)
async def cancel_agent_task(task_id: uuid.UUID, call: Authenticated) -> Response:
    """Stop a pending or running task (audited); it ends `cancelled`, and its waiting callers get it."""
    return _json(
        await call.service.cancel_task(call.principal, task_id, channel=Channel.REST, request_id=call.request_id)
    )


@router.get(
    "/resources/get_agent_result/{task_id}/webhook",
    response_model=WebhookStatus,
    responses={**_KEYED, **_NOT_FOUND},
    tags=["tasks"],
)
async def get_agent_webhook(task_id: uuid.UUID, call: Authenticated) -> Response:
    """A task's completion webhook: its delivery state and every attempt (audited, like a read)."""
    return _json(
        await call.service.get_webhook(call.principal, task_id, channel=Channel.REST, request_id=call.request_id)
    )


@router.get(
    "/audit/events",
    response_model=AuditEventPage,
    responses={**_KEYED, **_FORBIDDEN},
    tags=["audit"],
)
async def list_audit_events(
    call: Authenticated,
    task_id: uuid.UUID | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> Response:
    """Read the audit log (auditor and admin roles; audited)."""
    page = await call.service.list_audit_events(
        call.principal, task_id=task_id, cursor=cursor, limit=limit, channel=Channel.REST, request_id=call.request_id
    )
    return _json(page)


@router.post(
    "/audit/prompt-search",
    response_model=PromptMatchPage,
    responses={**_WITH_BODY, **_FORBIDDEN},
    tags=["audit"],
)
async def search_tasks_by_prompt(
    search: PromptSearch,
    call: Authenticated,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> Response:
    """Find the live tasks that carried a prompt, whoever sent them (auditor and admin roles; audited).

    A POST, so the prompt travels in the body and never in a URL or an access log. It is hashed
    in memory for every owner, never stored; the search and each task found are audited.
    """
    page = await call.service.search_by_prompt(
        call.principal, search, cursor=cursor, limit=limit, channel=Channel.REST, request_id=call.request_id
    )
    return _json(page)


@router.get("/healthz", tags=["health"])
async def check_liveness() -> Liveness:
    """Liveness: 200 while the process lives."""
    return Liveness(status="ok")


@router.get("/retention", tags=["health"], responses=_KEYED)
async def get_retention_policy(call: Authenticated) -> RetentionPolicy:
    """The effective retention policy: how long results and audit events are kept, and the purge schedule."""
    return call.service.retention


@router.get("/models", response_model=ModelCatalog, responses=_KEYED, tags=["models"])
async def list_models(call: Authenticated) -> Response:
    """The providers (name, kind, capabilities), the model aliases and the defaults: what `model` may be."""
    return _json(call.service.list_models(call.principal))


@router.get(
    "/usage",
    response_model=UsageReport,
    responses={
        **_KEYED,
        **_FORBIDDEN,
        422: {"model": ErrorBody, "description": "`invalid_month`, or another parameter is not valid"},
    },
    tags=["models"],
)
async def get_usage(
    call: Authenticated,
    month: Annotated[
        str | None, Query(max_length=100, description="`YYYY-MM`, a calendar month in UTC; default: this month")
    ] = None,
    owner_key_id: Annotated[
        uuid.UUID | None, Query(description="another key's usage (auditor and admin roles; audited)")
    ] = None,
) -> Response:
    """Tokens and cost per model of the tasks a key submitted in one month: the caller's own, by default."""
    report = await call.service.get_usage(
        call.principal, month=month, owner_key_id=owner_key_id, channel=Channel.REST, request_id=call.request_id
    )
    return _json(report)


@router.get(
    "/metrics",
    tags=["health"],
    response_class=PlainTextResponse,  # documents text/plain, not FastAPI's default application/json
    responses={
        **_KEYED,
        **_FORBIDDEN,
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
    },
)
async def get_metrics(call: Authenticated) -> Response:
    """Metrics in Prometheus text format (auditor and admin keys: they count every client's tasks)."""
    return Response(call.service.metrics_text(call.principal), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/readyz",
    tags=["health"],
    response_model=ReadinessReport,
    responses={503: {"model": ReadinessReport, "description": "a check failed; see `checks`"}},
)
async def check_readiness(service: ServiceDep) -> Response:
    """Readiness: the database answers and is at the head migration."""
    report = await service.readiness()
    return _json(report, 200 if report.status == "ok" else 503)
