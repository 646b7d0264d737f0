"""Cancelling a task: who may, what a waiting caller gets, what the row and the audit log keep."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from app.domain import Role, TaskStatus
from app.main import create_app
from app.service.runner import Work
from app.storage import tasks as task_rows
from tests.support.app import key, running
from tests.support.authz import on_loopback
from tests.support.fake_openai import FakeOpenAI, Reply, completion
from tests.support.routes import GET, RUN
from tests.support.settings import make_settings
from tests.support.storage import actor, new_task

CANCEL = GET + "/cancel"


@asynccontextmanager
async def gateway(
    database_url: str, fake: FakeOpenAI, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(
        database_url,
        openai_api_key="sk-test",
        openai_base_url=fake.base_url,
        default_model="openai:gpt-test",
        provider_timeout_seconds=30,
        provider_max_retries=0,
        **overrides,
    )
    async with running(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
            yield app, http


async def _until_running_at_the_provider(fake: FakeOpenAI, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while fake.count < count:
        assert time.monotonic() < deadline, "the provider never got the request"
        await asyncio.sleep(0.01)


async def test_a_running_task_stops_and_its_waiting_caller_gets_cancelled(database_url, fake, db):
    fake.enqueue(Reply(body=completion("never seen"), delay=30))
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        waiting = asyncio.create_task(
            http.post(RUN, json={"prompt": "slow one", "cache": False}, headers=alice.headers)
        )
        await _until_running_at_the_provider(fake)
        task_id = str(await db.fetchval("SELECT id FROM agent_task"))
        started = time.monotonic()
        cancel = await http.post(CANCEL.format(task_id), headers=alice.headers)
        waited = await asyncio.wait_for(waiting, 5)
        took = time.monotonic() - started
        deadline = time.monotonic() + 5
        while not fake.hang_ups and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled"
    assert cancel.json()["error"]["code"] == "cancelled"
    assert waited.status_code == 200
    assert (waited.json()["task_id"], waited.json()["status"]) == (task_id, "cancelled")
    assert waited.json()["output"] is None
    assert took < 1.0
    assert fake.hang_ups, "the provider call was not aborted"
    row = await db.fetchrow("SELECT status, output, completed_at, lease_expires_at FROM agent_task")
    assert (row["status"], row["output"], row["lease_expires_at"]) == ("cancelled", None, None)
    assert row["completed_at"] is not None
    audit = await db.fetch("SELECT action, outcome, channel FROM audit_event WHERE action = 'cancel'")
    assert [tuple(a) for a in audit] == [("cancel", "ok", "rest")]


async def test_a_pending_task_is_cancelled_and_read_back_as_cancelled(database_url, fake, db):
    fake.enqueue(Reply(body=completion("never seen"), delay=30))
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        accepted = await http.post(RUN, params={"wait": "false"}, json={"prompt": "later"}, headers=alice.headers)
        task_id = accepted.json()["task_id"]
        cancelled = await http.post(CANCEL.format(task_id), headers=alice.headers)
        read = await http.get(GET.format(task_id), headers=alice.headers)
        again = await http.post(CANCEL.format(task_id), headers=alice.headers)

    assert accepted.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    assert read.json()["status"] == "cancelled"
    assert (again.status_code, again.json()["code"]) == (409, "already_finished")
    assert "later" not in again.text
    outcomes = await db.fetch("SELECT outcome FROM audit_event WHERE action = 'cancel' ORDER BY id")
    assert [o["outcome"] for o in outcomes] == ["ok", "finished"]


async def test_a_finished_task_cannot_be_cancelled_and_keeps_its_answer(database_url, fake, db):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        done = (await http.post(RUN, json={"prompt": "quick"}, headers=alice.headers)).json()
        refused = await http.post(CANCEL.format(done["task_id"]), headers=alice.headers)
        read = await http.get(GET.format(done["task_id"]), headers=alice.headers)

    assert (refused.status_code, refused.json()["code"]) == (409, "already_finished")
    assert (read.json()["status"], read.json()["output"]) == ("succeeded", done["output"])


async def test_another_clients_task_and_an_unknown_one_answer_the_same_404(database_url, fake, db):
    fake.enqueue(Reply(body=completion("never seen"), delay=30))
    async with gateway(database_url, fake) as (app, http):
        alice, bob, admin = await key(app), await key(app), await key(app, Role.ADMIN)
        task_id = (
            await http.post(RUN, params={"wait": "false"}, json={"prompt": "mine"}, headers=alice.headers)
        ).json()["task_id"]
        by_bob = await http.post(CANCEL.format(task_id), headers=bob.headers)
        unknown = await http.post(CANCEL.format(uuid.uuid4()), headers=bob.headers)
        status_after_bob = (await http.get(GET.format(task_id), headers=alice.headers)).json()["status"]
        by_admin = await http.post(CANCEL.format(task_id), headers=admin.headers)

    assert (by_bob.status_code, by_bob.json()) == (unknown.status_code, unknown.json())
    assert by_bob.status_code == 404
    assert status_after_bob in ("pending", "running")
    assert by_admin.json()["status"] == "cancelled"


async def test_a_cancelled_task_keeps_the_retention_of_a_failed_one_and_is_never_a_cache_source(database_url, fake, db):
    fake.enqueue(Reply(body=completion("never seen"), delay=30))
    async with gateway(database_url, fake, failed_result_retention_days=1) as (app, http):
        alice = await key(app)
        body = {"prompt": "same question", "retention_days": 30}
        first = (await http.post(RUN, params={"wait": "false"}, json=body, headers=alice.headers)).json()
        await _until_running_at_the_provider(fake)
        await http.post(CANCEL.format(first["task_id"]), headers=alice.headers)
        second = (await http.post(RUN, json=body, headers=alice.headers)).json()

    kept = await db.fetchval(
        "SELECT expires_at - created_at FROM agent_task WHERE id = $1", uuid.UUID(first["task_id"])
    )
    assert kept.days == 1
    assert (second["status"], second["cached"]) == ("succeeded", False)
    assert fake.count == 2


async def test_cancel_over_mcp_is_audited_with_channel_mcp(database_url, fake, db):
    fake.enqueue(Reply(body=completion("never seen"), delay=30))
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        task_id = (
            await http.post(RUN, params={"wait": "false"}, json={"prompt": "mcp one"}, headers=alice.headers)
        ).json()["task_id"]
        async with on_loopback(app) as base:
            transport = StreamableHttpTransport(f"{base}/mcp", headers=alice.headers)
            async with Client(transport) as mcp:
                result = await mcp.call_tool("cancel_agent_task", {"task_id": task_id})
                refused = await mcp.call_tool("cancel_agent_task", {"task_id": task_id}, raise_on_error=False)

    assert result.structured_content is not None
    assert result.structured_content["status"] == "cancelled"
    assert refused.is_error
    assert '"already_finished"' in refused.content[0].text  # type: ignore[union-attr]
    audit = await db.fetch("SELECT outcome, channel FROM audit_event WHERE action = 'cancel' ORDER BY id")
    assert [tuple(a) for a in audit] == [("ok", "mcp"), ("finished", "mcp")]


async def test_a_job_cancelled_before_its_first_step_hands_its_waiter_the_cancelled_row(database_url, fake, db):
    """The cancel's notification can arrive between a job's creation and its first step: the job
    then never runs its own handler, and its waiter must still get the row, not an exception."""
    async with gateway(database_url, fake) as (app, _http):
        alice = await key(app)
        components = app.state.components
        task = new_task(alice.key_id, status=TaskStatus.PENDING)
        async with components.db.connection() as conn:
            await task_rows.insert_task(conn, task, actor(alice.key_id))
        await db.execute("UPDATE agent_task SET status = 'cancelled', error_code = 'cancelled' WHERE id = $1", task.id)
        work = Work(route=components.providers.route("openai:gpt-test"), messages=(), params={}, owner_id=alice.key_id)
        job = components.runner.launch(task.id, work, pending=True)
        components.runner.task_cancelled(str(task.id))  # before the job has run a single step
        finished = await asyncio.wait_for(components.runner.outcome(task.id, job), 5)

    assert job.cancelled()
    assert finished.record is not None
    assert finished.record.status == TaskStatus.CANCELLED
    assert fake.count == 0


async def test_callers_sharing_a_cancelled_leaders_answer_get_an_answer_of_their_own(database_url, fake, db):
    """Single flight: an identical task waits for the leader. When the leader is cancelled, the
    follower is not: it asks the provider itself."""
    fake.enqueue(Reply(body=completion("never seen"), delay=30))
    fake.enqueue(Reply(body=completion("the follower's own answer")))
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        body = {"prompt": "the same question"}
        leader = asyncio.create_task(http.post(RUN, json=body, headers=alice.headers))
        await _until_running_at_the_provider(fake)
        follower = asyncio.create_task(http.post(RUN, json=body, headers=alice.headers))
        deadline = time.monotonic() + 5
        while await db.fetchval("SELECT count(*) FROM agent_task") < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        leader_id = await db.fetchval("SELECT id FROM agent_task ORDER BY created_at LIMIT 1")
        await http.post(CANCEL.format(leader_id), headers=alice.headers)
        led, followed = await asyncio.wait_for(asyncio.gather(leader, follower), 10)

    assert led.json()["status"] == "cancelled"
    assert (followed.json()["status"], followed.json()["output"]) == ("succeeded", "the follower's own answer")
    assert fake.count == 2


async def test_a_cancel_without_its_notification_is_found_by_the_heartbeat(database_url, fake, db):
    """A cancel written while no listener heard it (here: plain SQL, no NOTIFY) still stops the
    job at the next lease renewal."""
    fake.enqueue(Reply(body=completion("never seen"), delay=30))
    async with gateway(database_url, fake, task_lease_seconds=2) as (app, http):
        alice = await key(app)
        waiting = asyncio.create_task(http.post(RUN, json={"prompt": "quiet one"}, headers=alice.headers))
        await _until_running_at_the_provider(fake)
        await db.execute("UPDATE agent_task SET status = 'cancelled', error_code = 'cancelled'")
        waited = await asyncio.wait_for(waiting, 10)
        deadline = time.monotonic() + 5
        while not fake.hang_ups and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    assert waited.json()["status"] == "cancelled"
    assert fake.hang_ups, "the provider call was not aborted"
