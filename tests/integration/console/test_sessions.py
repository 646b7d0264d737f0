"""The console's sign-in over HTTP: a session per sign-in, its cookie, CSRF on every POST, idle and
absolute expiry, revocation, and the failure throttle shared with the API."""

from __future__ import annotations

import hashlib
import uuid

import asyncpg
import httpx
import pytest

from app.console.pages import CONTENT_SECURITY_POLICY
from app.domain import Role
from tests.support.app import key, replica
from tests.support.console import SIGN_IN, TASKS, csrf_of, sign_in, signed_in
from tests.support.routes import RUN


async def sessions(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM console_session")


async def test_signing_in_makes_a_server_side_session_behind_a_strict_cookie(database_url, db):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        answer = await sign_in(http, alice.key)

        assert (answer.status_code, answer.headers["location"]) == (303, TASKS)
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("console_session="))
        token = cookie.split(";")[0].split("=", 1)[1]
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/console"} <= attributes
        assert "secure" not in attributes  # plain http here; see the next test
        [row] = await sessions(db)
        assert row["id"] == hashlib.sha256(token.encode()).hexdigest()  # the token itself is never stored
        assert row["key_id"] == alice.key_id
        assert 7.9 * 3600 < (row["expires_at"] - row["created_at"]).total_seconds() <= 8 * 3600
        page = await http.get(TASKS)
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["cache-control"] == "no-store"
        assert alice.key not in page.text


async def test_cookies_are_secure_when_configured_so(database_url):
    async with replica(database_url, console_secure_cookie=True) as (app, http):
        alice = await key(app)
        form = await http.get(SIGN_IN)
        answer = await http.post(SIGN_IN, data={"api_key": alice.key, "csrf": csrf_of(form.text)})
    for cookie in [*form.headers.get_list("set-cookie"), *answer.headers.get_list("set-cookie")]:
        assert "secure" in {part.strip().lower() for part in cookie.split(";")}, cookie


async def test_a_wrong_key_gets_the_form_again_and_no_session(database_url, db):
    async with replica(database_url) as (_, http):
        wrong = "ask_" + "W" * 43
        answer = await sign_in(http, wrong)
    assert answer.status_code == 401
    assert "not valid" in answer.text
    assert wrong not in answer.text
    assert await sessions(db) == []


@pytest.mark.parametrize("csrf", [None, "", "forged"])
async def test_a_sign_in_without_the_forms_csrf_token_is_refused(database_url, db, csrf):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        await http.get(SIGN_IN)  # the cookie half of the double submit
        data = {"api_key": alice.key} | ({} if csrf is None else {"csrf": csrf})
        answer = await http.post(SIGN_IN, data=data)
    assert answer.status_code == 403
    assert "csrf_refused" in answer.text
    assert await sessions(db) == []


async def test_signing_out_needs_the_sessions_csrf_token_and_ends_the_session(database_url, db):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        csrf = await signed_in(http, alice.key)

        refused = await http.post("/console/sign-out", data={"csrf": "not-it"})
        assert refused.status_code == 403
        assert len(await sessions(db)) == 1
        assert (await http.get(TASKS)).status_code == 200

        done = await http.post("/console/sign-out", data={"csrf": csrf})
        assert (done.status_code, done.headers["location"]) == (303, SIGN_IN)
        assert await sessions(db) == []
        after = await http.get(TASKS)
        assert (after.status_code, after.headers["location"]) == (303, SIGN_IN)


async def test_a_hold_without_the_csrf_token_is_refused_and_not_placed(database_url, db):
    async with replica(database_url) as (app, http):
        auditor, alice = await key(app, Role.AUDITOR), await key(app)
        task_id = (await http.post(RUN, json={"prompt": "hello"}, headers=alice.headers)).json()["task_id"]
        csrf = await signed_in(http, auditor.key)
        other = httpx.AsyncClient(transport=http._transport, base_url="http://localhost")  # another session
        async with other:
            other_csrf = await signed_in(other, auditor.key)
        assert other_csrf != csrf

        for token in (None, other_csrf):
            data = {"reference": "MATTER-1"} | ({} if token is None else {"csrf": token})
            answer = await http.post(f"{TASKS}/{task_id}/holds", data=data)
            assert answer.status_code == 403
        assert await db.fetchval("SELECT count(*) FROM legal_hold") == 0

        placed = await http.post(f"{TASKS}/{task_id}/holds", data={"reference": "MATTER-1", "csrf": csrf})
        assert (placed.status_code, placed.headers["location"]) == (303, f"{TASKS}/{task_id}")
        assert await db.fetchval("SELECT count(*) FROM legal_hold WHERE task_id = $1", uuid.UUID(task_id)) == 1


@pytest.mark.parametrize(
    "ending",
    [
        "UPDATE console_session SET last_seen_at = now() - interval '31 minutes'",  # idle
        "UPDATE console_session SET expires_at = now()",  # absolute
    ],
)
async def test_an_idle_or_expired_session_sends_the_browser_to_sign_in(database_url, db, ending):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        await signed_in(http, alice.key)
        await db.execute(ending)
        answer = await http.get(TASKS)
    assert (answer.status_code, answer.headers["location"]) == (303, SIGN_IN)


async def test_a_page_view_restarts_the_idle_clock(database_url, db):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        await signed_in(http, alice.key)
        await db.execute("UPDATE console_session SET last_seen_at = now() - interval '29 minutes'")
        assert (await http.get(TASKS)).status_code == 200
        seen = await db.fetchval("SELECT now() - last_seen_at FROM console_session")
    assert seen.total_seconds() < 60


async def test_revoking_the_key_ends_its_sessions_at_once(database_url):
    # A long key cache, as in production: the session lookup does not go through it.
    async with replica(database_url, auth_cache_seconds=60) as (app, http):
        alice = await key(app)
        await signed_in(http, alice.key)
        await app.state.components.keys.revoke(alice.key_id)
        answer = await http.get(TASKS)
    assert (answer.status_code, answer.headers["location"]) == (303, SIGN_IN)


async def test_failed_sign_ins_are_throttled_like_failed_api_calls(database_url, db):
    async with replica(database_url, auth_failure_limit=2, auth_failure_window_seconds=60) as (app, http):
        alice = await key(app)
        wrong = ["ask_" + uuid.uuid4().hex + "X" * 11 for _ in range(3)]
        answers = [await sign_in(http, guess) for guess in wrong]
        api = await http.get("/resources/agent_results", headers={"Authorization": f"Bearer {wrong[0]}x"})
        still = await sign_in(http, alice.key)  # a real key still gets in from the same address

    assert [a.status_code for a in answers] == [401, 401, 429]
    assert int(answers[2].headers["retry-after"]) > 0
    assert "too_many_failed_attempts" in answers[2].text
    assert api.status_code == 429  # one throttle for the API and the console
    assert still.status_code == 303
    assert len(await sessions(db)) == 1


async def test_what_is_not_a_key_counts_against_the_sign_in_throttle_too(database_url, db):
    """Every refused sign-in is an audit event, so each must be one the throttle let through: a
    string that is not a key at all costs no lookup, but on the form it counts as a failure."""
    async with replica(database_url, auth_failure_limit=2, auth_failure_window_seconds=60) as (app, http):
        alice = await key(app)
        answers = [await sign_in(http, f"not a key {n}") for n in range(4)]
        still = await sign_in(http, alice.key)

    assert [a.status_code for a in answers] == [401, 401, 429, 429]
    assert still.status_code == 303
    denied = await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'sign_in' AND outcome = 'denied'")
    assert denied == 2  # the throttled ones left no row
