"""Running tasks: response cache, single flight, asynchronous tasks, leases, idempotency, templates."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.domain import Actor, Channel, NewTask, Role, TaskStatus
from app.main import create_app
from app.service.schedule import SWEEP_JOB_ID
from app.storage import tasks as task_sql
from tests.support.app import count_rows, key, running
from tests.support.fake_openai import FakeOpenAI, Reply, completion
from tests.support.routes import GET, RUN
from tests.support.settings import TEST_HASH_KEY, make_settings


@asynccontextmanager
async def gateway(
    database_url: str, fake: FakeOpenAI, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(
        database_url,
        openai_api_key="sk-test",
        openai_base_url=fake.base_url,
        default_model="openai:gpt-test",
        provider_timeout_seconds=10,
        **overrides,
    )
    async with running(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
            yield app, http


# -- response cache ---------------------------------------------------------------------------


async def test_an_identical_request_is_answered_from_the_cache(database_url, fake, db):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        first = (await http.post(RUN, json={"prompt": "capital of France?"}, headers=alice.headers)).json()
        second = (await http.post(RUN, json={"prompt": "capital of France?"}, headers=alice.headers)).json()

    assert len(fake.requests) == 1
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["task_id"] != first["task_id"]
    assert second["output"] == first["output"]
    assert second["usage"] == first["usage"] | {"cost_usd": 0.0}, "the same tokens; a cache hit calls no provider"
    assert second["status"] == "succeeded"
    creates = await db.fetch("SELECT task_id FROM audit_event WHERE action = 'create' ORDER BY id")
    assert [str(c["task_id"]) for c in creates] == [first["task_id"], second["task_id"]]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"prompt": "q"}, {"prompt": "q", "cache": False}, id="cache false bypasses"),
        pytest.param({"prompt": "q"}, {"prompt": "q", "params": {"temperature": 0.5}}, id="other params"),
        pytest.param({"prompt": "q"}, {"prompt": "q", "model": "openai:other-model"}, id="other model"),
        pytest.param({"prompt": "q"}, {"prompt": "Q"}, id="other prompt"),
    ],
)
async def test_the_cache_misses_when_anything_that_matters_differs(database_url, fake, first, second):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        await http.post(RUN, json=first, headers=alice.headers)
        again = (await http.post(RUN, json=second, headers=alice.headers)).json()
    assert again["cached"] is False
    assert len(fake.requests) == 2


async def test_the_cache_is_scoped_to_its_owner(database_url, fake, db):
    async with gateway(database_url, fake) as (app, http):
        alice, bob = await key(app), await key(app)
        await http.post(RUN, json={"prompt": "same words"}, headers=alice.headers)
        theirs = (await http.post(RUN, json={"prompt": "same words"}, headers=bob.headers)).json()
    assert theirs["cached"] is False
    assert len(fake.requests) == 2
    keys = await db.fetch("SELECT DISTINCT cache_key FROM agent_task")
    assert len(keys) == 2  # the owner is part of the keyed hash: equal questions are not even comparable


async def test_the_cache_never_serves_an_entry_past_its_ttl_or_its_retention(database_url, fake, db):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        await http.post(RUN, json={"prompt": "old"}, headers=alice.headers)
        await db.execute("UPDATE agent_task SET created_at = created_at - interval '2 hours'")  # past the 1 h TTL
        stale = (await http.post(RUN, json={"prompt": "old"}, headers=alice.headers)).json()
        await http.post(RUN, json={"prompt": "short", "retention_days": 1e-5}, headers=alice.headers)
        await asyncio.sleep(1.0)
        expired = (await http.post(RUN, json={"prompt": "short"}, headers=alice.headers)).json()
    assert stale["cached"] is False
    assert expired["cached"] is False
    assert len(fake.requests) == 4


async def test_a_cache_hit_is_never_a_source_itself_so_hits_cannot_outlive_the_ttl(database_url, fake, db):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        first = (await http.post(RUN, json={"prompt": "hot"}, headers=alice.headers)).json()
        hits = [(await http.post(RUN, json={"prompt": "hot"}, headers=alice.headers)).json() for _ in range(5)]
        # The provider's answer passes the TTL while its copies are still young:
        await db.execute(
            "UPDATE agent_task SET created_at = created_at - interval '2 hours' WHERE id = $1", first["task_id"]
        )
        after = (await http.post(RUN, json={"prompt": "hot"}, headers=alice.headers)).json()
    assert all(hit["cached"] for hit in hits)
    assert after["cached"] is False, "a copy made within the TTL must not serve past the answer's TTL"
    assert len(fake.requests) == 2
    sources = await db.fetchval("SELECT count(*) FROM agent_task WHERE cache_key IS NOT NULL")
    assert sources == 2  # the two provider answers; the five copies carry no cache key


async def test_a_failed_answer_is_never_served_from_the_cache(database_url, fake):
    fake.enqueue(Reply(400, {"error": {"message": "no", "code": "bad"}}))
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        failed = (await http.post(RUN, json={"prompt": "q"}, headers=alice.headers)).json()
        retried = (await http.post(RUN, json={"prompt": "q"}, headers=alice.headers)).json()
    assert failed["status"] == "failed"
    assert (retried["status"], retried["cached"]) == ("succeeded", False)


# -- single flight -------------------------------------------------------------------------------


async def test_fifty_concurrent_identical_requests_make_one_provider_call(database_url, fake, db):
    fake.enqueue(Reply(body=completion("the one answer"), delay=1.0))
    async with gateway(database_url, fake, db_pool_max_size=20) as (app, http):
        alice = await key(app)
        answers = await asyncio.gather(
            *(http.post(RUN, json={"prompt": "popular question"}, headers=alice.headers) for _ in range(50))
        )

    results = [a.json() for a in answers]
    assert [a.status_code for a in answers] == [200] * 50
    assert len(fake.requests) == 1
    assert {r["output"] for r in results} == {"the one answer"}
    assert {r["status"] for r in results} == {"succeeded"}
    assert sum(not r["cached"] for r in results) == 1
    assert len({r["task_id"] for r in results}) == 50
    assert await count_rows(db, "agent_task") == 50


async def test_single_flight_holds_across_two_service_processes_on_one_database(database_url, fake):
    fake.enqueue(Reply(body=completion("shared"), delay=1.0))
    async with gateway(database_url, fake) as (app_a, http_a), gateway(database_url, fake) as (_, http_b):
        alice = await key(app_a)
        answers = await asyncio.gather(
            *(
                client.post(RUN, json={"prompt": "asked twice"}, headers=alice.headers)
                for client in (http_a, http_b, http_a, http_b)
            )
        )
    assert len(fake.requests) == 1
    assert {a.json()["output"] for a in answers} == {"shared"}


async def test_followers_ask_the_provider_themselves_when_the_leader_fails(database_url, fake):
    fake.enqueue(Reply(400, {"error": {"message": "no", "code": "bad"}}, delay=0.5), Reply(body=completion("ok")))
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        leader, follower = await asyncio.gather(
            http.post(RUN, json={"prompt": "q"}, headers=alice.headers),
            _after(0.1, http.post(RUN, json={"prompt": "q"}, headers=alice.headers)),
        )
    assert leader.json()["status"] == "failed"
    assert (follower.json()["status"], follower.json()["output"]) == ("succeeded", "ok")


async def _after(seconds: float, coro: Any) -> Any:
    await asyncio.sleep(seconds)
    return await coro


# -- asynchronous tasks -------------------------------------------------------------------------


async def test_wait_false_answers_202_and_the_task_finishes_in_the_background(database_url, fake):
    fake.enqueue(Reply(body=completion("later"), delay=0.5))
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        accepted = await http.post(RUN, params={"wait": "false"}, json={"prompt": "slow one"}, headers=alice.headers)
        assert accepted.status_code == 202
        body = accepted.json()
        assert body["status"] in ("pending", "running")
        assert body["output"] is None
        assert accepted.headers["location"] == GET.format(body["task_id"])

        seen = {body["status"]}
        for _ in range(100):
            polled = (await http.get(accepted.headers["location"], headers=alice.headers)).json()
            seen.add(polled["status"])
            if polled["status"] == "succeeded":
                break
            await asyncio.sleep(0.05)
    assert polled["output"] == "later"
    assert "running" in seen
    assert seen <= {"pending", "running", "succeeded"}


async def test_a_task_whose_runner_died_ends_interrupted(database_url, fake, db):
    """A dead runner stops renewing its lease; any replica's sweep then settles the task."""
    async with gateway(database_url, fake, task_lease_seconds=1) as (app, http):
        alice = await key(app)
        service = app.state.components
        orphan = NewTask(
            uuid.uuid4(),
            alice.key_id,
            TaskStatus.RUNNING,
            "openai:gpt-test",
            None,
            "h" * 64,
            "k",
            None,
            {},
            3600,
            lease_seconds=0.2,  # what a runner that died 0.2 s after starting leaves behind
        )
        async with service.db.connection() as conn:
            await task_sql.insert_task(conn, orphan, Actor(alice.key_id, Role.CLIENT, Channel.REST))
        await asyncio.sleep(0.3)
        service.schedule.scheduler.get_job(SWEEP_JOB_ID).modify(next_run_time=datetime.now(UTC))
        service.schedule.scheduler.wakeup()
        for _ in range(50):
            result = (await http.get(GET.format(orphan.id), headers=alice.headers)).json()
            if result["status"] == "failed":
                break
            await asyncio.sleep(0.1)
    assert result["status"] == "failed"
    assert result["error"]["code"] == "interrupted"
    assert result["completed_at"] is not None


async def test_a_running_task_keeps_its_lease_alive(database_url, fake, db):
    fake.enqueue(Reply(body=completion("slow"), delay=2.5))
    async with gateway(database_url, fake, task_lease_seconds=1) as (app, http):
        alice = await key(app)
        result = (await http.post(RUN, json={"prompt": "takes longer than a lease"}, headers=alice.headers)).json()
    assert result["status"] == "succeeded"  # the heartbeat renewed it; the sweep left it alone
    assert await db.fetchval("SELECT lease_expires_at FROM agent_task") is None


# -- idempotency -------------------------------------------------------------------------------


async def test_the_same_idempotency_key_returns_the_same_task(database_url, fake, db):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        headers = {**alice.headers, "Idempotency-Key": "order-42"}
        body = {"prompt": "charge the card", "cache": False}
        first = await http.post(RUN, json=body, headers=headers)
        again = await http.post(RUN, json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(fake.requests) == 1
    assert await count_rows(db, "agent_task") == 1


async def test_the_same_key_with_another_request_is_a_conflict(database_url, fake, db):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        headers = {**alice.headers, "Idempotency-Key": "order-42"}
        await http.post(RUN, json={"prompt": "one thing"}, headers=headers)
        other = await http.post(RUN, json={"prompt": "another thing"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_conflict"
    assert await count_rows(db, "agent_task") == 1


async def test_idempotency_keys_belong_to_their_caller(database_url, fake):
    async with gateway(database_url, fake) as (app, http):
        alice, bob = await key(app), await key(app)
        mine = (await http.post(RUN, json={"prompt": "a"}, headers={**alice.headers, "Idempotency-Key": "k1"})).json()
        theirs = await http.post(RUN, json={"prompt": "b"}, headers={**bob.headers, "Idempotency-Key": "k1"})
    assert theirs.status_code == 200
    assert theirs.json()["task_id"] != mine["task_id"]


async def test_concurrent_requests_with_one_key_make_one_task(database_url, fake, db):
    fake.enqueue(Reply(body=completion("once"), delay=0.5))
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        headers = {**alice.headers, "Idempotency-Key": "burst"}
        answers = await asyncio.gather(
            *(http.post(RUN, json={"prompt": "p", "cache": False}, headers=headers) for _ in range(10))
        )
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["task_id"] for a in answers}) == 1
    assert {a.json()["status"] for a in answers} == {"succeeded"}
    assert len(fake.requests) == 1
    assert await count_rows(db, "agent_task") == 1


async def test_an_async_replay_answers_202_with_the_same_task(database_url, fake):
    fake.enqueue(Reply(body=completion("x"), delay=0.5))
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        headers = {**alice.headers, "Idempotency-Key": "job-7"}
        first = await http.post(RUN, params={"wait": "false"}, json={"prompt": "p"}, headers=headers)
        again = await http.post(RUN, params={"wait": "false"}, json={"prompt": "p"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["location"] == first.headers["location"]


async def test_a_key_older_than_24_hours_makes_a_new_task(database_url, fake, db):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        headers = {**alice.headers, "Idempotency-Key": "daily"}
        first = (await http.post(RUN, json={"prompt": "p", "cache": False}, headers=headers)).json()
        await db.execute("UPDATE agent_task SET created_at = now() - interval '25 hours'")
        later = (await http.post(RUN, json={"prompt": "p", "cache": False}, headers=headers)).json()
    assert later["task_id"] != first["task_id"]


@pytest.mark.parametrize("bad_key", ["", "has space", "x" * 201, "naïve".encode()])
async def test_a_malformed_idempotency_key_is_422(database_url, fake, db, bad_key):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        response = await http.post(RUN, json={"prompt": "p"}, headers={**alice.headers, "Idempotency-Key": bad_key})
    assert response.status_code == 422
    assert await count_rows(db, "agent_task") == 0


# -- templates through the service --------------------------------------------------------------


async def test_a_template_is_resolved_rendered_and_recorded(database_url, fake, db):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        result = (
            await http.post(
                RUN,
                json={"prompt": "Long text about tides.", "template": "summarize", "context": {"max_words": 30}},
                headers=alice.headers,
            )
        ).json()
    assert result["template"] == "summarize@2"
    sent = fake.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert "30 words" in sent[1]["content"]
    assert "Long text about tides." in sent[1]["content"]
    rendered = json.dumps(
        [[m["role"], m["content"]] for m in sent], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    owner_key = hmac.new(TEST_HASH_KEY.encode(), f"owner:{alice.key_id}".encode(), hashlib.sha256).digest()
    assert result["prompt_hash"] == hmac.new(owner_key, rendered.encode(), hashlib.sha256).hexdigest()
    assert await db.fetchval("SELECT template FROM agent_task") == "summarize@2"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"prompt": "x", "template": "classify"}, "template_variable_missing"),
        ({"prompt": "x", "template": "nope"}, "unknown_template"),
        ({"prompt": "x", "template": "summarize@9"}, "unknown_template"),
    ],
)
async def test_template_errors_are_422_and_write_nothing(database_url, fake, db, body, code):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        response = await http.post(RUN, json=body, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["code"] == code
    assert await count_rows(db, "agent_task") == 0
    assert fake.requests == []


async def test_a_pinned_template_version_is_used(database_url, fake):
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        result = (await http.post(RUN, json={"prompt": "t", "template": "summarize@1"}, headers=alice.headers)).json()
    assert result["template"] == "summarize@1"


# -- an expired answer is never copied ----------------------------------------------------------

SECONDS = 1 / 86_400  # retention_days of one second


async def test_a_follower_never_copies_an_answer_that_expired_before_it_came(database_url, fake, db):
    """The leader is kept for 2 s but its provider takes 3 s: its row has expired when the answer
    comes. The follower, sent meanwhile, asks the provider itself instead of copying it."""
    fake.enqueue(
        Reply(body=completion("the leader's answer"), delay=3.0),
        Reply(body=completion("the follower's own answer"), delay=0.2),
    )
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        leader, follower = await asyncio.gather(
            http.post(RUN, json={"prompt": "slow question", "retention_days": 2 * SECONDS}, headers=alice.headers),
            _after(0.5, http.post(RUN, json={"prompt": "slow question"}, headers=alice.headers)),
        )

    answer = follower.json()
    assert leader.json()["status"] == "succeeded"
    assert (answer["status"], answer["cached"], answer["output"]) == ("succeeded", False, "the follower's own answer")
    assert fake.count == 2
    stored = await db.fetchrow("SELECT cached, output FROM agent_task WHERE id = $1", uuid.UUID(answer["task_id"]))
    assert stored["cached"] is False
    assert b"the follower's own answer" not in bytes(stored["output"])  # sealed, and its own


async def test_an_idempotency_replay_never_returns_an_expired_answer(database_url, fake):
    fake.enqueue(Reply(body=completion("first answer")), Reply(body=completion("second answer")))
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        headers = {**alice.headers, "Idempotency-Key": "short-lived"}
        body = {"prompt": "p", "cache": False, "retention_days": SECONDS}
        first = await http.post(RUN, json=body, headers=headers)
        await asyncio.sleep(1.2)
        again = await http.post(RUN, json=body, headers=headers)

    assert first.json()["output"] == "first answer"
    assert again.status_code == 200
    assert "idempotent-replayed" not in again.headers
    assert again.json()["task_id"] != first.json()["task_id"]
    assert again.json()["output"] == "second answer"


async def test_a_replay_waiting_on_a_task_that_expires_meanwhile_gets_a_fresh_answer(database_url, fake):
    """The replay waits for the task its key made; that task's answer comes after it expired."""
    fake.enqueue(
        Reply(body=completion("the expired answer"), delay=2.0), Reply(body=completion("a fresh answer"), delay=0.2)
    )
    async with gateway(database_url, fake) as (app, http):
        alice = await key(app)
        headers = {**alice.headers, "Idempotency-Key": "expires-while-waited-for"}
        body = {"prompt": "p", "cache": False, "retention_days": SECONDS}
        accepted = await http.post(RUN, params={"wait": "false"}, json=body, headers=headers)
        await asyncio.sleep(0.3)
        again = await http.post(RUN, json=body, headers=headers)

    assert accepted.status_code == 202
    assert again.status_code == 200, again.text
    assert (again.json()["status"], again.json()["output"]) == ("succeeded", "a fresh answer")
    assert "idempotent-replayed" not in again.headers
