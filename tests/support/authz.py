"""The authorization matrix's harness: one server for a test module (the app under uvicorn on
127.0.0.1), fresh owners with a task of their own, FastMCP's Client over Streamable HTTP with every
HTTP exchange recorded, and what each request left in the audit log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import httpx2
import uvicorn
from fastapi import FastAPI
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent

from app.domain import Role
from app.service.wiring import Components
from tests.support import mcp_tasks
from tests.support.routes import RUN

# -- the server and the callers --------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    key_id: uuid.UUID
    key: str


@dataclass(frozen=True)
class Alice:
    key_id: uuid.UUID
    key: str
    task_id: str


@dataclass
class World:
    """One server for the module; tests share it but each cell makes its own alice and task."""

    base: str
    service: Components
    http: httpx.AsyncClient
    db: asyncpg.Connection
    keys: dict[str, Key] = field(default_factory=dict)  # bob, auditor, admin

    async def new_key(self, role: Role) -> Key:
        record, plain, _ = await self.service.keys.create(f"{role.value}-{uuid.uuid4().hex[:6]}", role)
        return Key(record.id, plain)

    async def new_alice(self) -> Alice:
        key = await self.new_key(Role.CLIENT)
        response = await self.http.post(RUN, json={"prompt": ALICES_PROMPT}, headers=bearer(key.key))
        assert response.status_code == 200, response.text
        return Alice(key.key_id, key.key, response.json()["task_id"])

    async def task_exists(self, task_id: str) -> bool:
        return bool(await self.db.fetchval("SELECT count(*) FROM agent_task WHERE id = $1", uuid.UUID(task_id)))

    async def task_count(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM agent_task"))

    async def audited(self, request_id: str) -> list[tuple[str, str, str, uuid.UUID]]:
        rows = await self.db.fetch(
            "SELECT action, outcome, channel, actor_id FROM audit_event WHERE request_id = $1 ORDER BY id", request_id
        )
        return [(r["action"], r["outcome"], r["channel"], r["actor_id"]) for r in rows]


ALICES_PROMPT = "alice's"  # every alice's task carries it; a search for it finds the newest alice first


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_request_id() -> str:
    return f"authz-{uuid.uuid4().hex}"


@asynccontextmanager
async def on_loopback(app: FastAPI) -> AsyncIterator[str]:
    """A started app served by uvicorn on a free 127.0.0.1 port, for as long as the block lasts: its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", ws="none", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


# -- MCP over Streamable HTTP, with every HTTP exchange recorded --------------------------------


@dataclass(frozen=True)
class Exchange:
    """One HTTP request the MCP client made, and the status it got."""

    rpc: str | None  # the JSON-RPC method posted (`initialize`, `tools/call`, ...), if any
    status: int
    www_authenticate: str | None


@dataclass
class McpConnection:
    client: Client[Any]
    exchanges: list[Exchange]
    http: list[httpx2.AsyncClient]

    def use_credentials(self, headers: dict[str, Any]) -> None:
        """From now on, send these credentials instead of the ones the client connected with."""
        [http] = self.http
        kept = [(k, v) for k, v in http.headers.raw if k.lower() != b"authorization"]
        http.headers = httpx2.Headers(
            kept + [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers.items()]
        )

    def answer_to(self, rpc: str) -> Exchange:
        """The answer to the latest request of this JSON-RPC method."""
        return [e for e in self.exchanges if e.rpc == rpc][-1]


@asynccontextmanager
async def mcp_connection(
    world: World,
    headers: dict[str, Any],
    request_id: str,
    exchanges: list[Exchange] | None = None,
    *,
    tasks: bool = False,
) -> AsyncIterator[McpConnection]:
    """FastMCP's Client on /mcp, sending `headers` (credentials as a plain header, so they can be swapped).

    Every HTTP exchange is recorded in `exchanges`, also when connecting fails. With `tasks`, the
    client declares the MCP tasks extension (tests/support/mcp_tasks.py).
    """
    exchanges = [] if exchanges is None else exchanges
    made: list[httpx2.AsyncClient] = []

    async def record(response: httpx2.Response) -> None:
        try:
            rpc = json.loads(response.request.content).get("method")
        except (ValueError, AttributeError):
            rpc = None
        exchanges.append(Exchange(rpc, response.status_code, response.headers.get("www-authenticate")))

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
        **kwargs: Any,
    ) -> httpx2.AsyncClient:
        http = httpx2.AsyncClient(
            headers=headers,
            timeout=timeout or httpx2.Timeout(30.0, read=300.0),
            auth=auth,
            event_hooks={"response": [record]},
            **kwargs,
        )
        made.append(http)
        return http

    transport = StreamableHttpTransport(
        f"{world.base}/mcp", headers={**headers, "X-Request-ID": request_id}, httpx_client_factory=factory
    )
    extensions = [mcp_tasks.TasksClient()] if tasks else []
    connection = McpConnection(Client(transport, extensions=extensions), exchanges, made)
    async with connection.client:
        yield connection


@dataclass(frozen=True)
class McpOutcome:
    kind: str  # "http" (refused before any tool ran), "error" (a tool or resource error) or "result"
    status: int = 200
    www_authenticate: str | None = None
    error: dict[str, Any] | None = None
    data: Any = None


async def perform(mcp: McpConnection, operation: str, task_id: str) -> McpOutcome:
    """Run one MCP row's operation; its outcome as the client saw it."""
    kind, name = operation.split()[1:3]
    if kind == "task":
        return await perform_task(mcp, name.replace("(taskId)", ""), task_id)
    name = name.replace("(task_id)", "")
    rpc = "tools/call" if kind == "tool" else "resources/read"
    arguments = (
        {"prompt": "x"}
        if name == "run_agent_task"
        else {"prompt": ALICES_PROMPT}
        if name == "search_tasks_by_prompt"
        else {"task_id": task_id}
        if "task_id" in operation
        else {}
    )
    try:
        if kind == "tool":
            result = await mcp.client.call_tool(name, arguments, raise_on_error=False)
            if result.is_error:
                [block] = result.content
                assert isinstance(block, TextContent)
                return McpOutcome("error", error=json.loads(block.text))
            return McpOutcome("result", data=result.structured_content)
        contents = await mcp.client.read_resource(name.replace("{task_id}", task_id))
        return McpOutcome("result", data=json.loads(contents[0].text))  # type: ignore[union-attr]
    except MCPError as exc:
        answer = mcp.answer_to(rpc)
        if answer.status != 200:
            return McpOutcome("http", answer.status, answer.www_authenticate)
        return McpOutcome("error", error=json.loads(str(exc)))


async def perform_task(mcp: McpConnection, method: str, task_id: str) -> McpOutcome:
    """One row of the MCP tasks extension: a task-augmented run, or a `tasks/*` method on alice's task."""
    session = mcp.client.session
    rpc = "tools/call" if method == "run_agent_task" else method
    try:
        if method == "run_agent_task":
            answer: Any = await mcp_tasks.start(session, {"prompt": "x"})
        elif method == "tasks/get":
            answer = await mcp_tasks.get(session, task_id)
        elif method == "tasks/cancel":
            answer = await mcp_tasks.cancel(session, task_id)
        else:
            answer = await mcp_tasks.update(session, task_id, {})
    except MCPError as exc:
        exchange = mcp.answer_to(rpc)
        if exchange.status == 401:
            return McpOutcome("http", exchange.status, exchange.www_authenticate)
        return McpOutcome("error", error=exc.error.data)
    data = answer if isinstance(answer, dict) else answer.model_dump(by_alias=True, mode="json")
    return McpOutcome("result", data=data)


def assert_refused(status: int, www_authenticate: str | None) -> None:
    assert status == 401
    assert www_authenticate is not None
    assert www_authenticate.startswith("Bearer")


async def try_to_connect(world: World, headers: dict[str, Any]) -> list[Exchange]:
    """Try to connect with these credentials: every HTTP answer on the way, and whether it connected."""
    exchanges: list[Exchange] = []
    with contextlib.suppress(MCPError):
        async with mcp_connection(world, headers, new_request_id(), exchanges):
            exchanges.append(Exchange("(connected)", 200, None))
    return exchanges


def comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body, apart from what differs on every request (its id, the date)."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k not in ("x-request-id", "date")]
    return response.status_code, headers, response.content


def tool_result(result: Any) -> dict[str, Any]:
    """All of a tool call's result as the client got it."""
    return {
        "content": [block.model_dump() for block in result.content],
        "structured_content": result.structured_content,
        "meta": result.meta,
        "data": result.data,
        "is_error": result.is_error,
    }


async def audit_of(world: World, task_id: str, actor: Key, channel: str) -> list[tuple[str, str]]:
    rows = await world.db.fetch(
        "SELECT action, outcome FROM audit_event WHERE task_id = $1 AND actor_id = $2 AND channel = $3 ORDER BY id",
        uuid.UUID(task_id),
        actor.key_id,
        channel,
    )
    return [(r["action"], r["outcome"]) for r in rows]
