"""Who may do what in the console: every console route, for every kind of caller, like the API's
matrix (tests/integration/api/test_authz_matrix.py, whose rows are the OpenAPI operations; the
console's routes are not in the OpenAPI document, so they are decided here, and a test checks that
every one has a row). The role rules are the API's, with one difference the console is for: its
task list shows auditors and admins every owner's tasks, as their reads by id already allow."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from app.console import health, keys, records, trail
from app.console import routes as console
from app.domain import Actor, Channel, Role
from app.schemas import HoldCreate
from tests.support.app import Caller, key, replica
from tests.support.console import SIGN_IN, csrf_of, signed_in
from tests.support.routes import RUN

ROUTERS = (console.router, records.router, trail.router, keys.router, health.router)
SIGN = "to sign-in"  # 303 to /console/sign-in: no live session, nothing ran, nothing audited
OK = "ok"  # 200: the page (a task's page shows alice's task)
TASKS = "to the tasks"  # 303 to /console/tasks (after signing in)
REFUSED = "refused"  # 401: the sign-in form again, no session made
HIDE = "not_found"  # 404: exactly what an unknown task id gets
FORB = "forbidden"  # 403 page
INCL = "lists alice's task"
EXCL = "does not list it"
HOLD = "held"  # 303 back to the task, a hold placed on it
FREE = "released"  # 303 back to the task, the hold released
OUT = "signed out"  # 303 to sign-in, the session's row deleted
FILE = "download"  # 200: the NDJSON export, as an attachment
MADE = "key made"  # 200: the page showing the new key, once
KEYS = "to the keys"  # 303 to /console/keys: alice's key changed (limits) or revoked

COLUMNS = ("no session", "revoked", "bob", "alice", "auditor", "admin")
# fmt: off
MATRIX: dict[str, tuple[str, ...]] = {
    #                                        no session revoked bob    alice  auditor admin
    "GET /console":                          (TASKS,   TASKS,  TASKS, TASKS, TASKS,  TASKS),
    "GET /console/sign-in":                  (OK,      OK,     OK,    OK,    OK,     OK),
    "POST /console/sign-in":                 (REFUSED, REFUSED, TASKS, TASKS, TASKS, TASKS),
    "POST /console/sign-out":                (SIGN,    SIGN,   OUT,   OUT,   OUT,    OUT),
    "GET /console/tasks":                    (SIGN,    SIGN,   EXCL,  INCL,  INCL,   INCL),
    "GET /console/tasks/{task_id}":          (SIGN,    SIGN,   HIDE,  OK,    OK,     OK),
    "POST /console/tasks/{task_id}/holds":   (SIGN,    SIGN,   FORB,  FORB,  HOLD,   HOLD),
    "POST /console/holds/{hold_id}/release": (SIGN,    SIGN,   FORB,  FORB,  FREE,   FREE),
    "GET /console/audit":                    (SIGN,    SIGN,   FORB,  FORB,  OK,     OK),
    "GET /console/retention":                (SIGN,    SIGN,   OK,    OK,    OK,     OK),
    "GET /console/audit/export":             (SIGN,    SIGN,   FORB,  FORB,  FILE,   FILE),
    "GET /console/audit/verify":             (SIGN,    SIGN,   FORB,  FORB,  OK,     OK),
    "GET /console/health":                   (SIGN,    SIGN,   OK,    OK,    OK,     OK),
    "GET /console/keys":                     (SIGN,    SIGN,   FORB,  FORB,  FORB,   OK),
    "POST /console/keys":                    (SIGN,    SIGN,   FORB,  FORB,  FORB,   MADE),
    "GET /console/keys/{key_id}":            (SIGN,    SIGN,   FORB,  FORB,  FORB,   OK),
    "POST /console/keys/{key_id}/limits":    (SIGN,    SIGN,   FORB,  FORB,  FORB,   KEYS),
    "POST /console/keys/{key_id}/revoke":    (SIGN,    SIGN,   FORB,  FORB,  FORB,   KEYS),
}
# What the audit log records for a cell with a live session (channel `console`): "action outcome" rows.
RELEASED = ("hold_release ok",)
EXPORTED = ("audit_export ok",)
READ_WITH_TRAIL = ("read ok", "audit_read ok")  # an auditor's or admin's view also reads the task's trail
SIGNED_IN = ("sign_in ok",)
AUDITED: dict[str, tuple[tuple[str, ...], ...]] = {
    #                                         bob               alice         auditor            admin
    "POST /console/sign-in":                 (SIGNED_IN,        SIGNED_IN,    SIGNED_IN,         SIGNED_IN),
    "POST /console/sign-out":                (("sign_out ok",), ("sign_out ok",), ("sign_out ok",), ("sign_out ok",)),
    "GET /console/tasks":                    (("list ok",),     ("list ok",), ("list ok",),      ("list ok",)),
    "GET /console/tasks/{task_id}":          (("read denied",), ("read ok",), READ_WITH_TRAIL,   READ_WITH_TRAIL),
    "POST /console/tasks/{task_id}/holds":   ((),               (),           ("hold_place ok",), ("hold_place ok",)),
    "POST /console/holds/{hold_id}/release": ((),               (),           RELEASED,          RELEASED),
    "GET /console/audit":                    ((),               (),           ("audit_read ok",), ("audit_read ok",)),
    # a client sees the policy only; an auditor's or admin's view reads the purge history too
    "GET /console/retention":                ((),               (),           ("audit_read ok",), ("audit_read ok",)),
    "GET /console/audit/export":             ((),               (),           EXPORTED,          EXPORTED),
    "POST /console/keys":                    ((),               (),           (),                ("key_create ok",)),
    "POST /console/keys/{key_id}/limits":    ((),               (),           (),                ("key_limits ok",)),
    "POST /console/keys/{key_id}/revoke":    ((),               (),           (),                ("key_revoke ok",)),
}
# Without a live session only a sign-in leaves a row: a refused one, with no actor.
AUDITED_WITHOUT_SESSION = {"POST /console/sign-in": ["sign_in denied"]}
# fmt: on


async def audited(db, request_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT action, outcome, channel FROM audit_event WHERE request_id = $1 ORDER BY id", request_id
    )
    assert all(r["channel"] == "console" for r in rows)
    return [f"{r['action']} {r['outcome']}" for r in rows]


async def perform(
    http: httpx.AsyncClient,
    operation: str,
    caller: Caller,
    alice: Caller,
    alice_task: str,
    hold_id: uuid.UUID,
    csrf: str | None,
) -> tuple[httpx.Response, str]:
    method, path = operation.split(" ", 1)
    path = path.replace("{task_id}", alice_task).replace("{hold_id}", str(hold_id))
    path = path.replace("{key_id}", str(alice.key_id))
    params = {"since": "2020-01-01T00:00", "until": "2100-01-01T00:00"} if path.endswith("/export") else None
    request_id = f"console-authz-{uuid.uuid4().hex}"
    headers = {"X-Request-ID": request_id}
    data: dict[str, Any] | None = None
    if path == SIGN_IN and method == "POST":
        form = await http.get(SIGN_IN)
        data = {"api_key": caller.key, "csrf": csrf_of(form.text)}
    elif method == "POST":
        data = {
            "csrf": csrf or "none",
            "reference": "MATTER-AUTHZ",
            "task_id": alice_task,
            "name": "made in the matrix",
            "role": "client",
            "rate_limit_per_minute": "7",
            "store_output": "allowed",
            "confirm": "yes",
        }
    return await http.request(method, path, data=data, params=params, headers=headers), request_id


@pytest.mark.parametrize("operation", list(MATRIX))
async def test_console(database_url, db, operation: str) -> None:
    async with replica(database_url) as (app, shared):
        transport = shared._transport
        for column, expect in zip(COLUMNS, MATRIX[operation], strict=True):
            alice = await key(app)
            alice_task = (await shared.post(RUN, json={"prompt": "hi"}, headers=alice.headers)).json()["task_id"]
            hold = await app.state.components.holds.place(
                Actor(None, None, Channel.CLI), HoldCreate(reference="AUTHZ", task_id=alice_task)
            )
            callers = {
                "bob": await key(app),
                "alice": alice,
                "auditor": await key(app, Role.AUDITOR),
                "admin": await key(app, Role.ADMIN),
                "revoked": alice,
                "no session": Caller(uuid.uuid4(), "ask_" + "N" * 43, Role.CLIENT),
            }
            caller = callers[column]
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                csrf = None
                if column != "no session":
                    csrf = await signed_in(http, caller.key)
                if column == "revoked":
                    await app.state.components.keys.revoke(alice.key_id)
                answer, request_id = await perform(http, operation, caller, alice, alice_task, hold.hold_id, csrf)
            where = f"{operation} | {column}"
            location = answer.headers.get("location")
            match expect:
                case "to sign-in" | "signed out":
                    assert (answer.status_code, location) == (303, SIGN_IN), where
                case "to the tasks":
                    assert (answer.status_code, location) == (303, "/console/tasks"), where
                case "ok":
                    assert answer.status_code == 200, where
                    if "{task_id}" in operation:
                        assert alice_task in answer.text, where
                    if "{key_id}" in operation or operation == "GET /console/keys":
                        assert str(alice.key_id) in answer.text, where
                case "download":
                    assert answer.status_code == 200, where
                    assert answer.headers["content-type"].startswith("application/x-ndjson"), where
                    assert answer.headers["content-disposition"].startswith("attachment"), where
                    assert answer.text.splitlines()[-1].startswith('{"manifest"'), where
                case "key made":
                    assert answer.status_code == 200, where
                    assert "ask_" in answer.text, where  # the new key, shown this once
                    assert answer.headers["cache-control"] == "no-store", where
                case "to the keys":
                    assert (answer.status_code, location) == (303, "/console/keys"), where
                case "refused":
                    assert answer.status_code == 401, where
                case "not_found":
                    assert answer.status_code == 404, where
                case "forbidden":
                    assert answer.status_code == 403, where
                case "lists alice's task" | "does not list it":
                    assert answer.status_code == 200, where
                    assert (alice_task in answer.text) == (expect == INCL), where
                case "held" | "released":
                    assert (answer.status_code, location) == (303, f"/console/tasks/{alice_task}"), where
            held = await db.fetchval(
                "SELECT count(*) FROM legal_hold WHERE task_id = $1 AND released_at IS NULL", uuid.UUID(alice_task)
            )
            assert held == {HOLD: 2, FREE: 0}.get(expect, 1), where
            if expect == OUT:
                assert await db.fetchval("SELECT count(*) FROM console_session WHERE key_id = $1", caller.key_id) == 0
            rows = await audited(db, request_id)
            if column in ("bob", "alice", "auditor", "admin") and operation in AUDITED:
                assert rows == list(AUDITED[operation][("bob", "alice", "auditor", "admin").index(column)]), where
            else:
                assert rows == AUDITED_WITHOUT_SESSION.get(operation, []), where
            revoked = await db.fetchval("SELECT revoked_at IS NOT NULL FROM api_key WHERE id = $1", alice.key_id)
            assert revoked == (column == "revoked" or (expect == KEYS and operation.endswith("/revoke"))), where


def test_the_matrix_has_a_row_for_every_console_route() -> None:
    """A new console route must be added to MATRIX (and so be decided for every caller)."""
    routes = {
        f"{method} {route.path}"
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert routes == set(MATRIX)
    for router in ROUTERS:
        assert all(not route.include_in_schema for route in router.routes if isinstance(route, APIRoute))
