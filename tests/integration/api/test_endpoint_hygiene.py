"""The endpoint's hygiene: request size limits (REST and MCP), DNS-rebinding protection on /mcp
(Host and Origin), CORS off unless configured, absurdly nested JSON refused without a 5xx."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tests.support.app import count_rows, key, replica
from tests.support.routes import LIST, RUN

MCP_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


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
