"""Monthly budgets: a key that has spent its tokens or dollars for the month gets 429
`budget_exceeded` with the reset time, on every replica, and nothing is written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from app.domain import Role
from tests.support.app import count_rows, key, replica
from tests.support.fake_openai import Reply, completion
from tests.support.mcp import error_of, mcp_as
from tests.support.providers import openai_at
from tests.support.routes import RUN


def next_month() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)


async def test_a_key_over_its_token_budget_is_refused_on_every_replica_and_nothing_is_written(database_url, fake, db):
    fake.enqueue(
        Reply(body=completion(prompt_tokens=1000, completion_tokens=500)),
        Reply(body=completion(prompt_tokens=300, completion_tokens=300)),
    )
    async with replica(database_url, **openai_at(fake)) as (one, first):
        async with replica(database_url, **openai_at(fake)) as (_, second):
            alice = await key(one, monthly_token_budget=2000)
            bob = await key(one)
            under = await first.post(RUN, json={"prompt": "one", "model": "openai:gpt-4o-mini"}, headers=alice.headers)
            still_under = await second.post(
                RUN, json={"prompt": "two", "model": "openai:gpt-4o-mini"}, headers=alice.headers
            )
            rows, events = await count_rows(db, "agent_task"), await count_rows(db, "audit_event")
            refused_here = await first.post(RUN, json={"prompt": "three"}, headers=alice.headers)
            refused_there = await second.post(RUN, json={"prompt": "three"}, headers=alice.headers)
            refused_async = await second.post(
                RUN, params={"wait": "false"}, json={"prompt": "three"}, headers=alice.headers
            )
            rows_after, events_after = await count_rows(db, "agent_task"), await count_rows(db, "audit_event")
            bobs = await second.post(RUN, json={"prompt": "three"}, headers=bob.headers)
            usage = await second.get("/usage", headers=alice.headers)

    assert (under.status_code, still_under.status_code) == (200, 200)  # 1,500 then 2,100 tokens spent
    for refused in (refused_here, refused_there, refused_async):
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "budget_exceeded"
        assert next_month().strftime("%Y-%m-%dT%H:%M:%SZ") in refused.json()["message"]
        retry_after = int(refused.headers["retry-after"])
        assert 0 < retry_after <= (next_month() - datetime.now(UTC)).total_seconds() + 1
        assert "three" not in refused.text
    assert (rows_after, events_after) == (rows, events)  # no task row, no audit event
    assert bobs.status_code == 200  # per key
    budget = usage.json()["budget"]
    assert budget["monthly_token_budget"] == 2000
    assert (budget["tokens"], budget["exceeded"]) == (2100, True)
    assert budget["resets_at"].startswith(next_month().strftime("%Y-%m-%dT00:00:00"))


async def test_a_dollar_budget_counts_the_priced_calls_and_raising_it_lets_the_next_task_through(database_url, fake):
    fake.responder = lambda _: Reply(body=completion(prompt_tokens=1000, completion_tokens=500))
    async with replica(database_url, **openai_at(fake)) as (app, http):
        alice = await key(app, monthly_usd_budget=Decimal("0.0001"))
        spent = await http.post(RUN, json={"prompt": "one", "model": "openai:gpt-4o-mini"}, headers=alice.headers)
        refused = await http.post(RUN, json={"prompt": "two", "model": "openai:gpt-4o-mini"}, headers=alice.headers)
        await app.state.components.keys.set_limits(
            alice.key_id, rate_limit_per_minute=None, max_running_tasks=None, monthly_usd_budget=Decimal(1)
        )
        allowed = await http.post(RUN, json={"prompt": "two", "model": "openai:gpt-4o-mini"}, headers=alice.headers)
        usage = await http.get("/usage", headers=alice.headers)

    assert spent.status_code == 200
    assert spent.json()["usage"]["cost_usd"] > 0.0001
    assert refused.status_code == 429
    assert refused.json()["code"] == "budget_exceeded"
    assert "USD" in refused.json()["message"]
    assert allowed.status_code == 200
    budget = usage.json()["budget"]
    assert (budget["monthly_usd_budget"], budget["exceeded"]) == (1.0, False)
    assert budget["cost_usd"] == sum(m["cost_usd"] for m in usage.json()["models"])


async def test_the_ledger_outlives_the_erasure_of_the_tasks_it_counts(database_url, fake):
    fake.responder = lambda _: Reply(body=completion(prompt_tokens=60, completion_tokens=40))
    async with replica(database_url, **openai_at(fake)) as (app, http):
        alice = await key(app, monthly_token_budget=100)
        done = await http.post(RUN, json={"prompt": "one"}, headers=alice.headers)
        erased = await http.delete(f"/resources/get_agent_result/{done.json()['task_id']}", headers=alice.headers)
        refused = await http.post(RUN, json={"prompt": "two"}, headers=alice.headers)

    assert erased.status_code == 204
    assert refused.status_code == 429
    assert refused.json()["code"] == "budget_exceeded"


async def test_a_key_without_a_budget_has_none_in_its_usage_report(database_url):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        assert (await http.get("/usage", headers=alice.headers)).json()["budget"] is None


async def test_over_mcp_a_spent_budget_is_the_same_budget_exceeded_error(database_url, fake):
    fake.responder = lambda _: Reply(body=completion(prompt_tokens=60, completion_tokens=40))
    async with replica(database_url, **openai_at(fake)) as (app, http):
        alice = await key(app, Role.CLIENT, monthly_token_budget=50)
        assert (await http.post(RUN, json={"prompt": "one"}, headers=alice.headers)).status_code == 200
        async with mcp_as(app.state.components.service, alice) as client:
            result = await client.call_tool("run_agent_task", {"prompt": "two"}, raise_on_error=False)

    error = error_of(result)
    assert error["code"] == "budget_exceeded"
    assert "two" not in json.dumps(error)
