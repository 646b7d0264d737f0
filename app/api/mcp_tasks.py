"""The MCP tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) over our own task rows.

A client that declares the extension in a request's `_meta` client capabilities gets
`run_agent_task` answered at once with a task handle (`resultType: "task"`) whose `taskId` is the
`task_id`; it then polls `tasks/get`, which inlines the tool's result once the task has ended, and
may send `tasks/cancel`. FastMCP 4.2.3 core declares the extension point (`ServerExtension`) but no
engine; the `fastmcp-tasks` engine (Docket) would enqueue the tool's arguments, the prompt with
them. Here nothing new is stored: the task is the row `run_agent_task` writes anyway, and every
`tasks/*` request is one of the service's own audited operations, on channel `mcp`.

Per the extension's text:

- the task only at protocol 2026-07-28 (a handshake-era wire cannot carry `resultType: "task"`),
  only to a request that declares the extension, and only for `run_agent_task`; a task whose answer
  is not stored (`store: false`, or a key that never stores) runs as a plain call, since nothing
  could be read later;
- a provider failure is `completed` with the tool's result (whose `status` is `failed`), as the
  plain call answers it: `failed` is for JSON-RPC errors, which this tool does not produce;
- an unknown, expired, malformed or another key's `taskId` is the same `-32602` error;
- `tasks/cancel` and `tasks/update` answer an empty acknowledgement; `tasks/result` and
  `tasks/list`, gone from the extension, stay unknown methods (-32601).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from fastmcp.server.dependencies import get_context
from fastmcp.server.extensions import MethodBinding, ServerExtension, ToolCallContinuation, ToolCallOutcome
from fastmcp.tools.base import ToolResult
from fastmcp.utilities.tasks import TASKS_EXTENSION_ID
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CallToolRequestParams, CallToolResult, RequestParams, Result
from mcp_types.jsonrpc import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from app.api.mcp_errors import SERVER_ERROR
from app.domain import AlreadyFinished, Channel, DatabaseUnavailable, NotFound, Principal, ServiceError, StoreOutput
from app.schemas import AgentResult
from app.service.operations import AgentService

if TYPE_CHECKING:
    from fastmcp.server.context import Context

TASK_TOOL = "run_agent_task"
DEFAULT_POLL_INTERVAL_MS = 1000  # our tasks take seconds: a poll a second is ample and cheap (one indexed read)

TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
_STATUS: dict[str, TaskStatus] = {
    "pending": "working",
    "running": "working",
    "succeeded": "completed",
    "failed": "completed",  # the tool's result says `failed`; see the module docstring
    "cancelled": "cancelled",
}


class Task(Result):
    """SEP-2663's `Task`: what a task handle and every `tasks/get` answer carry."""

    task_id: str
    status: TaskStatus
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None


class CreateTaskResult(Task):
    """A `tools/call` answered with a task handle."""

    result_type: Literal["task"] = "task"


class GetTaskResult(Task):
    """`tasks/get`: the task, with the tool's result inline once it has ended (`DetailedTask`)."""

    result_type: Literal["complete"] = "complete"  # the spec's MUST: this is tasks/get's own result
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskIdParams(RequestParams):
    """The params of `tasks/get` and `tasks/cancel`."""

    task_id: str


class UpdateTaskParams(TaskIdParams):
    """The params of `tasks/update`: answers to input requests, which our tasks never make."""

    input_responses: dict[str, Any] | None = None


def declares_tasks(meta: Mapping[str, Any] | None) -> bool:
    """Whether a request's `_meta` client capabilities include the tasks extension."""
    capabilities = (meta or {}).get(CLIENT_CAPABILITIES_META_KEY)
    extensions = capabilities.get("extensions") if isinstance(capabilities, Mapping) else None
    return isinstance(extensions, Mapping) and isinstance(extensions.get(TASKS_EXTENSION_ID), Mapping)


def task_of(result: AgentResult, poll_interval_ms: int) -> dict[str, Any]:
    """The `Task` fields of one of our results: `taskId` is the `task_id`, `ttlMs` its retention."""
    return {
        "task_id": str(result.task_id),
        "status": _STATUS[str(result.status)],
        "status_message": f"agent task {result.status}",
        "created_at": result.created_at.isoformat(),
        "last_updated_at": (result.completed_at or result.created_at).isoformat(),
        "ttl_ms": int((result.expires_at - result.created_at).total_seconds() * 1000),
        "poll_interval_ms": poll_interval_ms,
    }


@contextmanager
def task_errors() -> Iterator[None]:
    """Service errors as JSON-RPC errors carrying our `{code, message}` body as `data`.

    A task the caller may not see, for whatever reason, is the extension's `-32602`, with the same
    body as an unknown one; a refusal that is not about the request (throttled, an outage) is
    `-32000`, the range JSON-RPC leaves to servers."""
    try:
        yield
    except ServiceError as exc:
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if (retry_after := getattr(exc, "retry_after", None)) is not None:
            body["retry_after"] = retry_after
        rpc_code = SERVER_ERROR if retry_after is not None or isinstance(exc, DatabaseUnavailable) else INVALID_PARAMS
        raise MCPError(code=rpc_code, message=f"{exc.code}: {exc.message}", data=body) from None


def _task_id(value: str) -> uuid.UUID:
    """Our task ids are UUIDs; anything else names no task (and is answered as an unknown one)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound from None


class AgentTasks(ServerExtension):
    """The tasks extension for `run_agent_task`, served from our task rows."""

    identifier = TASKS_EXTENSION_ID

    def __init__(
        self,
        service: AgentService,
        caller: Callable[[], Principal],
        request_id: Callable[[], str | None],
        *,
        poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS,
    ) -> None:
        self._service = service
        self._caller = caller  # the authenticated caller of the request being served
        self._request_id = request_id
        self._poll_interval_ms = poll_interval_ms

    def clone(self) -> AgentTasks:
        """A fresh, unbound instance over the same service (the service cannot be deep-copied)."""
        return AgentTasks(self._service, self._caller, self._request_id, poll_interval_ms=self._poll_interval_ms)

    def methods(self) -> Sequence[MethodBinding]:
        modern = frozenset(MODERN_PROTOCOL_VERSIONS)
        return (
            MethodBinding("tasks/get", TaskIdParams, self._get, protocol_versions=modern),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, protocol_versions=modern),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, protocol_versions=modern),
        )

    async def intercept_tool_call(
        self, params: CallToolRequestParams, context: Context, call_next: ToolCallContinuation
    ) -> ToolCallOutcome:
        """`run_agent_task` as a task, when this request may be answered with one."""
        if params.name != TASK_TOOL or not await self._as_task(params, context):
            return await call_next()
        params.arguments = {**(params.arguments or {}), "wait": False}  # the tool's own path, not waiting
        outcome = await call_next()
        if not isinstance(outcome, ToolResult) or outcome.is_error or not isinstance(outcome.structured_content, dict):
            return outcome  # a refusal (bad arguments, a limit): as the plain call answers it
        result = AgentResult.model_validate(outcome.structured_content)
        return CreateTaskResult.model_validate(task_of(result, self._poll_interval_ms))

    async def _as_task(self, params: CallToolRequestParams, context: Context) -> bool:
        request = context.request_context
        if request is None or request.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return False
        if not declares_tasks(request.meta) or (params.arguments or {}).get("store") is False:
            return False
        try:
            principal = self._caller()
        except ServiceError:
            return False  # the tool answers the missing caller itself
        return principal.store_output is StoreOutput.ALLOWED

    async def _counted(self) -> Principal:
        """The caller, with this request counted against its rate limit, as a tool call is."""
        principal = self._caller()
        await self._service.count_request(principal)
        return principal

    # -- the methods ---------------------------------------------------------------------------

    async def _get(self, _: Any, params: TaskIdParams) -> GetTaskResult:
        """The task as it is now; once it has ended, with the tool's result inline (audited read)."""
        with task_errors():
            result = await self._read(params.task_id)
        task = GetTaskResult.model_validate(task_of(result, self._poll_interval_ms))
        if task.status == "completed":
            task.result = await self._tool_result(result)
        return task

    async def _cancel(self, _: Any, params: TaskIdParams) -> dict[str, Any]:
        """Ask a task to stop (audited); acknowledged empty, also once it has ended, as the extension says."""
        with task_errors():
            principal = await self._counted()
            try:
                await self._service.cancel_task(
                    principal, _task_id(params.task_id), channel=Channel.MCP, request_id=self._request_id()
                )
            except AlreadyFinished:  # audited as such; the task keeps its result
                pass
        return {}

    async def _update(self, _: Any, params: UpdateTaskParams) -> dict[str, Any]:
        """Our tasks never ask for input: answers are ignored, as for any key not outstanding (audited read)."""
        with task_errors():
            await self._read(params.task_id)
        return {}

    async def _read(self, task_id: str) -> AgentResult:
        principal = await self._counted()
        return await self._service.get_result(
            principal, _task_id(task_id), channel=Channel.MCP, request_id=self._request_id()
        )

    async def _tool_result(self, result: AgentResult) -> dict[str, Any]:
        """What the plain `run_agent_task` call answers with this result, as wire JSON."""
        tool = await get_context().fastmcp.get_tool(TASK_TOOL)
        converted = tool.convert_result(result).to_mcp_result() if tool is not None else None
        if isinstance(converted, CallToolResult):
            wire = converted
        elif isinstance(converted, tuple):
            wire = CallToolResult(content=converted[0], structured_content=converted[1])
        else:
            wire = CallToolResult(content=converted or [])
        return wire.model_dump(by_alias=True, mode="json", exclude_none=True)
