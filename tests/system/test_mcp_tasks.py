"""MCP tasks against real `agent-service serve` processes: a task made on one replica is polled on another."""

from __future__ import annotations

import re
import uuid

import asyncpg
import httpx
from fastmcp import Client

from tests.support import mcp_tasks
from tests.support.service_process import cli, environment, replicas
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY

KEY = re.compile(r"ask_[A-Za-z0-9_\-]{43}")


async def test_a_task_made_on_one_replica_is_polled_and_cancelled_on_another(empty_database_url):
    env = environment(
        DATABASE_URL=empty_database_url,
        PROMPT_HASH_KEY=TEST_HASH_KEY,
        AUDIT_SIGNING_KEY=TEST_SIGNING_KEY,
        AUTH_CACHE_SECONDS="0",
    )
    cli("migrate", env=env)
    alice = KEY.search(cli("keys", "create", "alice", env=env).stdout).group(0)  # type: ignore[union-attr]
    bob = KEY.search(cli("keys", "create", "bob", env=env).stdout).group(0)  # type: ignore[union-attr]
    marker = f"TASK-MARKER-{uuid.uuid4().hex}"

    with replicas(env, 2) as (one, other):
        extension = mcp_tasks.TasksClient()
        async with Client(f"{one.base}/mcp", auth=alice, extensions=[extension]) as mcp:
            resolved = await mcp.call_tool("run_agent_task", {"prompt": marker})  # polled by the extension
            handle = await mcp_tasks.start(mcp.session, {"prompt": "second", "cache": False})
        async with Client(f"{other.base}/mcp", auth=alice, extensions=[mcp_tasks.TasksClient()]) as mcp:
            polled = await mcp_tasks.finished(mcp.session, handle)
            acknowledged = await mcp_tasks.cancel(mcp.session, handle.task_id)
        async with httpx.AsyncClient(base_url=other.base, timeout=10) as http:
            as_bob = await mcp_tasks.post_raw(http, bob, "tasks/get", {"taskId": handle.task_id})
            unknown = await mcp_tasks.post_raw(http, bob, "tasks/get", {"taskId": str(uuid.uuid4())})

    assert resolved.structured_content["status"] == "succeeded"
    assert [h.result_type for h in extension.handles] == ["task"]
    assert polled.status == "completed"
    assert polled.result is not None
    assert polled.result["structuredContent"]["task_id"] == handle.task_id
    assert acknowledged["resultType"] == "complete"
    assert as_bob.status_code == unknown.status_code == 400
    assert as_bob.json() == unknown.json()
    assert as_bob.json()["code"] == "not_found"
    assert marker not in one.output() + other.output()
    conn = await asyncpg.connect(empty_database_url)
    try:
        audited = await conn.fetch(
            "SELECT DISTINCT action, outcome FROM audit_event WHERE task_id = $1 AND channel = 'mcp'",
            uuid.UUID(handle.task_id),
        )
        stored = await conn.fetch("SELECT t::text AS row FROM agent_task t UNION ALL SELECT a::text FROM audit_event a")
    finally:
        await conn.close()
    assert {tuple(r) for r in audited} == {("create", "ok"), ("read", "ok"), ("read", "denied"), ("cancel", "finished")}
    assert not any(marker in r["row"] for r in stored)
