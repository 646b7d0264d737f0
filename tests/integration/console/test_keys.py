"""The keys page: an admin lists, makes (the key and its webhook secret shown once), changes and
revokes API keys, through the operations the CLI follows; each act, and each console sign-in and
sign-out, is in the audit log with channel `console`, and no secret is ever in an event."""

from __future__ import annotations

import json
import re
import uuid

import httpx

from app.access.hashing import hash_api_key
from app.domain import Role
from tests.support.app import key, replica
from tests.support.console import SIGN_IN, TASKS, sign_in, signed_in

KEYS = "/console/keys"
_SHOWN_KEY = re.compile(r'id="new-key">([^<]+)<')
_SHOWN_SECRET = re.compile(r'id="new-webhook-secret">([^<]+)<')


async def events(db, action: str) -> list[dict]:
    rows = await db.fetch(
        "SELECT actor_id, actor_role, channel, outcome, detail FROM audit_event WHERE action = $1 ORDER BY id", action
    )
    return [dict(r) for r in rows]


def form(csrf: str, **fields: str) -> dict[str, str]:
    return {"csrf": csrf, **fields}


async def test_an_admin_makes_a_key_that_is_shown_once_and_works(database_url, db):
    async with replica(database_url) as (app, http):
        admin = await key(app, Role.ADMIN)
        csrf = await signed_in(http, admin.key)
        made = await http.post(
            KEYS,
            data=form(
                csrf,
                name="Billing team",
                role="auditor",
                rate_limit_per_minute="30",
                max_running_tasks="0",
                store_output="never",
                max_retention_days="7.5",
            ),
        )
        plain, secret = _SHOWN_KEY.search(made.text), _SHOWN_SECRET.search(made.text)
        assert plain is not None
        assert secret is not None
        listing = await http.get(KEYS)
        works = await http.get("/resources/agent_results", headers={"Authorization": f"Bearer {plain.group(1)}"})

    assert made.status_code == 200
    assert made.headers["cache-control"] == "no-store"
    assert "this page is the only time" in made.text
    record = await db.fetchrow("SELECT * FROM api_key WHERE name = 'Billing team'")
    assert (record["role"], record["rate_limit_per_minute"], record["max_running_tasks"]) == ("auditor", 30, 0)
    assert (record["store_output"], record["max_retention_days"]) == ("never", 7.5)
    assert record["key_hash"] == hash_api_key(plain.group(1))
    assert works.status_code == 200  # the new key is a real one
    assert "Billing team" in listing.text
    assert str(record["id"]) in listing.text
    assert plain.group(1) not in listing.text
    assert record["key_hash"] not in listing.text
    [event] = await events(db, "key_create")
    assert (event["actor_id"], event["actor_role"], event["channel"], event["outcome"]) == (
        admin.key_id,
        "admin",
        "console",
        "ok",
    )
    assert event["detail"]["key_id"] == str(record["id"])
    assert event["detail"]["role"] == "auditor"
    assert event["detail"]["store_output"] == "never"
    everything = json.dumps([dict(r) for r in await db.fetch("SELECT * FROM audit_event")], default=str)
    for secret_text in (plain.group(1), secret.group(1), record["key_hash"]):
        assert secret_text not in everything


async def test_an_admin_changes_a_keys_limits_and_data_policy(database_url, db):
    async with replica(database_url) as (app, http):
        admin, alice = await key(app, Role.ADMIN), await key(app, max_retention_days=3.0)
        csrf = await signed_in(http, admin.key)
        page = await http.get(f"{KEYS}/{alice.key_id}")
        changed = await http.post(
            f"{KEYS}/{alice.key_id}/limits",
            data=form(
                csrf, rate_limit_per_minute="12", max_running_tasks="", store_output="never", max_retention_days="2"
            ),
        )
        after = await db.fetchrow("SELECT * FROM api_key WHERE id = $1", alice.key_id)
        cleared = await http.post(
            f"{KEYS}/{alice.key_id}/limits",
            data=form(
                csrf, rate_limit_per_minute="", max_running_tasks="", store_output="allowed", max_retention_days=""
            ),
        )
        last = await db.fetchrow("SELECT * FROM api_key WHERE id = $1", alice.key_id)

    assert page.status_code == 200
    assert "Save the limits" in page.text
    assert "Revoke the key" in page.text
    assert alice.key not in page.text
    assert (changed.status_code, changed.headers["location"]) == (303, KEYS)
    assert (after["rate_limit_per_minute"], after["max_running_tasks"]) == (12, None)
    assert (after["store_output"], after["max_retention_days"]) == ("never", 2.0)
    assert cleared.status_code == 303
    assert (last["rate_limit_per_minute"], last["store_output"], last["max_retention_days"]) == (None, "allowed", None)
    logged = await events(db, "key_limits")
    assert [e["detail"]["rate_limit_per_minute"] for e in logged] == [12, None]
    assert all(e["channel"] == "console" and e["actor_id"] == admin.key_id for e in logged)


async def test_revoking_asks_for_confirmation_and_ends_the_keys_sessions_at_once(database_url, db):
    async with replica(database_url) as (app, http):
        admin, alice = await key(app, Role.ADMIN), await key(app)
        csrf = await signed_in(http, admin.key)
        async with httpx.AsyncClient(transport=http._transport, base_url="http://localhost") as alices:
            await signed_in(alices, alice.key)
            assert await db.fetchval("SELECT count(*) FROM console_session WHERE key_id = $1", alice.key_id) == 1
            unconfirmed = await http.post(f"{KEYS}/{alice.key_id}/revoke", data=form(csrf))
            still = await db.fetchval("SELECT revoked_at FROM api_key WHERE id = $1", alice.key_id)
            revoked = await http.post(f"{KEYS}/{alice.key_id}/revoke", data=form(csrf, confirm="yes"))
            sessions = await db.fetchval("SELECT count(*) FROM console_session WHERE key_id = $1", alice.key_id)
            alices_next = await alices.get(TASKS)
        listing = await http.get(KEYS)
        again = await http.get(f"{KEYS}/{alice.key_id}")

    assert unconfirmed.status_code == 422
    assert "tick the box" in unconfirmed.text
    assert still is None
    assert (revoked.status_code, revoked.headers["location"]) == (303, KEYS)
    assert sessions == 0  # the rows went with the revocation
    assert (alices_next.status_code, alices_next.headers["location"]) == (303, SIGN_IN)
    assert "Revoke the key" not in again.text  # a revoked key has no revoke form
    assert str(alice.key_id) in listing.text
    [event] = await events(db, "key_revoke")
    assert event["detail"]["key_id"] == str(alice.key_id)
    assert event["channel"] == "console"


async def test_bad_key_forms_are_refused_without_echo_and_change_nothing(database_url, db):
    probe = "<b>probe-7c1e</b>"
    async with replica(database_url) as (app, http):
        admin = await key(app, Role.ADMIN)
        csrf = await signed_in(http, admin.key)
        before = await db.fetchval("SELECT count(*) FROM api_key")
        answers = [
            await http.post(KEYS, data=form(csrf, name="", role="client")),
            await http.post(KEYS, data=form(csrf, name="x" * 201, role="client")),
            await http.post(KEYS, data=form(csrf, name="ok", role=probe)),
            await http.post(KEYS, data=form(csrf, name="ok", rate_limit_per_minute=probe)),
            await http.post(KEYS, data=form(csrf, name="ok", rate_limit_per_minute="-1")),
            await http.post(KEYS, data=form(csrf, name="ok", max_retention_days="0")),
            await http.post(KEYS, data=form(csrf, name="ok", max_retention_days=probe)),
            await http.post(KEYS, data=form(csrf, name="ok", store_output=probe)),
            await http.post(f"{KEYS}/{admin.key_id}/limits", data=form(csrf, store_output=probe)),
            await http.post(
                f"{KEYS}/{admin.key_id}/limits", data=form(csrf, store_output="never", max_running_tasks="1e9")
            ),
        ]
        forged = await http.post(KEYS, data={"csrf": "not-the-token", "name": "forged"})
        unknown = await http.get(f"{KEYS}/{uuid.uuid4()}")
        unknown_revoke = await http.post(f"{KEYS}/{uuid.uuid4()}/revoke", data=form(csrf, confirm="yes"))
        not_an_id = await http.get(f"{KEYS}/{probe}")

    assert [a.status_code for a in answers] == [422] * len(answers)
    assert forged.status_code == 403
    assert (unknown.status_code, unknown_revoke.status_code, not_an_id.status_code) == (404, 404, 404)
    for answer in [*answers, forged, unknown, not_an_id]:
        assert "probe-7c1e" not in answer.text
    assert await db.fetchval("SELECT count(*) FROM api_key") == before
    assert await db.fetchval("SELECT store_output FROM api_key WHERE id = $1", admin.key_id) == "allowed"
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action LIKE 'key_%'") == 0


async def test_only_admins_are_offered_or_shown_the_keys(database_url):
    async with replica(database_url) as (app, http):
        auditor, admin = await key(app, Role.AUDITOR), await key(app, Role.ADMIN)
        await signed_in(http, auditor.key)
        auditors_tasks = await http.get(TASKS)
        refused = await http.get(KEYS)
        refused_page = await http.get(f"{KEYS}/{admin.key_id}")
        await signed_in(http, admin.key)
        admins_tasks = await http.get(TASKS)

    assert 'href="/console/keys"' not in auditors_tasks.text
    assert (refused.status_code, refused_page.status_code) == (403, 403)
    assert str(admin.key_id) not in refused_page.text
    assert 'href="/console/keys"' in admins_tasks.text


async def test_sign_in_and_out_are_audited_and_a_refused_sign_in_keeps_no_trace_of_the_key(database_url, db):
    wrong = "ask_" + "W" * 43
    async with replica(database_url) as (app, http):
        auditor = await key(app, Role.AUDITOR)
        refused = await sign_in(http, wrong)
        not_a_key = await sign_in(http, "hunter2")
        csrf = await signed_in(http, auditor.key)
        out = await http.post("/console/sign-out", data={"csrf": csrf})

    assert (refused.status_code, not_a_key.status_code, out.status_code) == (401, 401, 303)
    signs = await db.fetch(
        "SELECT action, outcome, actor_id, actor_role, channel, detail FROM audit_event"
        " WHERE action IN ('sign_in', 'sign_out') ORDER BY id"
    )
    assert [(r["action"], r["outcome"], r["actor_id"]) for r in signs] == [
        ("sign_in", "denied", None),
        ("sign_in", "denied", None),
        ("sign_in", "ok", auditor.key_id),
        ("sign_out", "ok", auditor.key_id),
    ]
    assert all(r["channel"] == "console" and r["detail"] is None for r in signs)
    everything = json.dumps([dict(r) for r in await db.fetch("SELECT * FROM audit_event")], default=str)
    for presented in (wrong, "hunter2", hash_api_key(wrong), auditor.key):
        assert presented not in everything


async def test_budgets_are_set_at_creation_kept_unless_named_and_cleared_by_a_blank(database_url, db):
    async with replica(database_url) as (app, http):
        admin = await key(app, Role.ADMIN)
        csrf = await signed_in(http, admin.key)
        made = await http.post(
            KEYS, data=form(csrf, name="Budgeted", monthly_token_budget="50000", monthly_usd_budget="12.50")
        )
        key_id = await db.fetchval("SELECT id FROM api_key WHERE name = 'Budgeted'")
        page = await http.get(f"{KEYS}/{key_id}")
        kept = await db.fetchrow("SELECT monthly_token_budget, monthly_usd_budget FROM api_key WHERE id = $1", key_id)
        await http.post(
            f"{KEYS}/{key_id}/limits",
            data=form(csrf, store_output="allowed", monthly_token_budget="", monthly_usd_budget="3"),
        )
        changed = await db.fetchrow(
            "SELECT monthly_token_budget, monthly_usd_budget FROM api_key WHERE id = $1", key_id
        )
        refused = await http.post(KEYS, data=form(csrf, name="x", monthly_usd_budget="<b>lots</b>"))

    assert made.status_code == 200
    assert "50000 tokens, $12.5 a month" in made.text
    assert 'value="50000"' in page.text
    assert (kept["monthly_token_budget"], str(kept["monthly_usd_budget"])) == (50000, "12.500000")
    assert (changed["monthly_token_budget"], str(changed["monthly_usd_budget"])) == (None, "3.000000")
    assert refused.status_code == 422
    assert "lots" not in refused.text
    [created, limited] = [e["detail"] for e in await events(db, "key_create") + await events(db, "key_limits")]
    assert (created["monthly_token_budget"], created["monthly_usd_budget"]) == (50000, "12.500000")
    assert (limited["monthly_token_budget"], limited["monthly_usd_budget"]) == (None, "3.000000")
