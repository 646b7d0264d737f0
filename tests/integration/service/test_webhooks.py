"""Completion webhooks: a signed event with ids only when a task ends, retried until it is taken,
sent once across replicas, never to an address the rules refuse, and visible to the task's owner."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from standardwebhooks import Webhook

from app.domain import Role
from app.main import create_app
from tests.support.app import Caller, count_rows, key, running
from tests.support.fake_openai import FakeOpenAI, Reply, completion, error_reply
from tests.support.routes import GET, RUN
from tests.support.settings import make_settings
from tests.support.webhooks import Receiver

WEBHOOK = GET + "/webhook"
CANCEL = GET + "/cancel"
QUICK = {
    "webhook_allowed_hosts": ["127.0.0.1"],
    "webhook_poll_seconds": 0.2,
    "webhook_retry_seconds": 0.1,
}


@asynccontextmanager
async def gateway(
    database_url: str, fake: FakeOpenAI, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(
        database_url,
        openai_api_key="sk-test",
        openai_base_url=fake.base_url,
        default_model="openai:gpt-test",
        provider_max_retries=0,
        **{**QUICK, **overrides},
    )
    async with running(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
            yield app, http


async def _run(
    http: httpx.AsyncClient, caller: Caller, webhook: str, *, wait: bool = True, **task: Any
) -> dict[str, Any]:
    response = await http.post(
        RUN,
        params={"wait": str(wait).lower()},
        json={"prompt": "hello", "cache": False, "webhook": webhook, **task},
        headers=caller.headers,
    )
    assert response.status_code in (200, 202), response.text
    body: dict[str, Any] = response.json()
    return body


async def _until_state(http: httpx.AsyncClient, caller: Caller, task_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        response = await http.get(WEBHOOK.format(task_id), headers=caller.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["state"] == state:
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_a_finished_task_posts_a_signed_event_with_ids_only(database_url, fake, db):
    fake.enqueue(Reply(body=completion("the answer WH-MARKER-1")))
    with Receiver().running() as receiver:
        async with gateway(database_url, fake) as (app, http):
            alice = await key(app)
            task = await _run(http, alice, receiver.url, prompt="a prompt WH-MARKER-2", wait=False)
            [received] = await receiver.wait_for(1)
            status = await _until_state(http, alice, task["task_id"], "delivered")

    assert alice.webhook_secret is not None
    assert alice.webhook_secret.startswith("whsec_")
    event = received.verify(alice.webhook_secret)
    assert event["type"] == "agent_task.succeeded"
    assert event["data"] == {"task_id": task["task_id"], "status": "succeeded"}
    assert b"WH-MARKER" not in received.body
    assert received.headers["webhook-id"] == "msg_" + uuid.UUID(task["task_id"]).hex
    assert received.headers["content-type"] == "application/json"
    assert status["url"] == receiver.url
    assert status["event_type"] == "agent_task.succeeded"
    assert [(a["status_code"], a["error"]) for a in status["attempts"]] == [(204, None)]
    assert status["delivered_at"] is not None
    assert status["next_attempt_at"] is None
    # Another secret does not verify it: the signature is the key's own.
    with pytest.raises(Exception, match="No matching signature"):
        Webhook("whsec_" + "A" * 43 + "=").verify(received.body, received.headers)
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'webhook_read'") >= 1


async def test_failed_and_cancelled_tasks_say_so(database_url, fake):
    fake.enqueue(error_reply(400, message="bad request"), Reply(body=completion("late"), delay=30))
    with Receiver().running() as receiver:
        async with gateway(database_url, fake) as (app, http):
            alice = await key(app)
            failed = await _run(http, alice, receiver.url)
            running_task = await _run(http, alice, receiver.url, wait=False)
            deadline = time.monotonic() + 10
            while fake.count < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert (await http.post(CANCEL.format(running_task["task_id"]), headers=alice.headers)).status_code == 200
            received = await receiver.wait_for(2)

    assert alice.webhook_secret is not None
    events = {r.verify(alice.webhook_secret)["data"]["task_id"]: r.event for r in received}
    assert events[failed["task_id"]]["type"] == "agent_task.failed"
    assert events[failed["task_id"]]["data"]["status"] == "failed"
    assert events[running_task["task_id"]]["type"] == "agent_task.cancelled"


async def test_a_cache_hit_is_announced_like_any_other_ending(database_url, fake):
    with Receiver().running() as receiver:
        async with gateway(database_url, fake) as (app, http):
            alice = await key(app)
            first = await _run(http, alice, receiver.url, cache=True)
            hit = await _run(http, alice, receiver.url, cache=True)
            received = await receiver.wait_for(2)
    assert hit["cached"] is True
    assert {r.event["data"]["task_id"] for r in received} == {first["task_id"], hit["task_id"]}


async def test_a_refusing_receiver_is_retried_with_the_same_message_id_until_it_takes_it(database_url, fake):
    with Receiver(statuses=(500, 503)).running() as receiver:
        async with gateway(database_url, fake) as (app, http):
            alice = await key(app)
            task = await _run(http, alice, receiver.url)
            received = await receiver.wait_for(3)
            status = await _until_state(http, alice, task["task_id"], "delivered")
    assert len({r.headers["webhook-id"] for r in received}) == 1
    assert len({r.body for r in received}) == 1  # the same event, byte for byte
    assert [(a["status_code"], a["error"]) for a in status["attempts"]] == [
        (500, "http_status"),
        (503, "http_status"),
        (204, None),
    ]


async def test_a_delivery_is_given_up_after_the_retry_window(database_url, fake):
    with Receiver(statuses=(500,) * 100).running() as receiver:
        async with gateway(database_url, fake, webhook_retry_hours=1 / 3600) as (app, http):
            alice = await key(app)
            task = await _run(http, alice, receiver.url)
            status = await _until_state(http, alice, task["task_id"], "failed")
    assert len(status["attempts"]) >= 2
    assert all(a["error"] == "http_status" for a in status["attempts"])


async def test_redirects_are_not_followed(database_url, fake):
    with Receiver().running() as receiver:
        receiver.redirect_to = receiver.url.replace("/hook", "/other")
        async with gateway(database_url, fake, webhook_retry_hours=1 / 3600) as (app, http):
            alice = await key(app)
            task = await _run(http, alice, receiver.url)
            status = await _until_state(http, alice, task["task_id"], "failed")
    assert {(a["status_code"], a["error"]) for a in status["attempts"]} == {(307, "redirect")}
    assert all(r.headers.get("host", "").endswith(str(receiver.port)) for r in receiver.received)
    assert len(receiver.received) == len(status["attempts"])  # /other was never called


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery(database_url, fake):
    # "127.1" passes the check at submission (it is no IP literal) but resolves to loopback: the
    # check after resolution refuses it, and nothing is sent.
    with Receiver().running() as receiver:
        async with gateway(database_url, fake, webhook_retry_hours=1 / 3600) as (app, http):
            alice = await key(app)
            task = await _run(http, alice, f"https://127.1:{receiver.port}/hook")
            status = await _until_state(http, alice, task["task_id"], "failed")
    assert {a["error"] for a in status["attempts"]} == {"refused_address"}
    assert receiver.received == []


@pytest.mark.parametrize(
    ("webhook", "code"),
    [
        ("https://10.0.0.1/hook", "invalid_webhook"),
        ("https://169.254.169.254/latest", "invalid_webhook"),
        ("http://example.com/hook", "invalid_webhook"),
        ("https://user:pw@example.com/hook", "invalid_webhook"),
        ("https://localhost/hook", "invalid_webhook"),
        ("not a url", "invalid_webhook"),
    ],
)
async def test_a_refused_webhook_is_a_422_with_no_row_and_no_echo(database_url, fake, db, webhook, code):
    async with gateway(database_url, fake, webhook_allowed_hosts=[]) as (app, http):
        alice = await key(app)
        response = await http.post(RUN, json={"prompt": "p", "webhook": webhook}, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["code"] == code
    assert webhook not in response.text
    assert await count_rows(db, "agent_task") == 0


async def test_a_key_without_a_signing_secret_cannot_name_a_webhook(database_url, fake, db):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        await db.execute(
            "UPDATE api_key SET webhook_secret = NULL, webhook_secret_at = NULL WHERE id = $1", alice.key_id
        )
        response = await http.post(RUN, json={"prompt": "p", "webhook": "https://example.com/h"}, headers=alice.headers)
    assert (response.status_code, response.json()["code"]) == (422, "webhook_secret_missing")
    assert await count_rows(db, "agent_task") == 0


async def test_a_rotated_secret_signs_alongside_the_old_one_during_the_grace_period(database_url, fake):
    with Receiver().running() as receiver:
        async with gateway(database_url, fake) as (app, http):
            alice = await key(app)
            _, new_secret = await app.state.components.keys.rotate_webhook_secret(alice.key_id, grace_seconds=3600)
            await _run(http, alice, receiver.url)
            _, newest = await app.state.components.keys.rotate_webhook_secret(alice.key_id, grace_seconds=0)
            await _run(http, alice, receiver.url)
            during, after = await receiver.wait_for(2)
    assert alice.webhook_secret is not None
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    during.verify(alice.webhook_secret)
    during.verify(new_secret)
    after.verify(newest)
    with pytest.raises(Exception, match="No matching signature"):
        after.verify(new_secret)


async def test_only_those_who_may_read_the_task_see_its_webhook(database_url, fake, db):
    with Receiver().running() as receiver:
        async with gateway(database_url, fake) as (app, http):
            alice, bob, auditor = await key(app), await key(app), await key(app, Role.AUDITOR)
            task = await _run(http, alice, receiver.url)
            plain = await _run(http, alice, receiver.url)
            await receiver.wait_for(2)
            other = await http.get(WEBHOOK.format(task["task_id"]), headers=bob.headers)
            unknown = await http.get(WEBHOOK.format(uuid.uuid4()), headers=bob.headers)
            audited = await http.get(WEBHOOK.format(task["task_id"]), headers=auditor.headers)
            no_hook = await http.post(RUN, json={"prompt": "x", "cache": False}, headers=alice.headers)
            none = await http.get(WEBHOOK.format(no_hook.json()["task_id"]), headers=alice.headers)
    assert other.status_code == unknown.status_code == 404
    assert other.json() == unknown.json()
    assert audited.status_code == 200
    assert audited.json()["task_id"] == task["task_id"]
    assert plain["task_id"] != task["task_id"]
    assert none.json()["state"] == "none"
    assert none.json()["url"] is None
    outcomes = await db.fetch(
        "SELECT actor_id, outcome FROM audit_event WHERE action = 'webhook_read' AND task_id = $1",
        uuid.UUID(task["task_id"]),
    )
    assert {(r["actor_id"], r["outcome"]) for r in outcomes} >= {(bob.key_id, "denied"), (auditor.key_id, "ok")}


async def test_two_replicas_send_each_webhook_once(database_url, fake):
    tasks = 12
    with Receiver().running() as receiver:
        async with gateway(database_url, fake) as (app_a, http_a), gateway(database_url, fake) as (_, http_b):
            alice = await key(app_a)
            submitted = await asyncio.gather(
                *(_run(h, alice, receiver.url, prompt=f"p{i}") for i, h in enumerate([http_a, http_b] * (tasks // 2)))
            )
            await receiver.wait_for(tasks)
            await asyncio.sleep(1.0)  # time for any duplicate to arrive
    ids = [r.event["data"]["task_id"] for r in receiver.received]
    assert sorted(ids) == sorted(t["task_id"] for t in submitted)


async def test_over_mcp_a_task_names_its_webhook_and_its_owner_reads_the_attempts(database_url, fake):
    from tests.support.mcp import error_of, mcp_as

    with Receiver().running() as receiver:
        async with gateway(database_url, fake) as (app, _):
            alice, bob = await key(app), await key(app)
            service = app.state.components.service
            async with mcp_as(service, alice) as mcp:
                ran = await mcp.call_tool("run_agent_task", {"prompt": "over mcp", "webhook": receiver.url})
                task_id = ran.structured_content["task_id"]
                [received] = await receiver.wait_for(1)
                deadline = time.monotonic() + 10
                while (seen := await mcp.call_tool("get_agent_webhook", {"task_id": task_id})).structured_content[
                    "state"
                ] != "delivered":
                    assert time.monotonic() < deadline, seen.structured_content
                    await asyncio.sleep(0.05)
                refused = await mcp.call_tool(
                    "run_agent_task", {"prompt": "p", "webhook": "https://10.1.2.3/h"}, raise_on_error=False
                )
            async with mcp_as(service, bob) as mcp:
                hidden = await mcp.call_tool("get_agent_webhook", {"task_id": task_id}, raise_on_error=False)
    assert alice.webhook_secret is not None
    assert received.verify(alice.webhook_secret)["data"]["task_id"] == task_id
    assert error_of(refused)["code"] == "invalid_webhook"
    assert "10.1.2.3" not in error_of(refused)["message"]
    assert error_of(hidden) == {"code": "not_found", "message": "no such task"}
