"""Per-key limits (request rate, running tasks) shared by every replica, and the endpoint's hygiene:
request size limits, DNS-rebinding protection on /mcp, CORS off unless configured."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.domain import Role
from app.main import create_app
from tests.conftest import TEST_HASH_KEY, Caller, count_rows, make_settings, running
from tests.fake_openai import FakeOpenAI, Reply, completion
from tests.test_e2e import cli, environment
from tests.test_mcp import error_of, mcp_as

RUN = "/tools/run_agent_task"
LIST = "/resources/agent_results"
MCP_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI().running() as server:
        yield server


@asynccontextmanager
async def replica(database_url: str, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """One service instance on the shared test database (two of them act as two replicas)."""
    async with running(create_app(make_settings(database_url, **overrides))) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as http:
            yield app, http


def provider(fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "openai_api_key": "sk-test",
        "openai_base_url": fake.base_url,
        "default_model": "openai:gpt-test",
        "provider_timeout_seconds": 10,
    }


async def key(app: FastAPI, **limits: int | None) -> Caller:
    record, plain = await app.state.components.keys.create(f"k-{uuid.uuid4().hex[:6]}", Role.CLIENT, **limits)
    return Caller(record.id, plain, Role.CLIENT)


# -- request rate -----------------------------------------------------------------------------


async def test_a_key_over_its_rate_gets_429_with_retry_after(database_url):
    async with replica(database_url, rate_limit_per_minute=3) as (app, http):
        alice, bob = await key(app), await key(app)
        answers = [await http.get(LIST, headers=alice.headers) for _ in range(4)]
        bobs = await http.get(LIST, headers=bob.headers)

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.json()["code"] == "too_many_requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one request every 20 s at 3 a minute
    assert bobs.status_code == 200  # limits are per key


async def test_a_refused_request_does_not_use_up_the_allowance(database_url, db):
    async with replica(database_url, rate_limit_per_minute=2) as (app, http):
        alice = await key(app)
        spent = [(await http.get(LIST, headers=alice.headers)).status_code for _ in range(2)]
        paced_until = await db.fetchval("SELECT next_allowed_at FROM rate_limit")
        refused = [(await http.get(LIST, headers=alice.headers)).status_code for _ in range(5)]
        still = await db.fetchval("SELECT next_allowed_at FROM rate_limit")
        await db.execute("UPDATE rate_limit SET next_allowed_at = next_allowed_at - interval '30 seconds'")
        later = await http.get(LIST, headers=alice.headers)

    assert (spent, refused) == ([200, 200], [429] * 5)
    assert still == paced_until  # refused requests moved nothing
    assert later.status_code == 200  # once 30 s (one request's worth at 2 a minute) have passed


async def test_a_keys_own_rate_overrides_the_default(database_url):
    async with replica(database_url, rate_limit_per_minute=2) as (app, http):
        unlimited, strict = await key(app, rate_limit_per_minute=0), await key(app, rate_limit_per_minute=1)
        free = [(await http.get(LIST, headers=unlimited.headers)).status_code for _ in range(5)]
        paced = [(await http.get(LIST, headers=strict.headers)).status_code for _ in range(2)]

    assert free == [200] * 5
    assert paced == [200, 429]


async def test_the_rate_is_shared_by_every_replica(database_url):
    async with (
        replica(database_url, rate_limit_per_minute=4) as (app_a, http_a),
        replica(database_url, rate_limit_per_minute=4) as (_, http_b),
    ):
        alice = await key(app_a)
        answers = await asyncio.gather(
            *(http.get(LIST, headers=alice.headers) for http in (http_a, http_b, http_a, http_b, http_a, http_b))
        )

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 429, 429]


async def test_mcp_calls_count_against_the_same_rate(database_url):
    async with replica(database_url, rate_limit_per_minute=2) as (app, http):
        alice = await key(app)
        assert (await http.get(LIST, headers=alice.headers)).status_code == 200
        async with mcp_as(app.state.service, alice) as mcp:
            allowed = await mcp.call_tool("list_agent_results", {}, raise_on_error=False)
            refused = await mcp.call_tool("list_agent_results", {}, raise_on_error=False)

    assert not allowed.is_error
    error = error_of(refused)
    assert error["code"] == "too_many_requests"
    assert error["retry_after"] >= 1


async def test_the_pacing_table_is_unlogged(db):
    assert await db.fetchval("SELECT relpersistence FROM pg_class WHERE relname = 'rate_limit'") == b"u"


# -- running tasks ------------------------------------------------------------------------------


async def test_a_key_at_its_running_task_cap_gets_429_and_nothing_is_written(database_url, fake, db):
    fake.responder = lambda _: Reply(body=completion("slow"), delay=1.0)
    async with replica(database_url, max_running_tasks=2, **provider(fake)) as (app, http):
        alice, bob = await key(app), await key(app)
        first = await http.post(RUN, params={"wait": "false"}, json={"prompt": "one"}, headers=alice.headers)
        second = await http.post(RUN, params={"wait": "false"}, json={"prompt": "two"}, headers=alice.headers)
        third = await http.post(RUN, params={"wait": "false"}, json={"prompt": "three"}, headers=alice.headers)
        rows_at_cap = await count_rows(db, "agent_task")
        bobs = await http.post(RUN, params={"wait": "false"}, json={"prompt": "one"}, headers=bob.headers)
        await app.state.components.runner.drain(10)
        after = await http.post(RUN, json={"prompt": "four"}, headers=alice.headers)

    assert (first.status_code, second.status_code, third.status_code) == (202, 202, 429)
    assert third.json()["code"] == "too_many_running_tasks"
    assert int(third.headers["retry-after"]) >= 1
    assert rows_at_cap == 2  # the refused task left no row (and no audit event)
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'create'") == 4
    assert bobs.status_code == 202  # per key
    assert after.status_code == 200  # room again once they finished


async def test_a_cache_hit_is_served_at_the_cap(database_url, fake):
    async with replica(database_url, max_running_tasks=1, **provider(fake)) as (app, http):
        alice = await key(app)
        assert (await http.post(RUN, json={"prompt": "cached"}, headers=alice.headers)).status_code == 200
        fake.responder = lambda _: Reply(body=completion("slow"), delay=1.0)
        busy = await http.post(RUN, params={"wait": "false"}, json={"prompt": "busy"}, headers=alice.headers)
        hit = await http.post(RUN, json={"prompt": "cached"}, headers=alice.headers)
        refused = await http.post(RUN, json={"prompt": "new", "cache": False}, headers=alice.headers)

    assert busy.status_code == 202
    assert (hit.status_code, hit.json()["cached"]) == (200, True)
    assert refused.status_code == 429


async def test_the_running_task_cap_holds_across_replicas_under_concurrency(database_url, fake, db):
    fake.responder = lambda _: Reply(body=completion("slow"), delay=1.5)
    async with (
        replica(database_url, max_running_tasks=3, **provider(fake)) as (app_a, http_a),
        replica(database_url, max_running_tasks=3, **provider(fake)) as (_, http_b),
    ):
        alice = await key(app_a)
        answers = await asyncio.gather(
            *(
                http.post(
                    RUN, params={"wait": "false"}, json={"prompt": f"p{i}", "cache": i % 2 == 0}, headers=alice.headers
                )
                for i, http in enumerate([http_a, http_b] * 6)
            )
        )
        statuses = sorted(a.status_code for a in answers)
        rows = await count_rows(db, "agent_task")

    assert statuses == [202] * 3 + [429] * 9
    assert rows == 3


async def test_a_keys_own_cap_overrides_the_default(database_url, fake):
    fake.responder = lambda _: Reply(body=completion("slow"), delay=1.0)
    async with replica(database_url, max_running_tasks=1, **provider(fake)) as (app, http):
        roomy = await key(app, max_running_tasks=0)
        answers = [
            (
                await http.post(RUN, params={"wait": "false"}, json={"prompt": f"p{i}"}, headers=roomy.headers)
            ).status_code
            for i in range(3)
        ]
    assert answers == [202, 202, 202]


# -- request size -------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_and_writes_nothing(database_url, db):
    async with replica(database_url, max_request_bytes=2048) as (app, http):
        alice = await key(app)
        small = await http.post(RUN, json={"prompt": "x" * 100}, headers=alice.headers)
        declared = await http.post(RUN, json={"prompt": "x" * 3000}, headers=alice.headers)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"prompt": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}'

        streamed = await http.post(RUN, content=chunks(), headers={**alice.headers, "Content-Type": "application/json"})

    assert small.status_code == 200
    for answer in (declared, streamed):
        assert answer.status_code == 413
        assert answer.json()["code"] == "payload_too_large"
        assert "x" * 20 not in answer.text
    assert await count_rows(db, "agent_task") == 1


async def test_mcp_bodies_have_the_same_limit(database_url):
    async with replica(database_url, max_request_bytes=2048) as (app, http):
        alice = await key(app)
        big = {**MCP_INIT, "params": {**MCP_INIT["params"], "padding": "y" * 4000}}  # type: ignore[dict-item]
        answer = await http.post("/mcp", json=big, headers={**alice.headers, **MCP_HEADERS})

    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"


# -- DNS rebinding and CORS ---------------------------------------------------------------------


async def test_mcp_refuses_a_foreign_host_and_origin(database_url):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        headers = {**alice.headers, **MCP_HEADERS}
        local = await http.post("/mcp", json=MCP_INIT, headers=headers)
        foreign_host = await http.post("/mcp", json=MCP_INIT, headers={**headers, "Host": "evil.example"})
        foreign_origin = await http.post("/mcp", json=MCP_INIT, headers={**headers, "Origin": "http://evil.example"})
        rest = await http.get(LIST, headers={**alice.headers, "Host": "evil.example"})

    assert local.status_code == 200
    assert (foreign_host.status_code, foreign_host.json()["code"]) == (421, "misdirected_request")
    assert (foreign_origin.status_code, foreign_origin.json()["code"]) == (403, "forbidden_origin")
    assert rest.status_code == 200  # REST needs a key and no browser session; only /mcp is guarded


async def test_allowed_hosts_and_origins_are_configurable(database_url):
    async with replica(
        database_url, mcp_allowed_hosts="agents.example.com,*.internal", mcp_allowed_origins="https://app.example.com"
    ) as (app, http):
        alice = await key(app)
        headers = {**alice.headers, **MCP_HEADERS}
        named = await http.post("/mcp", json=MCP_INIT, headers={**headers, "Host": "agents.example.com"})
        pattern = await http.post("/mcp", json=MCP_INIT, headers={**headers, "Host": "api.internal:8000"})
        origin = await http.post(
            "/mcp",
            json=MCP_INIT,
            headers={**headers, "Host": "agents.example.com", "Origin": "https://app.example.com"},
        )
        other = await http.post("/mcp", json=MCP_INIT, headers={**headers, "Host": "agents.example.org"})

    assert (named.status_code, pattern.status_code, origin.status_code) == (200, 200, 200)
    assert other.status_code == 421


PREFLIGHT = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}


async def test_cors_is_off_by_default(database_url):
    async with replica(database_url) as (_, http):
        preflight = await http.options(LIST, headers=PREFLIGHT)
        plain = await http.get("/healthz", headers={"Origin": "https://app.example.com"})

    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in plain.headers


async def test_cors_allows_exactly_the_configured_origins(database_url):
    async with replica(database_url, cors_allow_origins="https://app.example.com") as (_, http):
        allowed = await http.options(LIST, headers={**PREFLIGHT, "Access-Control-Request-Headers": "authorization"})
        other = await http.options(LIST, headers={**PREFLIGHT, "Origin": "https://evil.example"})

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in other.headers


# -- the command line -----------------------------------------------------------------------------


def test_keys_are_created_with_limits_and_their_limits_can_be_changed(empty_database_url):
    env = environment(DATABASE_URL=empty_database_url, PROMPT_HASH_KEY=TEST_HASH_KEY)
    cli("migrate", env=env)
    created = cli("keys", "create", "batch-job", "--rate-limit", "120", "--max-running", "4", env=env).stdout
    key_id = re.search(r"id:\s+(\S+)", created).group(1)  # type: ignore[union-attr]
    assert "limits: rate/min=120 running=4" in created

    changed = cli("keys", "limits", key_id, "--max-running", "0", env=env).stdout
    listed = cli("keys", "list", env=env).stdout

    assert "rate/min=default running=none" in changed  # a limit left out goes back to the default
    assert "rate/min=default running=none" in listed
    refused = cli("keys", "create", "x", "--rate-limit", "-1", env=env, check=False)
    assert refused.returncode != 0


async def test_absurdly_nested_json_on_mcp_is_refused_without_a_5xx(database_url, db):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        depth = 100_000
        body = (
            '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "run_agent_task", '
            '"arguments": {"prompt": "x", "context": {"a": ' + "[" * depth + "]" * depth + "}}}}"
        )
        answer = await http.post("/mcp", content=body, headers={**alice.headers, **MCP_HEADERS})
        healthy = await http.get(LIST, headers=alice.headers)

    assert answer.status_code < 500
    assert answer.text  # an answer (a JSON-RPC or tool error), not a dropped connection
    assert healthy.status_code == 200
    assert await count_rows(db, "agent_task") == 0
