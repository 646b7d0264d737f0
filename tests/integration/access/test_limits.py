"""Per-key limits, shared by every replica through PostgreSQL: a request rate (REST and MCP alike, a
key's own rate over the default, refused requests using up nothing) and a cap on running tasks
(nothing written when refused, a cache hit served at the cap)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.app import count_rows, key, replica
from tests.support.fake_openai import FakeOpenAI, Reply, completion
from tests.support.mcp import error_of, mcp_as
from tests.support.routes import LIST, RUN


def provider(fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "openai_api_key": "sk-test",
        "openai_base_url": fake.base_url,
        "default_model": "openai:gpt-test",
        "provider_timeout_seconds": 10,
    }


# -- request rate -----------------------------------------------------------------------------


async def test_a_key_over_its_rate_gets_429_with_retry_after(database_url):
    async with replica(database_url, rate_limit_per_minute=3) as (app, http):
        alice, bob = await key(app), await key(app)
        answers = [await http.get(LIST, headers=alice.headers) for _ in range(4)]
        bobs = await http.get(LIST, headers=bob.headers)

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.json()["code"] == "too_many_requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one request every 20 s at 3 a minute
    assert bobs.status_code == 200  # limits are per key


async def test_a_refused_request_does_not_use_up_the_allowance(database_url, db):
    async with replica(database_url, rate_limit_per_minute=2) as (app, http):
        alice = await key(app)
        spent = [(await http.get(LIST, headers=alice.headers)).status_code for _ in range(2)]
        paced_until = await db.fetchval("SELECT next_allowed_at FROM rate_limit")
        refused = [(await http.get(LIST, headers=alice.headers)).status_code for _ in range(5)]
        still = await db.fetchval("SELECT next_allowed_at FROM rate_limit")
        await db.execute("UPDATE rate_limit SET next_allowed_at = next_allowed_at - interval '30 seconds'")
        later = await http.get(LIST, headers=alice.headers)

    assert (spent, refused) == ([200, 200], [429] * 5)
    assert still == paced_until  # refused requests moved nothing
    assert later.status_code == 200  # once 30 s (one request's worth at 2 a minute) have passed


async def test_a_keys_own_rate_overrides_the_default(database_url):
    async with replica(database_url, rate_limit_per_minute=2) as (app, http):
        unlimited, strict = await key(app, rate_limit_per_minute=0), await key(app, rate_limit_per_minute=1)
        free = [(await http.get(LIST, headers=unlimited.headers)).status_code for _ in range(5)]
        paced = [(await http.get(LIST, headers=strict.headers)).status_code for _ in range(2)]

    assert free == [200] * 5
    assert paced == [200, 429]


async def test_the_rate_is_shared_by_every_replica(database_url):
    async with (
        replica(database_url, rate_limit_per_minute=4) as (app_a, http_a),
        replica(database_url, rate_limit_per_minute=4) as (_, http_b),
    ):
        alice = await key(app_a)
        answers = await asyncio.gather(
            *(http.get(LIST, headers=alice.headers) for http in (http_a, http_b, http_a, http_b, http_a, http_b))
        )

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 429, 429]


async def test_mcp_calls_count_against_the_same_rate(database_url):
    async with replica(database_url, rate_limit_per_minute=2) as (app, http):
        alice = await key(app)
        assert (await http.get(LIST, headers=alice.headers)).status_code == 200
        async with mcp_as(app.state.service, alice) as mcp:
            allowed = await mcp.call_tool("list_agent_results", {}, raise_on_error=False)
            refused = await mcp.call_tool("list_agent_results", {}, raise_on_error=False)

    assert not allowed.is_error
    error = error_of(refused)
    assert error["code"] == "too_many_requests"
    assert error["retry_after"] >= 1


async def test_the_pacing_table_is_unlogged(db):
    assert await db.fetchval("SELECT relpersistence FROM pg_class WHERE relname = 'rate_limit'") == b"u"


# -- running tasks ------------------------------------------------------------------------------


async def test_a_key_at_its_running_task_cap_gets_429_and_nothing_is_written(database_url, fake, db):
    fake.responder = lambda _: Reply(body=completion("slow"), delay=1.0)
    async with replica(database_url, max_running_tasks=2, **provider(fake)) as (app, http):
        alice, bob = await key(app), await key(app)
        first = await http.post(RUN, params={"wait": "false"}, json={"prompt": "one"}, headers=alice.headers)
        second = await http.post(RUN, params={"wait": "false"}, json={"prompt": "two"}, headers=alice.headers)
        third = await http.post(RUN, params={"wait": "false"}, json={"prompt": "three"}, headers=alice.headers)
        rows_at_cap = await count_rows(db, "agent_task")
        bobs = await http.post(RUN, params={"wait": "false"}, json={"prompt": "one"}, headers=bob.headers)
        await app.state.components.runner.drain(10)
        after = await http.post(RUN, json={"prompt": "four"}, headers=alice.headers)

    assert (first.status_code, second.status_code, third.status_code) == (202, 202, 429)
    assert third.json()["code"] == "too_many_running_tasks"
    assert int(third.headers["retry-after"]) >= 1
    assert rows_at_cap == 2  # the refused task left no row (and no audit event)
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'create'") == 4
    assert bobs.status_code == 202  # per key
    assert after.status_code == 200  # room again once they finished


async def test_a_cache_hit_is_served_at_the_cap(database_url, fake):
    async with replica(database_url, max_running_tasks=1, **provider(fake)) as (app, http):
        alice = await key(app)
        assert (await http.post(RUN, json={"prompt": "cached"}, headers=alice.headers)).status_code == 200
        fake.responder = lambda _: Reply(body=completion("slow"), delay=1.0)
        busy = await http.post(RUN, params={"wait": "false"}, json={"prompt": "busy"}, headers=alice.headers)
        hit = await http.post(RUN, json={"prompt": "cached"}, headers=alice.headers)
        refused = await http.post(RUN, json={"prompt": "new", "cache": False}, headers=alice.headers)

    assert busy.status_code == 202
    assert (hit.status_code, hit.json()["cached"]) == (200, True)
    assert refused.status_code == 429


async def test_the_running_task_cap_holds_across_replicas_under_concurrency(database_url, fake, db):
    fake.responder = lambda _: Reply(body=completion("slow"), delay=1.5)
    async with (
        replica(database_url, max_running_tasks=3, **provider(fake)) as (app_a, http_a),
        replica(database_url, max_running_tasks=3, **provider(fake)) as (_, http_b),
    ):
        alice = await key(app_a)
        answers = await asyncio.gather(
            *(
                http.post(
                    RUN, params={"wait": "false"}, json={"prompt": f"p{i}", "cache": i % 2 == 0}, headers=alice.headers
                )
                for i, http in enumerate([http_a, http_b] * 6)
            )
        )
        statuses = sorted(a.status_code for a in answers)
        rows = await count_rows(db, "agent_task")

    assert statuses == [202] * 3 + [429] * 9
    assert rows == 3


async def test_a_keys_own_cap_overrides_the_default(database_url, fake):
    fake.responder = lambda _: Reply(body=completion("slow"), delay=1.0)
    async with replica(database_url, max_running_tasks=1, **provider(fake)) as (app, http):
        roomy = await key(app, max_running_tasks=0)
        answers = [
            (
                await http.post(RUN, params={"wait": "false"}, json={"prompt": f"p{i}"}, headers=roomy.headers)
            ).status_code
            for i in range(3)
        ]
    assert answers == [202, 202, 202]
