"""`run_agent_task` as an MCP task (the `io.modelcontextprotocol/tasks` extension, SEP-2663).

A client that declares the extension gets the task at once and polls `tasks/get` for it; the
task is our own row, every `tasks/*` request an audited operation on channel `mcp`, and a task
the caller may not see answers exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastmcp.utilities.tasks import TASKS_EXTENSION_ID
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from app.api.mcp_tasks import CreateTaskResult
from app.domain import Role, StoreOutput
from app.main import create_app
from app.service.operations import AgentService
from tests.support.app import Caller, count_rows, key, running
from tests.support.authz import comparable
from tests.support.fake_openai import FakeOpenAI, Reply, completion, error_reply
from tests.support.mcp import mcp_as
from tests.support.mcp_tasks import TasksClient, cancel, finished, get, post_raw, start, update
from tests.support.settings import make_settings

NO_SUCH_TASK = {"code": "not_found", "message": "no such task"}


@asynccontextmanager
async def gateway(database_url: str, fake: FakeOpenAI) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with the fake provider as `openai:gpt-test`, the default model."""
    settings = make_settings(
        database_url,
        openai_api_key="sk-test",
        openai_base_url=fake.base_url,
        default_model="openai:gpt-test",
        provider_timeout_seconds=30,
        provider_max_retries=0,
    )
    async with running(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as http:
            yield app, http


@asynccontextmanager
async def tasks_as(service: AgentService, caller: Caller) -> AsyncIterator[tuple[Any, TasksClient]]:
    """FastMCP's in-memory client, declaring the tasks extension on every request."""
    extension = TasksClient()
    async with mcp_as(service, caller, extensions=[extension]) as mcp:
        yield mcp, extension


async def _until_at_the_provider(fake: FakeOpenAI) -> None:
    deadline = time.monotonic() + 10
    while fake.count < 1:
        assert time.monotonic() < deadline, "the provider never got the request"
        await asyncio.sleep(0.01)


# -- creating and polling ---------------------------------------------------------------------


async def test_a_declared_call_is_answered_at_once_with_the_task_and_polls_to_its_result(database_url, fake, db):
    fake.enqueue(Reply(body=completion("Blue."), delay=0.3))
    async with gateway(database_url, fake) as (app, _), tasks_as(app.state.service, await key(app)) as (mcp, _):
        began = time.monotonic()
        handle = await start(mcp.session, {"prompt": "Name a colour.", "context": {"k": "v"}})
        answered_in = time.monotonic() - began
        first = await get(mcp.session, handle.task_id)
        done = await finished(mcp.session, handle)
        by_tool = await mcp.call_tool("get_agent_result", {"task_id": handle.task_id})

    assert isinstance(handle, CreateTaskResult)
    assert answered_in < 0.3, "the handle does not wait for the provider"
    assert (handle.result_type, handle.status) == ("task", "working")
    assert uuid.UUID(handle.task_id)
    assert handle.poll_interval_ms == 1000
    assert first.status == "working"  # a task handle is readable at once (the spec's MUST)
    assert first.result_type == "complete"
    assert done.status == "completed"
    assert done.result is not None
    result = CallToolResult.model_validate(done.result)
    assert result.is_error is False
    assert result.structured_content == by_tool.structured_content
    assert result.structured_content["status"] == "succeeded"
    assert result.structured_content["output"] == "Blue."
    assert result.structured_content["context"] == {"k": "v"}
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    created, expires = (datetime.fromisoformat(result.structured_content[k]) for k in ("created_at", "expires_at"))
    assert handle.ttl_ms == done.ttl_ms == (expires - created) // timedelta(milliseconds=1)  # its retention
    assert await count_rows(db, "agent_task") == 1


async def test_the_client_extension_resolves_a_task_into_the_plain_result(app_service, alice):
    async with tasks_as(app_service, alice) as (mcp, extension):
        result = await mcp.call_tool("run_agent_task", {"prompt": "hello"})

    assert [handle.result_type for handle in extension.handles] == ["task"]
    assert result.structured_content["status"] == "succeeded"
    assert result.structured_content["task_id"] == extension.handles[0].task_id


async def test_a_call_without_the_extension_is_answered_as_always(app_service, alice, db):
    async with mcp_as(app_service, alice) as mcp:
        result = await mcp.session.call_tool("run_agent_task", {"prompt": "hello"})

    assert isinstance(result, CallToolResult)
    assert result.structured_content is not None
    assert result.structured_content["status"] == "succeeded"
    assert await count_rows(db, "agent_task") == 1


async def test_the_other_tools_and_an_unstored_task_are_never_tasks(app_service, alice, db):
    async with tasks_as(app_service, alice) as (mcp, extension):
        unstored = await start(mcp.session, {"prompt": "hello", "store": False})
        listed = await start(mcp.session, {}, tool="list_agent_results")

    assert isinstance(unstored, CallToolResult)  # nothing stored, so nothing to poll: the plain answer
    assert unstored.structured_content is not None
    assert (unstored.structured_content["status"], unstored.structured_content["output_stored"]) == (
        "succeeded",
        False,
    )
    assert isinstance(listed, CallToolResult)
    assert extension.handles == []


async def test_a_key_that_never_stores_gets_the_plain_answer_not_a_task(app):
    private = await key(app, store_output=StoreOutput.NEVER)
    async with tasks_as(app.state.service, private) as (mcp, extension):
        answered = await start(mcp.session, {"prompt": "hello"})

    assert isinstance(answered, CallToolResult)
    assert answered.structured_content is not None
    assert answered.structured_content["output_stored"] is False
    assert extension.handles == []


async def test_bad_arguments_are_the_plain_calls_tool_error_and_no_task(app_service, alice, db):
    async with tasks_as(app_service, alice) as (mcp, _):
        refused = await start(mcp.session, {"prompt": "x", "retention_days": -1})

    assert isinstance(refused, CallToolResult)
    assert refused.is_error
    assert json.loads(refused.content[0].text)["code"] == "validation_error"  # type: ignore[union-attr]
    assert await count_rows(db, "agent_task") == 0


async def test_a_provider_failure_is_a_completed_task_whose_result_says_failed(database_url, fake):
    fake.enqueue(error_reply(400, "bad_request", message="refused"))
    async with gateway(database_url, fake) as (app, _), tasks_as(app.state.service, await key(app)) as (mcp, _):
        done = await finished(mcp.session, await start(mcp.session, {"prompt": "fail", "cache": False}))

    # The spec keeps `failed` for JSON-RPC errors; a tool result, whatever it says, is `completed`.
    assert done.status == "completed"
    assert done.error is None
    result = CallToolResult.model_validate(done.result)
    assert result.is_error is False
    assert result.structured_content is not None
    assert result.structured_content["status"] == "failed"
    assert result.structured_content["error"]["code"] == "provider_error"
    assert done.status_message == "agent task failed"


# -- cancelling -----------------------------------------------------------------------------------


async def test_a_running_task_is_cancelled_and_reads_back_cancelled(database_url, fake, db):
    fake.enqueue(Reply(body=completion("never seen"), delay=30))
    async with gateway(database_url, fake) as (app, _), tasks_as(app.state.service, await key(app)) as (mcp, _):
        handle = await start(mcp.session, {"prompt": "slow one", "cache": False})
        await _until_at_the_provider(fake)
        acknowledged = await cancel(mcp.session, handle.task_id)
        done = await finished(mcp.session, handle)
        again = await cancel(mcp.session, handle.task_id)  # it has ended: acknowledged all the same
        deadline = time.monotonic() + 5
        while not fake.hang_ups and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    assert acknowledged["resultType"] == "complete"  # an empty acknowledgement
    assert again["resultType"] == "complete"
    assert (done.status, done.result) == ("cancelled", None)
    assert fake.hang_ups, "the provider call was stopped"
    assert await db.fetchval("SELECT status FROM agent_task") == "cancelled"
    audit = await db.fetch("SELECT action, outcome, channel FROM audit_event WHERE action = 'cancel' ORDER BY id")
    assert [tuple(a) for a in audit] == [("cancel", "ok", "mcp"), ("cancel", "finished", "mcp")]


async def test_an_update_is_acknowledged_for_ones_own_task_only(app_service, alice, bob):
    async with tasks_as(app_service, alice) as (mcp, _):
        handle = await start(mcp.session, {"prompt": "hello"})
        acknowledged = await update(mcp.session, handle.task_id, {"never-asked": {"action": "accept"}})
    async with tasks_as(app_service, bob) as (mcp, _):
        with pytest.raises(MCPError) as refused:
            await update(mcp.session, handle.task_id, {})

    assert acknowledged is not None
    assert (refused.value.error.code, refused.value.error.data) == (-32602, NO_SUCH_TASK)


# -- whose task -----------------------------------------------------------------------------------


async def test_another_keys_task_an_unknown_and_a_malformed_id_are_the_same_error(app_service, alice, bob, db):
    async with tasks_as(app_service, alice) as (mcp, _):
        handle = await start(mcp.session, {"prompt": "mine"})
        await finished(mcp.session, handle)

    errors: dict[str, list[dict[str, Any]]] = {}
    async with tasks_as(app_service, bob) as (mcp, _):
        for target in (handle.task_id, str(uuid.uuid4()), "not-a-task-id"):
            seen = []
            for method in (get, cancel, lambda session, task_id: update(session, task_id, {})):
                with pytest.raises(MCPError) as refused:
                    await method(mcp.session, target)
                seen.append(refused.value.error.model_dump())
            errors[target] = seen

    [mine, unknown, malformed] = errors.values()
    assert mine == unknown == malformed
    assert mine[0] == {"code": -32602, "message": "not_found: no such task", "data": NO_SUCH_TASK}
    rows = await db.fetch(
        "SELECT task_id, action, outcome FROM audit_event WHERE actor_id = $1 ORDER BY id", bob.key_id
    )
    by_task = {(str(r["task_id"]), r["action"], r["outcome"]) for r in rows}
    assert (handle.task_id, "read", "denied") in by_task  # only the audit log knows the difference
    assert (handle.task_id, "cancel", "denied") in by_task
    assert not any(r["outcome"] == "ok" for r in rows)


async def test_over_http_another_keys_task_and_an_unknown_one_answer_the_same_bytes(database_url):
    async with running(create_app(make_settings(database_url))) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            alice, bob = await key(app), await key(app)
            created = await post_raw(
                http, alice.key, "tools/call", {"name": "run_agent_task", "arguments": {"prompt": "x"}}
            )
            task_id = created.json()["result"]["taskId"]
            answers = {
                target: [
                    comparable(await post_raw(http, bob.key, method, {"taskId": target}))
                    for method in ("tasks/get", "tasks/cancel", "tasks/update")
                ]
                for target in (task_id, str(uuid.uuid4()), "not-a-task-id")
            }
            own = await post_raw(http, alice.key, "tasks/get", {"taskId": task_id})

    assert created.status_code == 200
    assert created.json()["result"]["resultType"] == "task"
    [mine, unknown, malformed] = answers.values()
    assert mine == unknown == malformed
    status, _, body = mine[0]
    assert status == 400  # the 2026-07-28 transport's status for -32602
    # The answer is to the request sent (raw_request's id 7): JSON-RPC allows null only when none is known.
    assert {k: v for k, v in json.loads(body).items() if k != "error"} == {**NO_SUCH_TASK, "jsonrpc": "2.0", "id": 7}
    assert json.loads(body)["error"] == {"code": -32602, "message": "not_found: no such task", "data": NO_SUCH_TASK}
    assert own.status_code == 200
    assert own.json()["result"]["taskId"] == task_id


async def test_an_auditor_may_read_anyones_task_but_cancel_only_its_own(app_service, alice, make_caller):
    auditor = await make_caller(Role.AUDITOR)
    async with tasks_as(app_service, alice) as (mcp, _):
        handle = await start(mcp.session, {"prompt": "mine"})
        await finished(mcp.session, handle)
    async with tasks_as(app_service, auditor) as (mcp, _):
        read = await get(mcp.session, handle.task_id)
        with pytest.raises(MCPError) as refused:
            await cancel(mcp.session, handle.task_id)

    assert read.status == "completed"
    assert refused.value.error.data["code"] == "forbidden"


# -- the protocol around it ---------------------------------------------------------------------------


async def test_the_extension_is_advertised_and_its_removed_methods_are_unknown(database_url):
    async with running(create_app(make_settings(database_url))) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            alice = await key(app)
            discovered = await post_raw(http, alice.key, "server/discover", {})
            removed = [
                await post_raw(http, alice.key, m, {"taskId": str(uuid.uuid4())})
                for m in ("tasks/result", "tasks/list")
            ]
            as_in_the_docs = await post_raw(  # no clientInfo; the 2025-11-25 `task` argument, ignored
                http,
                alice.key,
                "tools/call",
                {"name": "run_agent_task", "arguments": {"prompt": "y"}, "task": {"ttl": 1}},
                client_info=False,
            )
            undeclared = await post_raw(
                http, alice.key, "tools/call", {"name": "run_agent_task", "arguments": {"prompt": "x"}}, declare=False
            )

    assert discovered.json()["result"]["capabilities"]["extensions"][TASKS_EXTENSION_ID] == {}
    for answer in removed:
        assert (answer.status_code, answer.json()["code"], answer.json()["error"]["code"]) == (
            404,
            "unknown_method",
            -32601,
        )
    assert undeclared.json()["result"]["structuredContent"]["status"] == "succeeded"  # no extension: no task
    assert as_in_the_docs.json()["result"]["resultType"] == "task"
    assert as_in_the_docs.json()["result"]["ttlMs"] > 1


async def test_every_task_access_is_audited_on_channel_mcp(app_service, alice, db):
    async with tasks_as(app_service, alice) as (mcp, _):
        handle = await start(mcp.session, {"prompt": "audit me"})
        await finished(mcp.session, handle)
        await get(mcp.session, handle.task_id)
        await cancel(mcp.session, handle.task_id)

    rows = await db.fetch(
        "SELECT action, outcome, channel FROM audit_event WHERE task_id = $1 ORDER BY id", uuid.UUID(handle.task_id)
    )
    actions = [tuple(r) for r in rows]
    assert actions[0] == ("create", "ok", "mcp")
    assert actions[-1] == ("cancel", "finished", "mcp")
    reads = actions[1:-1]
    assert len(reads) >= 2  # the polls, then the explicit read
    assert set(reads) == {("read", "ok", "mcp")}  # each tasks/get one audited read
