"""GET /usage: a key's tokens and cost per model for one UTC month, summed from its tasks."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from genai_prices import Usage, calc_price

from app.domain import Role
from tests.support.app import key, replica
from tests.support.fake_openai import Reply, completion
from tests.support.providers import openai_at
from tests.support.routes import RUN


def price(model: str, prompt: int, completion_tokens: int) -> float:
    return float(
        calc_price(Usage(input_tokens=prompt, output_tokens=completion_tokens), model, provider_id="openai").total_price
    )


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


async def run(http, caller, prompt: str, model: str, *, cache: bool = True) -> dict:
    response = await http.post(RUN, json={"prompt": prompt, "model": model, "cache": cache}, headers=caller.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    return response.json()


async def test_usage_sums_tokens_and_cost_per_model_for_the_month(database_url, fake, db):
    fake.enqueue(
        Reply(body=completion(prompt_tokens=1000, completion_tokens=500)),
        Reply(body=completion(prompt_tokens=200, completion_tokens=100)),
    )
    async with replica(database_url, **openai_at(fake)) as (app, http):
        alice, bob = await key(app), await key(app)
        await run(http, alice, "one", "openai:gpt-4o-mini")
        await run(http, alice, "two", "openai:gpt-4o-mini")
        await run(http, alice, "two", "openai:gpt-4o-mini")  # a cache hit: no call, no tokens, no cost
        await run(http, alice, "three", "openai:unpriced-model")  # 7 + 2 tokens, the fake's default
        await run(http, bob, "bob's", "offline:echo")
        mine = await http.get("/usage", headers=alice.headers)
        explicit = await http.get(f"/usage?month={this_month()}", headers=alice.headers)
        other_month = await http.get("/usage?month=2001-01", headers=alice.headers)
        bobs = await http.get("/usage", headers=bob.headers)

    assert mine.status_code == 200, mine.text
    report = mine.json()
    assert explicit.json() == report
    cost = price("gpt-4o-mini", 1000, 500) + price("gpt-4o-mini", 200, 100)
    assert report["owner_key_id"] == str(alice.key_id)
    assert report["month"] == this_month()
    assert report["models"] == [
        {
            "model": "openai:gpt-4o-mini",
            "tasks": 3,
            "cached_tasks": 1,
            "prompt_tokens": 1200,
            "completion_tokens": 600,
            "total_tokens": 1800,
            "cost_usd": pytest.approx(cost),
            "unpriced_tasks": 0,
        },
        {
            "model": "openai:unpriced-model",
            "tasks": 1,
            "cached_tasks": 0,
            "prompt_tokens": 7,
            "completion_tokens": 2,
            "total_tokens": 9,
            "cost_usd": 0.0,
            "unpriced_tasks": 1,
        },
    ]
    assert (report["total_tokens"], report["cost_usd"]) == (1809, pytest.approx(cost))
    assert report["since"].startswith(f"{this_month()}-01T00:00:00")
    assert other_month.json()["models"] == []
    assert other_month.json()["since"] == "2001-01-01T00:00:00Z"
    assert other_month.json()["until"] == "2001-02-01T00:00:00Z"
    assert [m["model"] for m in bobs.json()["models"]] == ["offline:echo"], "each key sees its own"
    # A client's look at its own usage is not an audited act.
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'usage_read'") == 0


async def test_expired_tasks_drop_out_of_the_sum(database_url, fake, db):
    async with replica(database_url, **openai_at(fake)) as (app, http):
        alice = await key(app)
        await run(http, alice, "one", "openai:gpt-4o-mini")
        await db.execute("UPDATE agent_task SET expires_at = now() - interval '1 second'")
        report = (await http.get("/usage", headers=alice.headers)).json()

    assert report["models"] == []


async def test_auditors_and_admins_may_read_another_keys_usage_audited(database_url, fake, db):
    async with replica(database_url, **openai_at(fake)) as (app, http):
        alice, auditor, admin = await key(app), await key(app, Role.AUDITOR), await key(app, Role.ADMIN)
        await run(http, alice, "one", "openai:gpt-4o-mini")
        by_auditor = await http.get(
            f"/usage?owner_key_id={alice.key_id}&month={this_month()}",
            headers={**auditor.headers, "X-Request-ID": "usage-by-auditor"},
        )
        by_admin = await http.get(f"/usage?owner_key_id={alice.key_id}", headers=admin.headers)
        own = await http.get(f"/usage?owner_key_id={alice.key_id}", headers=alice.headers)

    assert by_auditor.status_code == by_admin.status_code == own.status_code == 200
    assert by_auditor.json() == by_admin.json() == own.json()
    assert by_auditor.json()["owner_key_id"] == str(alice.key_id)
    rows = await db.fetch(
        "SELECT actor_id, actor_role, channel, outcome, task_id, request_id, detail FROM audit_event "
        "WHERE action = 'usage_read' ORDER BY id"
    )
    assert [(r["actor_id"], r["actor_role"], r["outcome"], r["task_id"]) for r in rows] == [
        (auditor.key_id, "auditor", "ok", None),
        (admin.key_id, "admin", "ok", None),
    ], "the owner's own look is not audited"
    assert rows[0]["request_id"] == "usage-by-auditor"
    detail = rows[0]["detail"] if isinstance(rows[0]["detail"], dict) else json.loads(rows[0]["detail"])
    assert detail == {"owner_key_id": str(alice.key_id), "since": f"{this_month()}-01T00:00:00+00:00"}


async def test_a_client_may_not_name_another_key_whether_or_not_it_exists(database_url, fake, db):
    async with replica(database_url, **openai_at(fake)) as (app, http):
        alice, bob = await key(app), await key(app)
        answers = [
            await http.get(f"/usage?owner_key_id={owner}", headers=bob.headers)
            for owner in (alice.key_id, uuid.uuid4())
        ]

    assert [a.status_code for a in answers] == [403, 403]
    assert answers[0].json() == answers[1].json()
    assert answers[0].json()["code"] == "forbidden"
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'usage_read'") == 0


FULLWIDTH = "\uff12\uff10\uff12\uff16-\uff11\uff12"  # 2026-12 in fullwidth digits: digits, but not ASCII


@pytest.mark.parametrize(
    "month", ["2026-13", "2026-00", "26-12", "2026-1", "december", "2026-12-01", "0999-12", FULLWIDTH, ""]
)
async def test_a_bad_month_is_a_422_invalid_month_that_does_not_repeat_it(database_url, fake, month):
    async with replica(database_url, **openai_at(fake)) as (app, http):
        alice = await key(app)
        response = await http.get("/usage", params={"month": month}, headers=alice.headers)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_month"
    if month:
        assert month not in body["message"]


async def test_a_malformed_owner_key_id_is_a_422(database_url, fake):
    async with replica(database_url, **openai_at(fake)) as (app, http):
        auditor = await key(app, Role.AUDITOR)
        response = await http.get("/usage?owner_key_id=not-a-uuid", headers=auditor.headers)

    assert response.status_code == 422
    assert "not-a-uuid" not in response.text
