"""REST through the ASGI app, on a real PostgreSQL: the contract's routes end to end."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.support.app import Caller, count_rows
from tests.support.routes import AUDIT, GET, LIST, RUN
from tests.support.settings import TEST_HASH_KEY


async def run(client: httpx.AsyncClient, caller: Caller, **body: Any) -> dict[str, Any]:
    body.setdefault("prompt", "What is the capital of France?")
    response = await client.post(RUN, json=body, headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def parse_ts(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value)


async def test_a_task_runs_and_returns_its_result(client, alice):
    result = await run(client, alice, prompt="What is the capital of France?", context={"conversation": "c-1"})

    assert result["status"] == "succeeded"
    assert result["output"].startswith("[offline provider")
    assert result["error"] is None
    assert result["model"] == "offline:echo"
    assert result["template"] is None
    assert result["context"] == {"conversation": "c-1"}
    assert result["cached"] is False
    assert result["usage"]["total_tokens"] == result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]
    assert uuid.UUID(result["task_id"])
    # Bound to its owner: HMAC(HMAC(key, "owner:" + owner id), prompt).
    owner_key = hmac.new(TEST_HASH_KEY.encode(), f"owner:{alice.key_id}".encode(), hashlib.sha256).digest()
    expected_hash = hmac.new(owner_key, b"What is the capital of France?", hashlib.sha256).hexdigest()
    assert result["prompt_hash"] == expected_hash
    assert result["created_at"].endswith("Z")
    assert result["expires_at"].endswith("Z")
    lifetime = parse_ts(result["expires_at"]) - parse_ts(result["created_at"])
    assert lifetime == timedelta(days=30)


async def test_the_result_reads_back_by_task_id(client, alice):
    created = await run(client, alice)
    read = await client.get(GET.format(created["task_id"]), headers=alice.headers)
    assert read.status_code == 200
    assert read.json() == created


async def test_each_read_leaves_one_audit_event_with_the_request_id(client, alice, db):
    created = await run(client, alice)
    read = await client.get(GET.format(created["task_id"]), headers={**alice.headers, "X-Request-ID": "req-42"})

    assert read.headers["x-request-id"] == "req-42"
    events = await db.fetch(
        "SELECT actor_id, actor_role, channel, outcome, request_id FROM audit_event WHERE action = 'read'"
    )
    assert [dict(e) for e in events] == [
        {"actor_id": alice.key_id, "actor_role": "client", "channel": "rest", "outcome": "ok", "request_id": "req-42"}
    ]


async def test_a_request_id_is_made_when_the_caller_sends_none_or_a_bad_one(client, alice):
    plain = await client.get("/healthz")
    weird = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert len(plain.headers["x-request-id"]) == 32
    assert weird.headers["x-request-id"] != "bad id with spaces"


async def test_a_shorter_retention_is_honoured(client, alice):
    result = await run(client, alice, retention_days=0.5)
    assert parse_ts(result["expires_at"]) - parse_ts(result["created_at"]) == timedelta(hours=12)


async def test_a_retention_longer_than_the_server_maximum_is_refused(client, alice, db):
    response = await client.post(RUN, json={"prompt": "x", "retention_days": 31}, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["code"] == "retention_too_long"
    assert await count_rows(db, "agent_task") == 0


async def test_params_are_accepted_within_their_ranges(client, alice):
    result = await run(client, alice, params={"temperature": 0.2, "max_tokens": 50, "top_p": 1})
    assert result["status"] == "succeeded"


async def test_an_unknown_provider_names_the_valid_choices(client, alice):
    response = await client.post(RUN, json={"prompt": "x", "model": "nope:large"}, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_model"
    assert "offline" in response.json()["message"]


# -- listing ---------------------------------------------------------------------------------


async def test_listing_shows_own_tasks_newest_first_without_outputs(client, alice, bob):
    mine = [await run(client, alice, prompt=f"question {i}") for i in range(3)]
    await run(client, bob)

    response = await client.get(LIST, headers=alice.headers)
    assert response.status_code == 200
    page = response.json()
    assert [item["task_id"] for item in page["items"]] == [t["task_id"] for t in reversed(mine)]
    assert all("output" not in item for item in page["items"])
    assert page["next_cursor"] is None


async def test_listing_pages_with_a_cursor(client, alice):
    created = [await run(client, alice, prompt=f"q{i}") for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(LIST, params=params, headers=alice.headers)).json()
        pages += 1
        seen += [item["task_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [t["task_id"] for t in reversed(created)]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": 0}, "validation_error"),
        ({"limit": 101}, "validation_error"),
        ({"limit": "many"}, "validation_error"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"cursor": "MjAyNnxub3BlfG5vcGU"}, "invalid_cursor"),
    ],
)
async def test_bad_paging_parameters_are_422(client, alice, params, code):
    response = await client.get(LIST, params=params, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["code"] == code


# -- erasing ------------------------------------------------------------------------------


async def test_delete_erases_the_row_and_a_second_delete_is_404(client, alice, db):
    created = await run(client, alice)
    first = await client.delete(GET.format(created["task_id"]), headers=alice.headers)
    second = await client.delete(GET.format(created["task_id"]), headers=alice.headers)

    assert first.status_code == 204
    assert first.content == b""
    assert second.status_code == 404
    assert await count_rows(db, "agent_task") == 0
    assert (await client.get(GET.format(created["task_id"]), headers=alice.headers)).status_code == 404
    outcomes = await db.fetch("SELECT outcome FROM audit_event WHERE action = 'delete' ORDER BY id")
    assert [o["outcome"] for o in outcomes] == ["ok", "not_found"]


async def test_an_admin_may_erase_any_task_an_auditor_may_not(client, alice, auditor, admin):
    created = await run(client, alice)
    by_auditor = await client.delete(GET.format(created["task_id"]), headers=auditor.headers)
    by_admin = await client.delete(GET.format(created["task_id"]), headers=admin.headers)
    assert by_auditor.status_code == 403
    assert by_auditor.json()["code"] == "forbidden"
    assert by_admin.status_code == 204


# -- isolation between clients -----------------------------------------------------------------


async def test_an_expired_task_is_gone_for_everyone_even_an_auditor_erasing_it(client, alice, bob, auditor, db):
    task_id = (await client.post(RUN, json={"prompt": "soon gone"}, headers=alice.headers)).json()["task_id"]
    await db.execute("UPDATE agent_task SET expires_at = now() - interval '1 second'")

    for caller in (alice, bob, auditor):
        assert (await client.get(GET.format(task_id), headers=caller.headers)).status_code == 404
        assert (await client.delete(GET.format(task_id), headers=caller.headers)).status_code == 404
    outcomes = await db.fetch("SELECT DISTINCT outcome FROM audit_event WHERE action IN ('read', 'delete')")
    assert {r["outcome"] for r in outcomes} == {"expired"}


async def test_another_clients_task_is_indistinguishable_from_an_unknown_one(client, alice, bob, db):
    created = await run(client, alice)
    theirs = await client.get(GET.format(created["task_id"]), headers=bob.headers)
    unknown = await client.get(GET.format(uuid.uuid4()), headers=bob.headers)
    erase_theirs = await client.delete(GET.format(created["task_id"]), headers=bob.headers)
    erase_unknown = await client.delete(GET.format(uuid.uuid4()), headers=bob.headers)

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    assert erase_theirs.status_code == erase_unknown.status_code == 404
    assert erase_theirs.json() == erase_unknown.json()
    assert created["task_id"] not in (await client.get(LIST, headers=bob.headers)).text
    # The row survived, and the audit trail names what really happened.
    assert await count_rows(db, "agent_task") == 1
    denied = await db.fetch("SELECT action FROM audit_event WHERE outcome = 'denied' ORDER BY id")
    assert [d["action"] for d in denied] == ["read", "delete"]


async def test_an_auditor_reads_any_task_and_that_read_is_audited(client, alice, auditor, db):
    created = await run(client, alice)
    read = await client.get(GET.format(created["task_id"]), headers=auditor.headers)
    assert read.status_code == 200
    assert read.json()["output"] == created["output"]
    row = await db.fetchrow("SELECT actor_id, actor_role, outcome FROM audit_event WHERE action = 'read'")
    assert dict(row) == {"actor_id": auditor.key_id, "actor_role": "auditor", "outcome": "ok"}


# -- the audit log -------------------------------------------------------------------------------


async def test_the_audit_log_is_for_auditors_and_admins(client, alice, auditor, admin):
    assert (await client.get(AUDIT, headers=alice.headers)).status_code == 403
    assert (await client.get(AUDIT, headers=auditor.headers)).status_code == 200
    assert (await client.get(AUDIT, headers=admin.headers)).status_code == 200


async def test_the_audit_log_filters_by_task_and_pages(client, alice, auditor):
    first = await run(client, alice)
    second = await run(client, alice)
    for _ in range(3):
        await client.get(GET.format(first["task_id"]), headers=alice.headers)
    await client.get(GET.format(second["task_id"]), headers=alice.headers)

    page = (await client.get(AUDIT, params={"task_id": first["task_id"], "limit": 2}, headers=auditor.headers)).json()
    rest = (
        await client.get(
            AUDIT, params={"task_id": first["task_id"], "cursor": page["next_cursor"]}, headers=auditor.headers
        )
    ).json()
    events = page["items"] + rest["items"]
    assert {e["task_id"] for e in events} == {first["task_id"]}
    assert [e["action"] for e in events] == ["read", "read", "read", "create"]
    assert rest["next_cursor"] is None
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True)


async def test_reading_the_audit_log_is_itself_audited(client, auditor, db):
    await client.get(AUDIT, headers=auditor.headers)
    row = await db.fetchrow("SELECT actor_id, action, outcome FROM audit_event")
    assert dict(row) == {"actor_id": auditor.key_id, "action": "audit_read", "outcome": "ok"}


async def test_creating_and_listing_are_audited_too(client, alice, db):
    created = await run(client, alice)
    await client.get(LIST, headers=alice.headers)
    rows = await db.fetch("SELECT action, task_id, outcome FROM audit_event ORDER BY id")
    assert [(r["action"], r["task_id"], r["outcome"]) for r in rows] == [
        ("create", uuid.UUID(created["task_id"]), "ok"),
        ("list", None, "ok"),
    ]


# -- health and documentation --------------------------------------------------------------------


async def test_health_and_docs_need_no_key(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
    checks = ready.json()["checks"]
    assert {k: v for k, v in checks.items() if k != "providers"} == {
        "database": "ok",
        "migrations": "ok",
        "scheduler": "ok",
    }
    assert checks["providers"].startswith("ok: ")
    assert "offline" in checks["providers"]
    assert ready.json()["retention"]["result_retention_days"] == 30
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert {
        "/tools/run_agent_task",
        "/resources/get_agent_result/{task_id}",
        "/resources/agent_results",
        "/audit/events",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])


async def test_unknown_paths_and_methods_answer_json(client, alice):
    missing = await client.get("/no/such/path", headers=alice.headers)
    wrong_method = await client.put(RUN, headers=alice.headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method_not_allowed"
