"""Prompt hashes bound to their owner, and the auditor's audited search by prompt (REST and MCP).

A hash a client can see must not let it confirm a guess about another client's prompt: the
same prompt hashes differently for every owner. An auditor can still find which tasks carried
a prompt, by giving it to an audited search that computes every owner's hash itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

import httpx
import pytest

from app.access.hashing import PromptHasher
from tests.support.app import Caller
from tests.support.mcp import error_of, mcp_as
from tests.support.routes import RUN
from tests.support.settings import TEST_HASH_KEY

SEARCH = "/audit/prompt-search"


async def run(client: httpx.AsyncClient, caller: Caller, prompt: str, **body: Any) -> dict[str, Any]:
    response = await client.post(RUN, json={"prompt": prompt, **body}, headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_the_same_prompt_hashes_differently_for_each_owner(client, alice, bob):
    mine = await run(client, alice, "Is this email a phishing attempt?")
    theirs = await run(client, bob, "Is this email a phishing attempt?")
    again = await run(client, alice, "Is this email a phishing attempt?", cache=False)

    assert mine["prompt_hash"] != theirs["prompt_hash"]
    assert again["prompt_hash"] == mine["prompt_hash"]  # stable for one owner
    global_hash = hmac.new(TEST_HASH_KEY.encode(), b"Is this email a phishing attempt?", hashlib.sha256).hexdigest()
    assert global_hash not in (mine["prompt_hash"], theirs["prompt_hash"])


async def test_a_client_cannot_confirm_a_guess_about_another_clients_prompt(client, alice, bob):
    """Bob saw Alice's hash (an export, a log, a database copy): submitting his guess gives him
    a hash of his own, which says nothing about hers."""
    hers = await run(client, alice, "the merger closes on Friday")
    guess = await run(client, bob, "the merger closes on Friday", model="offline:x")
    assert guess["prompt_hash"] != hers["prompt_hash"]


async def test_new_rows_carry_the_owner_bound_key_id(client, alice, db):
    result = await run(client, alice, "p")
    stored = await db.fetchval("SELECT prompt_hash_key_id FROM agent_task WHERE id = $1", uuid.UUID(result["task_id"]))
    hasher = PromptHasher(TEST_HASH_KEY)
    assert stored == hasher.owner_key_id != hasher.key_id


async def test_the_offline_provider_says_nothing_about_the_prompt(client, alice):
    short = await run(client, alice, "hi")
    long = await run(client, alice, "a much longer prompt, with many more words in it than the other one " * 20)
    assert short["output"] == long["output"]
    assert short["usage"] == long["usage"]
    assert short["usage"]["prompt_tokens"] == 0


# -- the auditor's search ---------------------------------------------------------------------


async def search(client: httpx.AsyncClient, caller: Caller, prompt: str, **body: Any) -> httpx.Response:
    return await client.post(SEARCH, json={"prompt": prompt, **body}, headers=caller.headers)


async def test_an_auditor_finds_every_task_that_carried_a_prompt_whoever_sent_it(client, alice, bob, auditor):
    wanted = [
        await run(client, alice, "wire the funds tonight"),
        await run(client, bob, "wire the funds tonight"),
        await run(client, bob, "wire the funds tonight", cache=False),
    ]
    await run(client, alice, "something else")

    response = await search(client, auditor, "wire the funds tonight")

    assert response.status_code == 200, response.text
    page = response.json()
    assert {item["task_id"] for item in page["items"]} == {t["task_id"] for t in wanted}
    owners = {item["owner_id"] for item in page["items"]}
    assert owners == {str(alice.key_id), str(bob.key_id)}
    assert page["next_cursor"] is None
    assert set(page["items"][0]) == {"task_id", "owner_id", "status", "model", "template", "created_at", "expires_at"}


async def test_the_search_finds_templated_tasks_when_given_the_template_and_context(client, alice, auditor):
    body = {"template": "summarize", "context": {"audience": "board"}}
    task = await run(client, alice, "quarterly figures", **body)

    plain = (await search(client, auditor, "quarterly figures")).json()
    templated = (await search(client, auditor, "quarterly figures", **body)).json()

    assert plain["items"] == []
    assert [item["task_id"] for item in templated["items"]] == [task["task_id"]]


async def test_the_search_pages_newest_first(client, alice, auditor):
    made = [(await run(client, alice, "same question", cache=False))["task_id"] for _ in range(5)]

    body, headers = {"prompt": "same question"}, auditor.headers
    first = (await client.post(SEARCH, params={"limit": 2}, json=body, headers=headers)).json()
    rest = (await client.post(SEARCH, params={"cursor": first["next_cursor"]}, json=body, headers=headers)).json()

    assert [i["task_id"] for i in first["items"] + rest["items"]] == list(reversed(made))


async def test_each_search_is_audited_with_every_task_it_found_and_never_the_prompt(client, alice, auditor, db):
    task = await run(client, alice, "MARKER-7f3a search me")
    await search(client, auditor, "MARKER-7f3a search me")
    await search(client, auditor, "MARKER-7f3a nothing has this")

    events = await db.fetch(
        "SELECT actor_id, task_id, outcome, detail FROM audit_event WHERE action = 'prompt_search' ORDER BY id"
    )
    assert [(e["actor_id"], e["task_id"], e["outcome"]) for e in events] == [
        (auditor.key_id, None, "ok"),
        (auditor.key_id, uuid.UUID(task["task_id"]), "ok"),
        (auditor.key_id, None, "ok"),
    ]
    summaries = [e["detail"] for e in events if e["task_id"] is None]
    assert [json.loads(d) if isinstance(d, str) else d for d in summaries] == [{"matches": 1}, {"matches": 0}]
    dump = "\n".join(str(tuple(r)) for r in await db.fetch("SELECT * FROM audit_event"))
    assert "MARKER-7f3a" not in dump


async def test_only_auditors_and_admins_may_search(client, alice, admin):
    refused = await search(client, alice, "anything")
    allowed = await search(client, admin, "anything")
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert allowed.status_code == 200


@pytest.mark.parametrize(
    "body",
    [{}, {"prompt": ""}, {"prompt": 3}, {"prompt": "p", "sneaky_field_name": 1}, {"prompt": "p", "template": "../x"}],
    ids=["no prompt", "blank", "not a string", "unknown field", "bad template"],
)
async def test_a_bad_search_is_a_validation_error_that_echoes_nothing(client, auditor, body):
    response = await client.post(SEARCH, json=body, headers=auditor.headers)
    assert response.status_code == 422
    assert response.json()["code"] in {"validation_error", "unknown_template"}
    assert "sneaky_field_name" not in response.text


async def test_rows_hashed_under_the_old_global_scheme_are_still_found(client, alice, auditor, db):
    """Rows written before hashes were bound to owners keep their old key id and hash."""
    task = await run(client, alice, "an old prompt")
    legacy = PromptHasher(TEST_HASH_KEY)
    await db.execute(
        "UPDATE agent_task SET prompt_hash = $1, prompt_hash_key_id = $2 WHERE id = $3",
        legacy.hash("an old prompt"),
        legacy.key_id,
        uuid.UUID(task["task_id"]),
    )

    found = (await search(client, auditor, "an old prompt")).json()
    read = (await client.get(f"/resources/get_agent_result/{task['task_id']}", headers=alice.headers)).json()

    assert [item["task_id"] for item in found["items"]] == [task["task_id"]]
    assert read["prompt_hash"] == legacy.hash("an old prompt")


async def test_expired_tasks_are_not_found(client, alice, auditor, db):
    task = await run(client, alice, "gone soon")
    await db.execute("UPDATE agent_task SET expires_at = now() - interval '1 second' WHERE id = $1",
                     uuid.UUID(task["task_id"]))  # fmt: skip
    assert (await search(client, auditor, "gone soon")).json()["items"] == []


async def test_the_mcp_tool_searches_the_same_way(client, app_service, alice, bob, auditor):
    wanted = {(await run(client, who, "mcp search me"))["task_id"] for who in (alice, bob)}

    async with mcp_as(app_service, auditor) as mcp:
        found = await mcp.call_tool("search_tasks_by_prompt", {"prompt": "mcp search me"})
    async with mcp_as(app_service, alice) as mcp:
        refused = await mcp.call_tool("search_tasks_by_prompt", {"prompt": "mcp search me"}, raise_on_error=False)

    assert {item["task_id"] for item in found.structured_content["items"]} == wanted
    assert error_of(refused)["code"] == "forbidden"
