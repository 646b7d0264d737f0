"""Legal holds over REST: auditors and admins place, list and release them; a held task cannot be
erased (409 `legal_hold`, over REST and MCP, the refusal audited) and stays readable to auditors
past its expiry, while its owner gets the same answer as for any expired task."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from app.domain import Role
from tests.support.app import Caller, MakeCaller
from tests.support.mcp import error_of, mcp_as
from tests.support.routes import GET, RUN

HOLDS = "/holds"


async def run_task(client: httpx.AsyncClient, caller: Caller) -> str:
    response = await client.post(RUN, json={"prompt": "keep me"}, headers=caller.headers)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["task_id"]
    return task_id


async def place(client: httpx.AsyncClient, caller: Caller, **target: Any) -> httpx.Response:
    return await client.post(HOLDS, json={"reference": "CASE-2026-17", **target}, headers=caller.headers)


async def expire(db: asyncpg.Connection, task_id: str) -> None:
    await db.execute("UPDATE agent_task SET expires_at = now() - interval '1 minute' WHERE id = $1", uuid.UUID(task_id))


async def audit_rows(db: asyncpg.Connection, action: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT actor_id, channel, task_id, outcome, detail FROM audit_event WHERE action = $1 ORDER BY id", action
    )


async def test_an_auditor_places_lists_and_releases_a_task_hold(client, alice, auditor, db):
    task_id = await run_task(client, alice)

    placed = await place(client, auditor, task_id=task_id)
    assert placed.status_code == 201, placed.text
    hold = placed.json()
    assert hold["reference"] == "CASE-2026-17"
    assert (hold["task_id"], hold["owner_key_id"], hold["created_by"]) == (task_id, None, str(auditor.key_id))
    assert set(hold) == {"hold_id", "reference", "task_id", "owner_key_id", "created_at", "created_by"}

    listed = (await client.get(HOLDS, headers=auditor.headers)).json()
    assert listed == {"items": [hold], "next_cursor": None}

    released = await client.delete(f"{HOLDS}/{hold['hold_id']}", headers=auditor.headers)
    assert (released.status_code, released.content) == (204, b"")
    assert (await client.get(HOLDS, headers=auditor.headers)).json()["items"] == []
    again = await client.delete(f"{HOLDS}/{hold['hold_id']}", headers=auditor.headers)
    assert (again.status_code, again.json()["code"]) == (404, "not_found")
    # History: the released hold keeps its row.
    row = await db.fetchrow("SELECT released_at FROM legal_hold WHERE id = $1", uuid.UUID(hold["hold_id"]))
    assert row["released_at"] is not None


async def test_placing_and_releasing_are_audited_with_ids_only(client, alice, admin, db):
    task_id = await run_task(client, alice)
    on_task = (await place(client, admin, task_id=task_id)).json()
    on_owner = (await place(client, admin, owner_key_id=str(alice.key_id))).json()
    await client.delete(f"{HOLDS}/{on_task['hold_id']}", headers=admin.headers)

    placed = await audit_rows(db, "hold_place")
    assert [(r["actor_id"], r["channel"], r["outcome"]) for r in placed] == [(admin.key_id, "rest", "ok")] * 2
    assert placed[0]["task_id"] == uuid.UUID(task_id)
    assert placed[0]["detail"] == {"hold_id": on_task["hold_id"], "owner_key_id": None}
    assert placed[1]["task_id"] is None
    assert placed[1]["detail"] == {"hold_id": on_owner["hold_id"], "owner_key_id": str(alice.key_id)}
    [released] = await audit_rows(db, "hold_release")
    assert (released["task_id"], released["detail"]["hold_id"]) == (uuid.UUID(task_id), on_task["hold_id"])
    assert "CASE-2026-17" not in str([dict(r) for r in await db.fetch("SELECT * FROM audit_event")])


async def test_the_holds_list_pages_with_a_cursor(client, alice, auditor):
    task_ids = [await run_task(client, alice) for _ in range(3)]
    for task_id in task_ids:
        assert (await place(client, auditor, task_id=task_id)).status_code == 201

    first = (await client.get(HOLDS, params={"limit": 2}, headers=auditor.headers)).json()
    second = await client.get(HOLDS, params={"limit": 2, "cursor": first["next_cursor"]}, headers=auditor.headers)
    rest = second.json()

    assert len(first["items"]) == 2
    assert rest["next_cursor"] is None
    assert {h["task_id"] for h in first["items"] + rest["items"]} == set(task_ids)
    forged = await client.get(HOLDS, params={"cursor": "nope"}, headers=auditor.headers)
    assert (forged.status_code, forged.json()["code"]) == (422, "invalid_cursor")


async def test_clients_may_not_place_list_or_release_holds(client, alice, auditor, db):
    task_id = await run_task(client, alice)
    hold = (await place(client, auditor, task_id=task_id)).json()

    answers = [
        await place(client, alice, task_id=task_id),
        await client.get(HOLDS, headers=alice.headers),
        await client.delete(f"{HOLDS}/{hold['hold_id']}", headers=alice.headers),
    ]

    assert [(a.status_code, a.json()["code"]) for a in answers] == [(403, "forbidden")] * 3
    assert await db.fetchval("SELECT count(*) FROM legal_hold WHERE released_at IS NULL") == 1


@pytest.mark.parametrize(
    "body",
    [
        {"reference": "CASE-1"},  # no target
        {"reference": "CASE-1", "task_id": str(uuid.uuid4()), "owner_key_id": str(uuid.uuid4())},  # two
        {"reference": "", "task_id": str(uuid.uuid4())},
        {"reference": "x" * 101, "task_id": str(uuid.uuid4())},
        {"reference": "Smith v. Jones, a secret matter", "task_id": str(uuid.uuid4())},
        {"reference": "CASE-1", "task_id": "not-a-uuid"},
        {"reference": "CASE-1", "task_id": str(uuid.uuid4()), "note": "free text"},
    ],
)
async def test_a_bad_hold_is_a_422_that_echoes_nothing(client, auditor, body):
    response = await client.post(HOLDS, json=body, headers=auditor.headers)

    assert (response.status_code, response.json()["code"]) == (422, "validation_error"), response.text
    for value in body.values():
        if len(value) > 1:
            assert value not in response.text


async def test_a_hold_on_an_unknown_task_or_key_is_a_404(client, auditor, db):
    for target in ({"task_id": str(uuid.uuid4())}, {"owner_key_id": str(uuid.uuid4())}):
        response = await place(client, auditor, **target)
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert await db.fetchval("SELECT count(*) FROM legal_hold") == 0


async def test_a_held_task_cannot_be_erased_over_rest_or_mcp_and_the_refusal_is_audited(
    client, app_service, alice, admin, db
):
    task_id = await run_task(client, alice)
    await place(client, admin, task_id=task_id)

    for caller in (alice, admin):
        refused = await client.delete(GET.format(task_id), headers=caller.headers)
        assert refused.status_code == 409
        assert refused.json() == {"code": "legal_hold", "message": refused.json()["message"]}
    async with mcp_as(app_service, alice) as mcp:
        result = await mcp.call_tool("delete_agent_result", {"task_id": task_id}, raise_on_error=False)
    assert error_of(result)["code"] == "legal_hold"

    refusals = await db.fetch(
        "SELECT actor_id, channel, outcome FROM audit_event WHERE action = 'delete' ORDER BY id",
    )
    assert [(r["actor_id"], r["channel"], r["outcome"]) for r in refusals] == [
        (alice.key_id, "rest", "held"),
        (admin.key_id, "rest", "held"),
        (alice.key_id, "mcp", "held"),
    ]
    assert await db.fetchval("SELECT count(*) FROM agent_task WHERE id = $1", uuid.UUID(task_id)) == 1


async def test_an_owner_hold_covers_tasks_made_after_it_and_release_allows_erasure(client, alice, bob, auditor):
    hold = (await place(client, auditor, owner_key_id=str(alice.key_id))).json()
    later = await run_task(client, alice)
    bobs = await run_task(client, bob)

    assert (await client.delete(GET.format(later), headers=alice.headers)).status_code == 409
    assert (await client.delete(GET.format(bobs), headers=bob.headers)).status_code == 204

    await client.delete(f"{HOLDS}/{hold['hold_id']}", headers=auditor.headers)
    assert (await client.delete(GET.format(later), headers=alice.headers)).status_code == 204


async def test_another_clients_held_task_still_looks_unknown(client, alice, bob, auditor):
    task_id = await run_task(client, alice)
    await place(client, auditor, task_id=task_id)

    erased = await client.delete(GET.format(task_id), headers=bob.headers)
    unknown = await client.delete(GET.format(uuid.uuid4()), headers=bob.headers)

    assert (erased.status_code, erased.json()) == (unknown.status_code, unknown.json())


async def test_an_auditor_reads_an_expired_held_task_the_owner_does_not(
    client, alice, auditor, make_caller: MakeCaller, db
):
    admin = await make_caller(Role.ADMIN)
    held, unheld = await run_task(client, alice), await run_task(client, alice)
    assert (await client.get(GET.format(held), headers=auditor.headers)).json()["legal_hold"] is False
    await place(client, auditor, task_id=held)
    live = (await client.get(GET.format(held), headers=alice.headers)).json()
    assert live["legal_hold"] is True
    await expire(db, held)
    await expire(db, unheld)

    by_owner = await client.get(GET.format(held), headers=alice.headers)
    for reader in (auditor, admin):
        read = await client.get(GET.format(held), headers=reader.headers)
        assert read.status_code == 200, read.text
        assert (read.json()["task_id"], read.json()["legal_hold"]) == (held, True)
    unheld_read = await client.get(GET.format(unheld), headers=auditor.headers)

    assert (by_owner.status_code, by_owner.json()) == (404, {"code": "not_found", "message": "no such task"})
    assert unheld_read.status_code == 404
    outcomes = await db.fetch(
        "SELECT actor_id, outcome FROM audit_event WHERE action = 'read' AND task_id = $1 ORDER BY id",
        uuid.UUID(held),
    )
    assert [(r["actor_id"], r["outcome"]) for r in outcomes][-3:] == [
        (alice.key_id, "expired"),
        (auditor.key_id, "ok"),
        (admin.key_id, "ok"),
    ]
