"""Who may do what: every operation, over REST and MCP, for every kind of caller.

MATRIX below says what each cell answers; one parametrized test per face checks every
cell against a real uvicorn on 127.0.0.1. MCP is spoken by FastMCP's Client over
Streamable HTTP, where a missing, malformed or revoked key is refused by the HTTP layer.
The harness (the server, the MCP connection that records every exchange) is in
tests/support/authz.py.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from enum import StrEnum
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from mcp.shared.exceptions import MCPError

from app.api.mcp_tasks import AgentTasks
from app.domain import Actor, Channel, Role
from app.main import create_app
from app.schemas import HoldCreate
from tests.support.app import running
from tests.support.authz import (
    ALICES_PROMPT,
    Alice,
    Exchange,
    McpOutcome,
    World,
    assert_refused,
    audit_of,
    bearer,
    comparable,
    mcp_connection,
    new_request_id,
    on_loopback,
    perform,
    tool_result,
    try_to_connect,
)
from tests.support.postgres import admin_execute, run_sync, url_for
from tests.support.settings import make_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Expect(StrEnum):
    """What a cell answers. REST: the status and the error body's `code`. MCP: what the Client sees."""

    # REST 401 {"code": "unauthenticated"}; MCP: HTTP 401 from /mcp, both to a client connecting
    # with these credentials and to the operation sent with them by a client that connected as
    # alice. Always with `WWW-Authenticate: Bearer`; nothing runs and nothing is audited.
    DENY = "unauthenticated"
    FORB = "forbidden"  # REST 403 {"code": "forbidden"}; MCP: an error {"code": "forbidden"}
    # REST 404 {"code": "not_found"}; MCP: an error {"code": "not_found"}. Exactly what an unknown
    # task_id gets (see test_another_clients_task_is_indistinguishable_from_an_unknown_one).
    HIDE = "not_found"
    OK = "ok"  # REST 200; MCP: a result. A read shows alice's task; a run succeeds.
    GONE = "erased"  # REST 204; MCP: {"status": "deleted"}. Alice's task is gone.
    INCL = "lists alice's task"  # a page (REST 200 / MCP result) whose items include alice's task
    EXCL = "does not list it"  # a page without it: lists show the caller's own tasks only
    HOLD = "held"  # REST 201: a legal hold on alice's task, placed by the caller
    FREE = "released"  # REST 204: a legal hold on alice's task (placed before), released
    # REST 409 {"code": "already_finished"}; MCP: an error with that code. The caller may cancel
    # alice's task, but it has finished (each cell's task is answered before the cell runs).
    DONE = "already_finished"


DENY, FORB, HIDE, OK, GONE, INCL, EXCL, HOLD, FREE, DONE = Expect

# The callers (columns). Every cell gets a fresh client key "alice" owning a fresh task,
# `{task_id}` below; the malformed credentials are made from alice's key.
COLUMNS = (
    NO_KEY := "no key",  # no Authorization header
    BEARER := "Bearer alone",  # `Authorization: Bearer`, nothing after it
    BASIC := "Basic",  # `Basic base64(alice:<alice's key>)`: the right key, the wrong scheme
    PREFIX := "wrong prefix",  # `Bearer sk-...`: alice's key with another prefix
    GARBAGE := "garbage bytes",  # `Bearer ask_` and bytes that are not ASCII (nor UTF-8)
    REVOKED := "revoked",  # alice's own key, revoked just before (MCP: after her client connected)
    BOB := "bob",  # another client
    ALICE := "alice",  # the owner
    AUDITOR := "auditor",
    ADMIN := "admin",
)

# fmt: off
MATRIX: dict[str, tuple[Expect, ...]] = {
    #                                                no key      Basic       garbage     bob         auditor
    #                                                      Bearer      prefix      revoked     alice       admin
    "POST /tools/run_agent_task":                   (DENY, DENY, DENY, DENY, DENY, DENY, OK,   OK,   OK,   OK),
    "POST /tools/run_agent_task?stream=true":       (DENY, DENY, DENY, DENY, DENY, DENY, OK,   OK,   OK,   OK),
    "GET /resources/get_agent_result/{task_id}":    (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, OK,   OK,   OK),
    "GET /resources/agent_results":                 (DENY, DENY, DENY, DENY, DENY, DENY, EXCL, INCL, EXCL, EXCL),
    "DELETE /resources/get_agent_result/{task_id}": (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, GONE, FORB, GONE),
    "POST /resources/get_agent_result/{task_id}/cancel":
                                                    (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, DONE, FORB, DONE),
    "GET /resources/get_agent_result/{task_id}/webhook":
                                                    (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, OK,   OK,   OK),
    "GET /audit/events":                            (DENY, DENY, DENY, DENY, DENY, DENY, FORB, FORB, OK,   OK),
    "POST /audit/prompt-search":                    (DENY, DENY, DENY, DENY, DENY, DENY, FORB, FORB, INCL, INCL),
    "POST /holds":                                  (DENY, DENY, DENY, DENY, DENY, DENY, FORB, FORB, HOLD, HOLD),
    "GET /holds":                                   (DENY, DENY, DENY, DENY, DENY, DENY, FORB, FORB, OK,   OK),
    "DELETE /holds/{hold_id}":                      (DENY, DENY, DENY, DENY, DENY, DENY, FORB, FORB, FREE, FREE),
    "GET /audit/public-key":                        (DENY, DENY, DENY, DENY, DENY, DENY, FORB, FORB, OK,   OK),
    "GET /audit/seals":                             (DENY, DENY, DENY, DENY, DENY, DENY, FORB, FORB, OK,   OK),
    "GET /audit/export?since=2026-01-01T00:00:00Z&until=2100-01-01T00:00:00Z":
                                                    (DENY, DENY, DENY, DENY, DENY, DENY, FORB, FORB, OK,   OK),
    "GET /retention":                               (DENY, DENY, DENY, DENY, DENY, DENY, OK,   OK,   OK,   OK),
    "GET /models":                                  (DENY, DENY, DENY, DENY, DENY, DENY, OK,   OK,   OK,   OK),
    # The caller's own usage; then alice's, by her key's id (a client may name only its own).
    "GET /usage?month=2026-12":                     (DENY, DENY, DENY, DENY, DENY, DENY, OK,   OK,   OK,   OK),
    "GET /usage?owner_key_id={owner_key_id}":       (DENY, DENY, DENY, DENY, DENY, DENY, FORB, OK,   OK,   OK),
    "GET /metrics":                                 (DENY, DENY, DENY, DENY, DENY, DENY, FORB, FORB, OK,   OK),
    "GET /healthz":                                 (OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK),
    "GET /readyz":                                  (OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK),
    "GET /openapi.json":                            (OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK),
    "GET /docs":                                    (OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK),
    "GET /redoc":                                   (OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK,   OK),
    "MCP tool run_agent_task":                      (DENY, DENY, DENY, DENY, DENY, DENY, OK,   OK,   OK,   OK),
    "MCP tool get_agent_result(task_id)":           (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, OK,   OK,   OK),
    "MCP tool list_agent_results":                  (DENY, DENY, DENY, DENY, DENY, DENY, EXCL, INCL, EXCL, EXCL),
    "MCP tool delete_agent_result(task_id)":        (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, GONE, FORB, GONE),
    "MCP tool cancel_agent_task(task_id)":          (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, DONE, FORB, DONE),
    "MCP tool get_agent_webhook(task_id)":          (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, OK,   OK,   OK),
    "MCP tool search_tasks_by_prompt":              (DENY, DENY, DENY, DENY, DENY, DENY, FORB, FORB, INCL, INCL),
    "MCP tool list_models":                         (DENY, DENY, DENY, DENY, DENY, DENY, OK,   OK,   OK,   OK),
    "MCP resource agent-result://{task_id}":        (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, OK,   OK,   OK),
    # The MCP tasks extension (app/api/mcp_tasks.py): a run answered with a task handle, and the
    # extension's methods on alice's (finished) task. A cancel of it is acknowledged, as the spec says.
    "MCP task run_agent_task":                      (DENY, DENY, DENY, DENY, DENY, DENY, OK,   OK,   OK,   OK),
    "MCP task tasks/get(taskId)":                   (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, OK,   OK,   OK),
    "MCP task tasks/cancel(taskId)":                (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, OK,   FORB, OK),
    "MCP task tasks/update(taskId)":                (DENY, DENY, DENY, DENY, DENY, DENY, HIDE, OK,   OK,   OK),
}

# What the audit log records for a request with a valid key, over REST and MCP alike (channel
# `rest` or `mcp`): "action outcome", or None for no row. The other operations record nothing,
# and refused credentials (the first six columns) never leave a row.
AUDITED: dict[str, tuple[str | None, ...]] = {
    #                bob              alice        auditor          admin
    "run":          ("create ok",     "create ok", "create ok",     "create ok"),
    "read":         ("read denied",   "read ok",   "read ok",       "read ok"),
    "list":         ("list ok",       "list ok",   "list ok",       "list ok"),
    "delete":       ("delete denied", "delete ok", "delete denied", "delete ok"),
    "cancel":       ("cancel denied", "cancel finished", "cancel denied", "cancel finished"),
    "webhook":      ("webhook_read denied", "webhook_read ok", "webhook_read ok", "webhook_read ok"),
    "audit log":    (None,            None,        "audit_read ok", "audit_read ok"),
    "search":       (None,            None,        "prompt_search ok", "prompt_search ok"),
    "hold place":   (None,            None,        "hold_place ok", "hold_place ok"),
    "hold release": (None,            None,        "hold_release ok", "hold_release ok"),
    "export":       (None,            None,        "audit_export ok", "audit_export ok"),
    "usage of alice": (None,          None,        "usage_read ok", "usage_read ok"),  # her own: not audited
}
# fmt: on

KEYED = (BOB, ALICE, AUDITOR, ADMIN)
# The console's HTML routes are not in the OpenAPI document: their matrix is tests/integration/console/test_authz.py.
DOCUMENTATION = ("GET /openapi.json", "GET /docs", "GET /redoc")


def cells(face: str) -> list[Any]:
    return [
        pytest.param(operation, column, expect, id=f"{operation} | {column}")
        for operation, row in MATRIX.items()
        if operation.startswith("MCP ") == (face == "mcp")
        for column, expect in zip(COLUMNS, row, strict=True)
    ]


def kind_of(operation: str) -> str | None:
    """The AUDITED row of a MATRIX row, if any."""
    for kind, marks in (
        ("cancel", ("/cancel", "cancel_agent_task")),
        ("webhook", ("/webhook", "get_agent_webhook")),
        ("read", ("tasks/get", "tasks/update")),
        ("hold place", ("POST /holds",)),
        ("hold release", ("DELETE /holds/",)),
        ("run", ("run_agent_task",)),
        ("delete", ("DELETE ", "delete_agent_result")),
        ("read", ("get_agent_result", "agent-result://")),
        ("list", ("agent_results",)),
        ("audit log", ("/audit/events",)),
        ("export", ("/audit/export",)),
        ("usage of alice", ("owner_key_id=",)),
        ("search", ("prompt-search", "search_tasks_by_prompt")),
    ):
        if any(mark in operation for mark in marks):
            return kind
    return None


# -- the server and the callers --------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_database_url(pg_server: str, template_database: str) -> Iterator[str]:
    """One database for the module (every cell makes its own alice and task, so cells stay apart)."""
    name = f"agent_authz_{uuid.uuid4().hex[:12]}"
    run_sync(admin_execute(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    yield url_for(pg_server, name)
    run_sync(admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(matrix_database_url: str) -> AsyncIterator[World]:
    """The app under uvicorn on a free 127.0.0.1 port (auth_cache_seconds=0, as everywhere in the tests)."""
    app = create_app(make_settings(matrix_database_url))
    async with running(app), on_loopback(app) as base:
        conn = await asyncpg.connect(matrix_database_url)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                found = World(base, app.state.components, http, conn)
                for column, role in ((BOB, Role.CLIENT), (AUDITOR, Role.AUDITOR), (ADMIN, Role.ADMIN)):
                    found.keys[column] = await found.new_key(role)
                yield found
        finally:
            await conn.close()


def credentials_of(world: World, column: str, alice: Alice) -> dict[str, Any]:
    """The Authorization header (if any) a column's caller sends."""
    if column == NO_KEY:
        return {}
    if column == BEARER:
        return {"Authorization": "Bearer"}
    if column == BASIC:
        return {"Authorization": "Basic " + base64.b64encode(f"alice:{alice.key}".encode()).decode()}
    if column == PREFIX:
        return bearer("sk-" + alice.key.removeprefix("ask_"))
    if column == GARBAGE:
        return {"Authorization": b"Bearer ask_\xff\xfe\xc3\x28\xa0\xa1\xe2\x82\x80\xf0\x9f\x92" + b"\xbd" * 40}
    if column in (REVOKED, ALICE):
        return bearer(alice.key)
    return bearer(world.keys[column].key)


def key_id_of(world: World, column: str, alice: Alice) -> uuid.UUID:
    return alice.key_id if column == ALICE else world.keys[column].key_id


# -- the cells ------------------------------------------------------------------------------


@pytest.mark.parametrize(("operation", "column", "expect"), cells("rest"))
async def test_rest(world: World, operation: str, column: str, expect: Expect) -> None:
    alice = await world.new_alice()
    if column == REVOKED:
        await world.service.keys.revoke(alice.key_id)
    method, path = operation.split(" ", 1)
    request_id = new_request_id()
    tasks_before = await world.task_count()
    if "{hold_id}" in path:  # a hold on alice's task to release, placed from the command line
        hold = await world.service.holds.place(
            Actor(None, None, Channel.CLI), HoldCreate(reference="AUTHZ", task_id=alice.task_id)
        )
        path = path.replace("{hold_id}", str(hold.hold_id))
    path = path.replace("{owner_key_id}", str(alice.key_id))
    body_of_post = (
        {"reference": "AUTHZ", "task_id": alice.task_id}
        if path == "/holds"
        else {"prompt": ALICES_PROMPT if "search" in path else "hello"}
    )

    response = await world.http.request(
        method,
        path.replace("{task_id}", alice.task_id),
        json=body_of_post if method == "POST" and not path.endswith("/cancel") else None,
        headers={**credentials_of(world, column, alice), "X-Request-ID": request_id},
    )

    is_json = response.headers.get("content-type", "").startswith("application/json")
    body: Any = response.json() if is_json else None
    match expect:
        case Expect.DENY:
            assert response.status_code == 401, response.text
            assert body == {"code": "unauthenticated", "message": body["message"]}
            assert response.headers["www-authenticate"] == "Bearer"
        case Expect.FORB:
            assert (response.status_code, body["code"]) == (403, "forbidden"), response.text
        case Expect.DONE:
            assert (response.status_code, body["code"]) == (409, "already_finished"), response.text
        case Expect.HIDE:
            assert (response.status_code, body) == (404, {"code": "not_found", "message": "no such task"})
        case Expect.OK:
            assert response.status_code == 200, response.text
            if "{task_id}" in path:
                assert body["task_id"] == alice.task_id
            if path == "/tools/run_agent_task":
                assert body["status"] == "succeeded"
            if path == "/tools/run_agent_task?stream=true":  # server-sent events, the result last
                assert response.headers["content-type"].startswith("text/event-stream")
                last = [line for line in response.text.splitlines() if line.startswith("data: ")][-1]
                assert json.loads(last.removeprefix("data: "))["status"] == "succeeded"
            if operation in DOCUMENTATION:
                assert response.content
            if path == "/metrics":
                assert "agent_tasks_total" in response.text
            if path.startswith("/usage"):  # whose: alice's when named, else the caller's own
                owner = alice.key_id if "owner_key_id" in path else key_id_of(world, column, alice)
                assert body["owner_key_id"] == str(owner)
                if owner == alice.key_id and "month" not in path:
                    assert [m["model"] for m in body["models"]] == ["offline:echo"]
            if path == "/models":
                assert "offline" in [provider["name"] for provider in body["providers"]]
            if path == "/audit/public-key":
                assert response.text.startswith("-----BEGIN PUBLIC KEY-----")
            if path.startswith("/audit/export"):
                assert response.headers["content-type"] == "application/x-ndjson"
                assert json.loads(response.text.splitlines()[-1])["type"] == "manifest"
        case Expect.GONE | Expect.FREE:
            assert (response.status_code, response.content) == (204, b"")
        case Expect.HOLD:
            assert response.status_code == 201, response.text
            assert (body["task_id"], body["created_by"]) == (alice.task_id, str(key_id_of(world, column, alice)))
        case Expect.INCL | Expect.EXCL:
            assert response.status_code == 200, response.text
            listed = [item["task_id"] for item in body["items"]]
            assert (alice.task_id in listed) == (expect is INCL)
    await check_side_effects(world, operation, column, expect, alice, request_id, tasks_before, channel="rest")


@pytest.mark.parametrize(("operation", "column", "expect"), cells("mcp"))
async def test_mcp(world: World, operation: str, column: str, expect: Expect) -> None:
    alice = await world.new_alice()
    request_id = new_request_id()
    tasks_before = await world.task_count()
    credentials = credentials_of(world, column, alice)

    tasks = operation.startswith("MCP task ")
    if column in KEYED:
        async with mcp_connection(world, credentials, request_id, tasks=tasks) as mcp:
            outcome = await perform(mcp, operation, alice.task_id)
        opening: list[Exchange] = []
    else:
        # The operation itself, sent with these credentials by a client that connected as alice
        # (for "revoked": alice's key, revoked once connected): the HTTP layer must refuse it.
        async with mcp_connection(world, bearer(alice.key), request_id, tasks=tasks) as mcp:
            if column == REVOKED:
                await world.service.keys.revoke(alice.key_id)
            else:
                mcp.use_credentials(credentials)
            outcome = await perform(mcp, operation, alice.task_id)
        # And a client holding these credentials cannot even connect.
        opening = await try_to_connect(world, credentials)

    match expect:
        case Expect.DENY:
            assert outcome.kind == "http", outcome
            assert_refused(outcome.status, outcome.www_authenticate)
            assert opening, "a client with these credentials tried to connect"
            for answer in opening:  # the opening request (discovery or initialize), and nothing after it
                assert_refused(answer.status, answer.www_authenticate)
        case Expect.FORB | Expect.HIDE | Expect.DONE:
            assert outcome.kind == "error", outcome
            assert outcome.error is not None
            assert outcome.error["code"] == expect.value
            if expect is HIDE:
                assert outcome.error == {"code": "not_found", "message": "no such task"}
        case Expect.OK:
            assert outcome.kind == "result", outcome
            if "task_id" in operation:
                assert outcome.data["task_id"] == alice.task_id
            if "run_agent_task" in operation and not tasks:
                assert outcome.data["status"] == "succeeded"
            if tasks:  # a handle (working, or completed from the cache), a task, or an acknowledgement
                assert outcome.data["resultType"] == ("task" if "run_agent_task" in operation else "complete")
            if "tasks/get" in operation:
                assert (outcome.data["taskId"], outcome.data["status"]) == (alice.task_id, "completed")
        case Expect.GONE:
            assert outcome.kind == "result", outcome
            assert outcome.data == {"task_id": alice.task_id, "status": "deleted"}
        case Expect.INCL | Expect.EXCL:
            assert outcome.kind == "result", outcome
            listed = [item["task_id"] for item in outcome.data["items"]]
            assert (alice.task_id in listed) == (expect is INCL)
    await check_side_effects(world, operation, column, expect, alice, request_id, tasks_before, channel="mcp")


async def check_side_effects(
    world: World,
    operation: str,
    column: str,
    expect: Expect,
    alice: Alice,
    request_id: str,
    tasks_before: int,
    *,
    channel: str,
) -> None:
    """What the cell left behind: audit rows, tasks made or erased."""
    audited = await world.audited(request_id)
    kind = kind_of(operation)
    if column in KEYED:
        row = AUDITED[kind][KEYED.index(column)] if kind is not None else None
        key_id = key_id_of(world, column, alice)
        if kind == "search" and audited:  # the search's own row, then one per task it found
            assert set(audited[1:]) <= {("prompt_search", "ok", channel, key_id)}
            audited = audited[:1]
        assert audited == ([(*row.split(), channel, key_id)] if row is not None else [])
    else:
        assert audited == [], "a request without a valid key never reaches the service"
    if expect is DENY:
        assert await world.task_count() == tasks_before
    if "task_id" in operation:
        assert await world.task_exists(alice.task_id) == (expect is not GONE)


# -- beyond the cells -------------------------------------------------------------------------


async def test_another_clients_task_is_indistinguishable_from_an_unknown_one(world: World) -> None:
    alice, bob = await world.new_alice(), world.keys[BOB]
    unknown = str(uuid.uuid4())

    # REST, byte for byte (the request id and the date aside).
    seen: dict[str, list[Any]] = {}
    for target in (alice.task_id, unknown):
        path = f"/resources/get_agent_result/{target}"
        read = await world.http.get(path, headers=bearer(bob.key))
        erase = await world.http.delete(path, headers=bearer(bob.key))
        seen[target] = [comparable(read), comparable(erase)]
    assert seen[alice.task_id] == seen[unknown]
    assert [answer[0] for answer in seen[unknown]] == [404, 404]

    # MCP: the tools' results and the resource's error, in full.
    async with mcp_connection(world, bearer(bob.key), new_request_id()) as mcp:
        for target in (alice.task_id, unknown):
            tool_read = await mcp.client.call_tool("get_agent_result", {"task_id": target}, raise_on_error=False)
            tool_erase = await mcp.client.call_tool("delete_agent_result", {"task_id": target}, raise_on_error=False)
            with pytest.raises(MCPError) as resource:
                await mcp.client.read_resource(f"agent-result://{target}")
            seen[target] = [tool_result(tool_read), tool_result(tool_erase), resource.value.error.model_dump()]
    assert seen[alice.task_id] == seen[unknown]
    assert json.loads(seen[unknown][0]["content"][0]["text"]) == {"code": "not_found", "message": "no such task"}
    assert json.loads(seen[unknown][2]["message"])["code"] == "not_found"

    # Only the audit log knows the difference: a denied attempt is not an unknown id.
    denied, not_found = [("read", "denied"), ("delete", "denied")], [("read", "not_found"), ("delete", "not_found")]
    assert await audit_of(world, alice.task_id, bob, "rest") == denied
    assert await audit_of(world, unknown, bob, "rest") == not_found
    # Over MCP: the tool's read, the tool's delete, then the resource's read.
    assert await audit_of(world, alice.task_id, bob, "mcp") == [*denied, ("read", "denied")]
    assert await audit_of(world, unknown, bob, "mcp") == [*not_found, ("read", "not_found")]
    assert await world.task_exists(alice.task_id)


async def test_every_mcp_request_acts_as_the_key_it_carries(world: World) -> None:
    """No caller is remembered per connection: a client that connected as alice and then sends
    bob's key is bob, for that request."""
    alice = await world.new_alice()
    request_id = new_request_id()
    async with mcp_connection(world, bearer(alice.key), request_id) as mcp:
        mcp.use_credentials(bearer(world.keys[BOB].key))
        as_bob = await perform(mcp, "MCP tool delete_agent_result(task_id)", alice.task_id)

    assert as_bob == McpOutcome("error", error={"code": "not_found", "message": "no such task"})
    assert await world.audited(request_id) == [("delete", "denied", "mcp", world.keys[BOB].key_id)]
    assert await world.task_exists(alice.task_id)


async def test_the_matrix_has_a_row_for_every_operation(world: World) -> None:
    """A new route, tool or resource must be added to MATRIX (and so be decided for every caller)."""
    schema = (await world.http.get("/openapi.json")).json()
    documented = {f"{method.upper()} {path}" for path, operations in schema["paths"].items() for method in operations}
    # A row may carry the query its route needs (the export's window); the route is the part before it.
    rest_rows = {operation.split("?")[0] for operation in MATRIX if not operation.startswith("MCP ")}
    assert rest_rows == documented | set(DOCUMENTATION)

    async with mcp_connection(world, bearer(world.keys[ADMIN].key), new_request_id()) as mcp:
        tools = {tool.name for tool in await mcp.client.list_tools()}
        templates = {template.uri_template for template in await mcp.client.list_resource_templates()}
        resources = await mcp.client.list_resources()
        prompts = await mcp.client.list_prompts()
    mcp_rows = {
        operation.split()[2].removesuffix("(task_id)")
        for operation in MATRIX
        if operation.startswith(("MCP tool ", "MCP resource "))
    }
    assert mcp_rows == tools | templates
    tasks = [operation for operation in MATRIX if operation.startswith("MCP task ")]
    task_rows = {operation.split()[2].removesuffix("(taskId)") for operation in tasks}
    extension = AgentTasks(world.service.service, lambda: None, lambda: None)  # type: ignore[arg-type,return-value]
    assert task_rows == {"run_agent_task"} | {binding.method for binding in extension.methods()}
    assert resources == []
    assert prompts == []
