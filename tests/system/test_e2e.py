"""The service as a user runs it: the `agent-service` command, a real uvicorn, REST and MCP over HTTP."""

from __future__ import annotations

import re
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastmcp import Client

from app.devdb.cluster import LocalPostgres, free_port
from tests.support.service_process import cli, environment, serving
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY

KEY = re.compile(r"ask_[A-Za-z0-9_\-]{43}")


@pytest.fixture
def empty_db_env(empty_database_url: str) -> dict[str, str]:
    return environment(
        DATABASE_URL=empty_database_url,
        PROMPT_HASH_KEY=TEST_HASH_KEY,
        AUDIT_SIGNING_KEY=TEST_SIGNING_KEY,
        AUTH_CACHE_SECONDS="0",
    )


async def test_a_configured_deployment_end_to_end(empty_db_env, empty_database_url):
    marker = f"E2E-MARKER-{uuid.uuid4().hex}"

    refused = cli("serve", "--port", str(free_port()), env=empty_db_env, check=False)
    assert refused.returncode == 1
    assert "agent-service migrate" in refused.stderr

    assert "(head)" in cli("migrate", env=empty_db_env).stdout
    created = cli("keys", "create", "alice", env=empty_db_env).stdout
    alice_key, alice_id = KEY.search(created).group(0), re.search(r"id:\s+(\S+)", created).group(1)  # type: ignore[union-attr]
    auditor_key = KEY.search(cli("keys", "create", "audit-team", "--role", "auditor", env=empty_db_env).stdout).group(0)  # type: ignore[union-attr]
    listed = cli("keys", "list", env=empty_db_env).stdout
    assert "alice" in listed
    assert "audit-team" in listed
    assert alice_key not in listed
    assert auditor_key not in listed

    with serving(empty_db_env) as service:
        base = service.base
        alice = {"Authorization": f"Bearer {alice_key}"}
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            ran = (await http.post("/tools/run_agent_task", json={"prompt": marker}, headers=alice)).json()
            assert ran["status"] == "succeeded"
            read = await http.get(f"/resources/get_agent_result/{ran['task_id']}", headers=alice)
            assert read.json() == ran
            listed_tasks = (await http.get("/resources/agent_results", headers=alice)).json()
            assert [t["task_id"] for t in listed_tasks["items"]] == [ran["task_id"]]
            audit = await http.get("/audit/events", headers={"Authorization": f"Bearer {auditor_key}"})
            assert audit.status_code == 200
            assert (await http.post("/mcp", json={})).status_code == 401

            async with Client(f"{base}/mcp", auth=alice_key) as mcp:
                via_mcp = (await mcp.call_tool("run_agent_task", {"prompt": marker})).structured_content
                resource = await mcp.read_resource(f"agent-result://{ran['task_id']}")
                assert '"task_id"' in resource[0].text
                deleted = await mcp.call_tool("delete_agent_result", {"task_id": via_mcp["task_id"]})
                assert deleted.structured_content["status"] == "deleted"

            assert (
                await http.delete(f"/resources/get_agent_result/{ran['task_id']}", headers=alice)
            ).status_code == 204

            cli("keys", "revoke", alice_id, env=empty_db_env)
            assert (await http.get("/resources/agent_results", headers=alice)).status_code == 401
            revoked_mcp = await http.post("/mcp", json={}, headers=alice)
            assert revoked_mcp.status_code == 401
            with pytest.raises(Exception):  # noqa: B017, PT011  (the client's error type varies by transport)
                async with Client(f"{base}/mcp", auth=alice_key) as mcp:
                    await mcp.list_tools()

    assert service.returncode == 0
    assert marker not in service.output()
    conn = await asyncpg.connect(empty_database_url)
    try:
        mcp_reads = await conn.fetch(
            "SELECT request_id FROM audit_event WHERE channel = 'mcp' AND action = 'read' AND outcome = 'ok'"
        )
        assert len(mcp_reads) == 1
        assert mcp_reads[0]["request_id"]
        rows = await conn.fetch("SELECT t::text AS row FROM agent_task t UNION ALL SELECT a::text FROM audit_event a")
        assert rows
        assert not any(marker in r["row"] for r in rows)
    finally:
        await conn.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder the unprivileged `postgres` user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="agent-service-e2e-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


async def test_the_embedded_default_needs_no_set_up(workdir):
    env = environment(AUTH_CACHE_SECONDS="0")
    with serving(env, cwd=workdir) as service:
        async with httpx.AsyncClient(base_url=service.base, timeout=10) as http:
            assert (await http.get("/readyz")).status_code == 200
            # The command that runs next to the server joins its database.
            second = KEY.search(cli("keys", "create", "second", env=env, cwd=workdir).stdout).group(0)  # type: ignore[union-attr]
            ran = await http.post(
                "/tools/run_agent_task", json={"prompt": "hi"}, headers={"Authorization": f"Bearer {second}"}
            )
            assert ran.status_code == 200
    output = service.output()
    first = KEY.search(output)
    assert first, output
    assert "shown only this once" in output
    assert (workdir / ".data" / "prompt_hash_key").stat().st_mode & 0o777 == 0o600
    # The server stopped the database it started.
    assert LocalPostgres(workdir / ".data" / "pg").running_port() is None

    # A second start finds the same database and keys, and prints no new key.
    with serving(env, cwd=workdir) as service:
        async with httpx.AsyncClient(base_url=service.base, timeout=10) as http:
            listed = await http.get("/resources/agent_results", headers={"Authorization": f"Bearer {second}"})
            assert len(listed.json()["items"]) == 1
    assert "shown only this once" not in service.output()
