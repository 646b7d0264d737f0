"""What a real `agent-service serve` prints: no traceback and no argument when a request fails
unexpectedly (from uvicorn, FastMCP or us), only the exception's type; and nothing from the
scheduler while it runs its jobs on an idle service."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import httpx
from fastmcp import Client

from tests.support.routes import RUN
from tests.support.service_process import cli, environment, serving
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY

KEY = re.compile(r"ask_[A-Za-z0-9_\-]{43}")

# Every new task is refused with an error quoting the model the caller chose (as any PostgreSQL
# error that repeats a value would be): an exception the service does not expect, its text theirs.
REFUSE_TASKS = """
CREATE FUNCTION refuse_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused model %', NEW.model; END $$;
CREATE TRIGGER refuse_task BEFORE INSERT ON agent_task FOR EACH ROW EXECUTE FUNCTION refuse_task();
"""


async def test_a_real_server_logs_the_type_of_an_unexpected_error_and_nothing_else(database_url):
    marker = f"SERVE-MARKER-{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(REFUSE_TASKS)
    finally:
        await conn.close()
    # The lease heartbeat every 0.1 s and the sweep every 0.3 s: APScheduler would log a lot.
    env = environment(
        DATABASE_URL=database_url,
        PROMPT_HASH_KEY=TEST_HASH_KEY,
        AUDIT_SIGNING_KEY=TEST_SIGNING_KEY,
        TASK_LEASE_SECONDS="0.3",
    )
    key = KEY.search(cli("keys", "create", "alice", env=env).stdout).group(0)  # type: ignore[union-attr]
    task = {"prompt": f"a prompt {marker}", "model": f"offline:{marker}"}

    with serving(env) as service:
        async with httpx.AsyncClient(base_url=service.base, timeout=10) as http:
            rest = await http.post(RUN, json=task, headers={"Authorization": f"Bearer {key}"})
        async with Client(f"{service.base}/mcp", auth=key) as mcp:
            tool = await mcp.call_tool("run_agent_task", task, raise_on_error=False)
        await asyncio.sleep(1)

    output = service.output()
    assert rest.status_code == 500
    assert tool.is_error
    assert "Exception in ASGI application (RaiseError)" in output  # uvicorn's
    assert "Error calling tool 'run_agent_task' (RaiseError)" in output  # FastMCP's
    assert "unhandled RaiseError" in output  # ours
    assert "Traceback" not in output
    assert marker not in output
    assert "Running job" not in output  # APScheduler's INFO lines, two per job run
    assert "executed successfully" not in output
