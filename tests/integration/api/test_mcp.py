"""MCP through the FastMCP client, in memory: the same operations, ownership and audit as REST."""

from __future__ import annotations

import json
import uuid

import pytest
from mcp.shared.exceptions import MCPError

from tests.support.app import count_rows
from tests.support.mcp import error_of, mcp_as


async def test_tools_and_resource_template_are_listed(app_service, alice):
    async with mcp_as(app_service, alice) as mcp:
        tools = {t.name: t for t in await mcp.list_tools()}
        templates = await mcp.list_resource_templates()

    assert set(tools) == {
        "run_agent_task",
        "get_agent_result",
        "list_agent_results",
        "delete_agent_result",
        "cancel_agent_task",
        "get_agent_webhook",
        "list_models",
        "search_tasks_by_prompt",
    }
    assert set(tools["run_agent_task"].input_schema["properties"]) == {
        "prompt",
        "context",
        "template",
        "model",
        "params",
        "cache",
        "retention_days",
        "store",
        "webhook",
        "response_format",
        "idempotency_key",
        "wait",
    }
    assert tools["run_agent_task"].output_schema is not None
    assert [(t.name, t.uri_template, t.mime_type) for t in templates] == [
        ("get_agent_result", "agent-result://{task_id}", "application/json")
    ]


async def test_run_agent_task_returns_a_structured_result(app_service, alice):
    async with mcp_as(app_service, alice) as mcp:
        result = await mcp.call_tool("run_agent_task", {"prompt": "hello", "context": {"k": "v"}})

    data = result.structured_content
    assert data["status"] == "succeeded"
    assert data["context"] == {"k": "v"}
    assert data["model"] == "offline:echo"
    assert uuid.UUID(data["task_id"])


async def test_a_result_reads_back_through_tool_and_resource_alike_and_both_are_audited(app_service, alice, db):
    async with mcp_as(app_service, alice) as mcp:
        created = (await mcp.call_tool("run_agent_task", {"prompt": "hello"})).structured_content
        by_tool = (await mcp.call_tool("get_agent_result", {"task_id": created["task_id"]})).structured_content
        contents = await mcp.read_resource(f"agent-result://{created['task_id']}")

    assert by_tool == created
    assert contents[0].mime_type == "application/json"
    assert json.loads(contents[0].text) == created
    reads = await db.fetch("SELECT channel, outcome, actor_id FROM audit_event WHERE action = 'read'")
    assert [dict(r) for r in reads] == [{"channel": "mcp", "outcome": "ok", "actor_id": alice.key_id}] * 2


async def test_rest_and_mcp_see_the_same_task(app_service, client, alice):
    async with mcp_as(app_service, alice) as mcp:
        created = (await mcp.call_tool("run_agent_task", {"prompt": "hello"})).structured_content
    over_rest = await client.get(f"/resources/get_agent_result/{created['task_id']}", headers=alice.headers)
    assert over_rest.json() == created


async def test_listing_and_deleting_over_mcp(app_service, alice, db):
    async with mcp_as(app_service, alice) as mcp:
        first = (await mcp.call_tool("run_agent_task", {"prompt": "one"})).structured_content
        second = (await mcp.call_tool("run_agent_task", {"prompt": "two"})).structured_content
        page = (await mcp.call_tool("list_agent_results", {"limit": 1})).structured_content
        rest = (await mcp.call_tool("list_agent_results", {"cursor": page["next_cursor"]})).structured_content
        deleted = (await mcp.call_tool("delete_agent_result", {"task_id": first["task_id"]})).structured_content
        again = await mcp.call_tool("delete_agent_result", {"task_id": first["task_id"]}, raise_on_error=False)

    assert [i["task_id"] for i in page["items"] + rest["items"]] == [second["task_id"], first["task_id"]]
    assert deleted == {"task_id": first["task_id"], "status": "deleted"}
    assert error_of(again)["code"] == "not_found"
    assert await count_rows(db, "agent_task") == 1


async def test_another_clients_task_is_not_found_over_mcp_exactly_like_an_unknown_one(app_service, alice, bob):
    async with mcp_as(app_service, alice) as mcp:
        created = (await mcp.call_tool("run_agent_task", {"prompt": "mine"})).structured_content
    async with mcp_as(app_service, bob) as mcp:
        theirs = await mcp.call_tool("get_agent_result", {"task_id": created["task_id"]}, raise_on_error=False)
        unknown = await mcp.call_tool("get_agent_result", {"task_id": str(uuid.uuid4())}, raise_on_error=False)
        erase = await mcp.call_tool("delete_agent_result", {"task_id": created["task_id"]}, raise_on_error=False)
        listed = (await mcp.call_tool("list_agent_results", {})).structured_content
        with pytest.raises(MCPError) as resource_error:
            await mcp.read_resource(f"agent-result://{created['task_id']}")

    assert error_of(theirs) == error_of(unknown) == {"code": "not_found", "message": "no such task"}
    assert error_of(erase)["code"] == "not_found"
    assert listed["items"] == []
    assert json.loads(str(resource_error.value))["code"] == "not_found"


async def test_an_auditor_reads_any_task_over_mcp(app_service, alice, auditor, db):
    async with mcp_as(app_service, alice) as mcp:
        created = (await mcp.call_tool("run_agent_task", {"prompt": "mine"})).structured_content
    async with mcp_as(app_service, auditor) as mcp:
        read = (await mcp.call_tool("get_agent_result", {"task_id": created["task_id"]})).structured_content
    assert read == created
    row = await db.fetchrow("SELECT actor_role, channel FROM audit_event WHERE action = 'read'")
    assert dict(row) == {"actor_role": "auditor", "channel": "mcp"}


async def test_without_a_token_every_tool_is_refused(app_service, db):
    async with mcp_as(app_service, None) as mcp:
        results = [
            await mcp.call_tool("run_agent_task", {"prompt": "x"}, raise_on_error=False),
            await mcp.call_tool("get_agent_result", {"task_id": str(uuid.uuid4())}, raise_on_error=False),
            await mcp.call_tool("list_agent_results", {}, raise_on_error=False),
            await mcp.call_tool("delete_agent_result", {"task_id": str(uuid.uuid4())}, raise_on_error=False),
        ]
        with pytest.raises(MCPError, match="unauthenticated"):
            await mcp.read_resource(f"agent-result://{uuid.uuid4()}")
    assert {error_of(r)["code"] for r in results} == {"unauthenticated"}
    assert await count_rows(db, "agent_task") == 0


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"prompt": "   "}, "validation_error"),
        ({"prompt": "x" * 32_001}, "prompt_too_long"),
        ({"prompt": "x", "context": {"blob": "x" * 17_000}}, "validation_error"),
        ({"prompt": "x", "params": {"temperature": 9}}, None),
        ({"prompt": "x", "model": "nope:m"}, "unknown_model"),
        ({"prompt": "x", "retention_days": 400}, "retention_too_long"),
        ({"prompt": "x", "template": "summary"}, "unknown_template"),
    ],
)
async def test_bad_arguments_are_errors_and_write_nothing(app_service, alice, db, arguments, code):
    async with mcp_as(app_service, alice) as mcp:
        result = await mcp.call_tool("run_agent_task", arguments, raise_on_error=False)
    assert result.is_error
    if code is not None:  # schema-level rejections come from FastMCP itself, in its own words
        assert error_of(result)["code"] == code
    assert await count_rows(db, "agent_task") == 0


async def test_an_invalid_task_id_is_a_validation_error(app_service, alice):
    async with mcp_as(app_service, alice) as mcp:
        result = await mcp.call_tool("get_agent_result", {"task_id": "nope"}, raise_on_error=False)
    assert error_of(result) == {"code": "validation_error", "message": "task_id must be a UUID"}


async def test_the_mcp_tool_honours_idempotency_keys_and_wait(app_service, alice, db):
    async with mcp_as(app_service, alice) as mcp:
        args = {"prompt": "once only", "cache": False, "idempotency_key": "mcp-1"}
        first = (await mcp.call_tool("run_agent_task", args)).structured_content
        again = (await mcp.call_tool("run_agent_task", args)).structured_content
        conflict = await mcp.call_tool("run_agent_task", {**args, "prompt": "something else"}, raise_on_error=False)
        later = (
            await mcp.call_tool("run_agent_task", {"prompt": "in the background", "wait": False})
        ).structured_content

    assert again["task_id"] == first["task_id"]
    assert error_of(conflict)["code"] == "idempotency_conflict"
    assert later["status"] in ("pending", "running", "succeeded")
    assert await count_rows(db, "agent_task") == 2
