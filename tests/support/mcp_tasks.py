"""The client half of the MCP tasks extension, for the tests: the locked clients speak no tasks.

FastMCP 4.2.3's `Client` and the MCP SDK 2.3 `ClientSession` know the extension mechanism
(SEP-2133: a `ClientExtension` advertised in every request's `_meta`, a `ResultClaim` for a
`resultType` of its own) but ship no tasks extension; `fastmcp-tasks` would bring one, with
Docket. `TasksClient` is that extension, small: declared on a `Client`, it makes `call_tool`
resolve a task handle by polling `tasks/get`; `start`, `get`, `cancel` and `update` speak the
methods one at a time. `raw_request` is the same over plain HTTP, for the bytes of an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import httpx
from fastmcp import Client
from fastmcp.utilities.tasks import TASKS_EXTENSION_ID
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, EmptyResult, Request
from pydantic import TypeAdapter

from app.api.mcp_tasks import CreateTaskResult, GetTaskResult, TaskIdParams, UpdateTaskParams

MODERN = "2026-07-28"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class GetTaskRequest(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param: ClassVar[str | None] = "taskId"  # the extension's Mcp-Name header


class CancelTaskRequest(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param: ClassVar[str | None] = "taskId"


class UpdateTaskRequest(Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateTaskParams
    name_param: ClassVar[str | None] = "taskId"


_ANY = TypeAdapter(dict[str, Any])


class TasksClient(ClientExtension):
    """Declares `io.modelcontextprotocol/tasks` and resolves task handles by polling (at most every `poll_cap` s)."""

    identifier = TASKS_EXTENSION_ID

    def __init__(self, poll_cap: float = 0.05) -> None:
        self.poll_cap = poll_cap
        self.handles: list[CreateTaskResult] = []  # every handle a call was answered with
        self.polls = 0

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=self._resolve)]

    async def _resolve(self, handle: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
        self.handles.append(handle)
        task = await finished(ctx.session, handle, self.poll_cap)
        self.polls += 1
        if task.status != "completed" or task.result is None:
            raise MCPError(-32603, f"task {task.task_id} ended {task.status}", data=task.model_dump(mode="json"))
        return CallToolResult.model_validate(task.result)


async def start(session: ClientSession, arguments: dict[str, Any], tool: str = "run_agent_task") -> Any:
    """One task-augmented call, answered as it comes: a `CreateTaskResult`, or a plain `CallToolResult`."""
    return await session.call_tool(tool, arguments, allow_claimed=True)


async def get(session: ClientSession, task_id: str) -> GetTaskResult:
    return await session.send_request(GetTaskRequest(params=TaskIdParams(task_id=task_id)), GetTaskResult)


async def cancel(session: ClientSession, task_id: str) -> dict[str, Any]:
    return await session.send_request(CancelTaskRequest(params=TaskIdParams(task_id=task_id)), _ANY)


async def update(session: ClientSession, task_id: str, responses: dict[str, Any]) -> EmptyResult:
    params = UpdateTaskParams(task_id=task_id, input_responses=responses)
    return await session.send_request(UpdateTaskRequest(params=params), EmptyResult)


async def finished(session: ClientSession, handle: CreateTaskResult, poll_cap: float = 0.05) -> GetTaskResult:
    """Poll `tasks/get` until the task has ended (honouring `pollIntervalMs`, up to `poll_cap` seconds)."""
    async with asyncio.timeout(30):
        while True:
            task = await get(session, handle.task_id)
            if task.status in ("completed", "failed", "cancelled"):
                return task
            await asyncio.sleep(min((task.poll_interval_ms or 0) / 1000, poll_cap))


def tasks_client(target: Any, **kwargs: Any) -> tuple[Client[Any], TasksClient]:
    """A FastMCP `Client` on `target` that declares the tasks extension on every request."""
    extension = TasksClient()
    return Client(target, extensions=[extension], **kwargs), extension


def raw_request(
    method: str, params: dict[str, Any], *, declare: bool = True, request_id: int = 7, client_info: bool = True
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 JSON-RPC request and its headers, declaring the tasks extension unless told not to."""
    extensions = {TASKS_EXTENSION_ID: {}} if declare else {}
    meta: dict[str, Any] = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {"extensions": extensions},
    }
    if client_info:  # optional on the wire
        meta["io.modelcontextprotocol/clientInfo"] = {"name": "raw", "version": "1"}
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": meta}}
    headers = {**MCP_HEADERS, "mcp-protocol-version": MODERN, "mcp-method": method}
    name = params.get("taskId", params.get("name"))
    if isinstance(name, str):
        headers["mcp-name"] = name
    return body, headers


async def post_raw(
    http: httpx.AsyncClient, key: str, method: str, params: dict[str, Any], **kwargs: Any
) -> httpx.Response:
    """POST one raw request to /mcp with `key`."""
    body, headers = raw_request(method, params, **kwargs)
    return await http.post("/mcp", json=body, headers={**headers, "Authorization": f"Bearer {key}"})
