"""MCP input errors keep the REST error contract: `{code, message, details}`, naming the field
and the rule, never a value and never a name the caller made up.

Agent frameworks feed a tool's error back to the model and into their traces, so an error
that quoted the arguments would carry a mistyped prompt on.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import httpx2
import pytest
from fastmcp import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from app.main import __version__, create_app
from tests.support.app import count_rows, key, replica, running
from tests.support.authz import on_loopback
from tests.support.mcp import error_of, mcp_as
from tests.support.settings import make_settings

SECRET = "SECRET-MCP-ARGUMENT-7f3a"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({"prompt": {"text": SECRET}}, "prompt", id="prompt an object"),
        pytest.param({"prompt": [SECRET]}, "prompt", id="prompt an array"),
        pytest.param({"prompt": "x", "retention_days": SECRET}, "retention_days", id="retention_days text"),
        pytest.param({"prompt": "x", "retention_days": -1}, "retention_days", id="retention_days below range"),
        pytest.param({"prompt": "x", "idempotency_key": SECRET + " spaced"}, "idempotency_key", id="pattern"),
        pytest.param({"prompt": "x", "cache": SECRET}, "cache", id="cache text"),
        pytest.param({"prompt": "x", "context": SECRET}, "context", id="context text"),
        pytest.param({"prompt": "x", "params": {"temperature": SECRET}}, "params", id="nested param"),
        pytest.param({"prompt": "x", "template": "../" + SECRET}, "template", id="template pattern"),
        pytest.param({}, "prompt", id="missing prompt"),
    ],
)
async def test_a_bad_tool_argument_is_a_validation_error_that_quotes_nothing(app_service, alice, db, arguments, field):
    async with mcp_as(app_service, alice) as mcp:
        result = await mcp.call_tool("run_agent_task", arguments, raise_on_error=False)

    error = error_of(result)
    assert error["code"] == "validation_error"
    assert field in error["message"]
    assert any(field in detail["loc"] for detail in error["details"])
    assert SECRET not in result.content[0].text
    assert "input_value" not in result.content[0].text
    assert await count_rows(db, "agent_task") == 0


async def test_an_unknown_argument_is_refused_without_naming_it(app_service, alice, db):
    invented = f"bogus_{SECRET.replace('-', '_')}"
    async with mcp_as(app_service, alice) as mcp:
        result = await mcp.call_tool("run_agent_task", {"prompt": "x", invented: SECRET}, raise_on_error=False)

    error = error_of(result)
    assert error["code"] == "validation_error"
    assert "unknown argument" in error["message"]
    assert invented not in result.content[0].text
    assert SECRET not in result.content[0].text
    assert await count_rows(db, "agent_task") == 0


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        pytest.param("list_agent_results", {"limit": 0}, id="limit below range"),
        pytest.param("list_agent_results", {"limit": SECRET}, id="limit text"),
        pytest.param("get_agent_result", {"task_id": 42}, id="task_id a number"),
        pytest.param("get_agent_result", {}, id="task_id missing"),
        pytest.param("delete_agent_result", {"task_id": {"id": SECRET}}, id="task_id an object"),
    ],
)
async def test_every_tool_answers_bad_arguments_the_same_way(app_service, alice, tool, arguments):
    async with mcp_as(app_service, alice) as mcp:
        result = await mcp.call_tool(tool, arguments, raise_on_error=False)

    assert error_of(result)["code"] == "validation_error"
    assert SECRET not in result.content[0].text


# -- null means the default --------------------------------------------------------------------


async def test_null_for_every_optional_argument_means_its_default(app_service, alice):
    """What strict-mode frameworks (openai-agents' strict function tools) send for unset arguments."""
    nulls: dict[str, Any] = {
        "context": None,
        "template": None,
        "model": None,
        "params": None,
        "cache": None,
        "retention_days": None,
        "idempotency_key": None,
        "wait": None,
    }
    async with mcp_as(app_service, alice) as mcp:
        ran = await mcp.call_tool("run_agent_task", {"prompt": "hello", **nulls})
        listed = await mcp.call_tool("list_agent_results", {"cursor": None, "limit": None})

    assert ran.structured_content["status"] == "succeeded"  # waited: wait's default
    assert ran.structured_content["context"] == {}
    assert [item["task_id"] for item in listed.structured_content["items"]] == [ran.structured_content["task_id"]]


async def test_the_tool_schemas_say_that_optional_arguments_take_null(app_service, alice):
    async with mcp_as(app_service, alice) as mcp:
        tools = {t.name: t.input_schema for t in await mcp.list_tools()}

    run = tools["run_agent_task"]
    for name in ("cache", "wait", "context", "params", "retention_days"):
        types = {option.get("type") for option in run["properties"][name].get("anyOf", [run["properties"][name]])}
        assert "null" in types, name
    limit = tools["list_agent_results"]["properties"]["limit"]
    assert "null" in {option.get("type") for option in limit.get("anyOf", [limit])}


# -- forged cursors ------------------------------------------------------------------------------


def task_cursor(when: str) -> str:
    """A cursor in the service's own format, dated `when`."""
    return base64.urlsafe_b64encode(f"{when}|{uuid.uuid4()}".encode()).decode().rstrip("=")


FORGED_TASK_CURSORS = [
    pytest.param(task_cursor("9999-12-31T23:59:59-05:00"), id="year 9999"),
    pytest.param(task_cursor("0001-01-01T00:00:00+05:00"), id="year 1"),
    pytest.param(task_cursor("9999-12-31T23:59:59+00:00"), id="the last instant"),
    pytest.param("²", id="superscript two"),
    pytest.param("MDAwMS0wMS0wMQ", id="a date alone"),
]


@pytest.mark.parametrize("cursor", FORGED_TASK_CURSORS)
async def test_a_forged_cursor_on_the_list_tool_is_invalid_cursor(app_service, alice, cursor):
    async with mcp_as(app_service, alice) as mcp:
        result = await mcp.call_tool("list_agent_results", {"cursor": cursor}, raise_on_error=False)

    assert error_of(result)["code"] == "invalid_cursor"


# -- the transport: JSON-RPC errors, authentication, identity --------------------------------------

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT_PARAMS = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"jsonrpc": "1.0", "id": 1, "method": SECRET, "params": {}}, id="jsonrpc 1.0"),
        pytest.param([{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"p": SECRET}}] * 2, id="batch"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "method": [SECRET]}, id="method an array"),
        pytest.param(SECRET, id="a bare string"),
    ],
)
async def test_an_invalid_json_rpc_message_is_a_validation_error_that_quotes_nothing(database_url, body):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        answer = await http.post("/mcp", json=body, headers={**alice.headers, **MCP_HEADERS})

    assert answer.status_code == 400
    error = answer.json()
    assert error["code"] == "validation_error"
    assert error["message"]
    assert SECRET not in answer.text


async def test_a_body_that_is_not_json_is_a_validation_error_that_quotes_nothing(database_url):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        body = b'{"jsonrpc": "2.0", "' + SECRET.encode()
        answer = await http.post("/mcp", content=body, headers={**alice.headers, **MCP_HEADERS})

    assert answer.status_code == 400
    assert answer.json()["code"] == "validation_error"
    assert SECRET not in answer.text


@pytest.mark.parametrize("authorization", [None, "Bearer ask_not-a-real-key", "Basic dXNlcjpwYXNz"])
async def test_a_missing_or_wrong_key_is_our_401_that_starts_no_oauth_flow(database_url, authorization):
    headers = {**MCP_HEADERS, **({"Authorization": authorization} if authorization else {})}
    async with replica(database_url) as (_, http):
        answer = await http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}, headers=headers
        )

    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthenticated"
    assert answer.json()["error"]["code"] == -32001  # also a JSON-RPC error response, for MCP clients
    assert "API key" in answer.json()["message"]
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer")
    for oauth_hint in ("invalid_token", "resource_metadata", "error_description", "register"):
        assert oauth_hint not in challenge
    assert "register" not in answer.text


async def test_the_mcp_sdk_shows_the_user_that_the_key_is_wrong(database_url):
    """The SDK ignores a non-JSON-RPC error body and says only "Server returned an error
    response"; ours is also a JSON-RPC error, so the SDK shows our message."""
    app = create_app(make_settings(database_url))
    async with running(app), on_loopback(app) as base:
        refused = await _initialize_with_a_wrong_key(f"{base}/mcp")

    [error] = [e for e in _leaves(refused) if isinstance(e, MCPError)]
    assert str(error).startswith("unauthenticated: a valid API key is required")


async def _initialize_with_a_wrong_key(url: str) -> BaseException:
    """What the SDK raises (wrapped in its task groups) when initializing with a wrong key."""
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer ask_not-a-real-key"}) as http:
        try:
            async with streamable_http_client(url, http_client=http) as (read, write, *_):
                async with ClientSession(read, write) as session:
                    await session.initialize()
        except BaseException as refused:
            return refused
    raise AssertionError("initialize succeeded with a wrong key")


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def test_server_info_carries_the_service_version(database_url):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        answer = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS},
            headers={**alice.headers, **MCP_HEADERS},
        )

    text = answer.text
    payload = json.loads(text[text.index("{") :].splitlines()[0]) if "data:" in text else answer.json()
    assert payload["result"]["serverInfo"] == {"name": "agent-service", "version": __version__}


async def test_where_an_oauth_client_looks_after_a_401_it_reads_that_the_server_takes_api_keys(database_url):
    """What MCP clients fetch after any 401 (protected-resource and authorization-server metadata,
    then Dynamic Client Registration): a 404 saying there is no OAuth here, and what to send."""
    async with replica(database_url) as (_, http):
        refused = await http.post("/mcp", json={}, headers={"Authorization": "Bearer ask_not-a-real-key"})
        answers = [
            await http.get("/.well-known/oauth-protected-resource/mcp"),
            await http.get("/.well-known/oauth-protected-resource"),
            await http.get("/.well-known/oauth-authorization-server"),
            await http.get("/.well-known/openid-configuration"),
            await http.post("/register", json={"client_name": "inspector", "redirect_uris": ["http://x/cb"]}),
        ]

    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"  # no resource_metadata to go and fetch
    for answer in answers:
        assert answer.status_code == 404
        assert answer.json()["code"] == "oauth_not_supported"
        assert "API key" in answer.json()["message"]
        assert "inspector" not in answer.text


MODERN = "2026-07-28"  # the single-exchange protocol: no initialize, errors carry their own HTTP status


def modern_request(method: str, version: str = MODERN) -> tuple[dict[str, Any], dict[str, str]]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": {"_meta": meta}}
    return body, {**MCP_HEADERS, "mcp-protocol-version": version, "mcp-method": method}


async def test_protocol_errors_of_the_2026_transport_say_what_they_are_without_the_name_sent(database_url):
    async with replica(database_url) as (app, http):
        alice = await key(app)

        async def send(method: str, version: str = MODERN) -> httpx.Response:
            body, headers = modern_request(method, version)
            return await http.post("/mcp", json=body, headers={**alice.headers, **headers})

        unknown = await send("secretword/list")
        unsupported = await send("tools/list", version="2099-01-01")
        listed = await send("tools/list")

    assert listed.status_code == 200
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "unknown_method"
    assert unknown.json()["error"]["code"] == -32601  # the JSON-RPC code a client classifies by
    assert "session" not in unknown.text  # not the legacy transport's "no such session"
    assert "secretword" not in unknown.text
    assert unsupported.status_code == 400
    assert unsupported.json()["code"] == "unsupported_protocol_version"
    assert MODERN in unsupported.json()["message"]
    assert "2099" not in unsupported.text


async def test_the_fastmcp_client_reads_an_unknown_method_as_such(database_url):
    """FastMCP 4's client speaks 2026-07-28, where `ping` is no longer a method: it is told so."""
    async with replica(database_url) as (app, _):
        alice = await key(app)
        async with on_loopback(app) as base, Client(f"{base}/mcp", auth=alice.key) as client:
            with pytest.raises(MCPError) as refused:
                await client.ping()
            tools = await client.list_tools()

    assert str(refused.value).startswith("unknown_method: an MCP method this server does not offer")
    assert "run_agent_task" in {tool.name for tool in tools}
