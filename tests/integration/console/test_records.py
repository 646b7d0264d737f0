"""The audit-log and retention pages: who sees what, the filters, and that every view is audited."""

from __future__ import annotations

import re
import uuid

from app.domain import Role
from tests.support.app import key, replica
from tests.support.console import signed_in
from tests.support.routes import RUN

AUDIT = "/console/audit"
RETENTION = "/console/retention"
_ROW_ID = re.compile(r'<th scope="row">(\d+)</th>')


def event_ids(html: str) -> list[int]:
    return [int(i) for i in _ROW_ID.findall(html)]


async def audit_reads(db) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'audit_read' AND channel = 'console'")
    )


async def test_a_client_is_refused_the_audit_log_as_at_the_api(database_url, db):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        api = await http.get("/audit/events", headers=alice.headers)
        await signed_in(http, alice.key)
        answer = await http.get(AUDIT)
        nav = await http.get("/console/tasks")
    assert api.status_code == answer.status_code == 403
    assert "the audit log is for the auditor and admin roles" in answer.text
    assert 'href="/console/audit"' not in nav.text  # not offered in the navigation either
    assert await audit_reads(db) == 0


async def test_an_auditor_filters_the_log_and_each_view_is_an_audited_read(database_url, db):
    async with replica(database_url) as (app, http):
        alice, auditor = await key(app), await key(app, Role.AUDITOR)
        task = (await http.post(RUN, json={"prompt": "hi"}, headers=alice.headers)).json()["task_id"]
        await http.get(f"/resources/get_agent_result/{task}", headers=alice.headers)
        await signed_in(http, auditor.key)

        everything = await http.get(AUDIT, headers={"X-Request-ID": "console-audit-all"})
        reads = await http.get(AUDIT, params={"action": "read", "channel": "rest"})
        by_actor = await http.get(AUDIT, params={"actor_id": str(alice.key_id)})
        by_task = await http.get(AUDIT, params={"task_id": task, "outcome": "ok"})
        future = await http.get(AUDIT, params={"since": "2999-01-01T00:00"})
        window = await http.get(AUDIT, params={"since": "2000-01-01T00:00", "until": "2999-01-01T00:00:00"})

    assert everything.status_code == 200
    assert 'aria-current="page">Audit log' in everything.text
    assert "console-audit-all" in everything.text  # the page names the audit_read it made
    rows = await db.fetch("SELECT id, action, task_id, actor_id, channel, outcome FROM audit_event ORDER BY id DESC")
    alice_rows = [r["id"] for r in rows if r["actor_id"] == alice.key_id]
    read_rows = [r["id"] for r in rows if (r["action"], r["channel"]) == ("read", "rest")]
    # (a view's own audit_read is written by the same statement, so it is not in what that view shows)
    task_rows = [r["id"] for r in rows if r["task_id"] == uuid.UUID(task) and r["action"] != "audit_read"]
    assert event_ids(reads.text) == read_rows
    assert read_rows
    assert event_ids(by_actor.text) == alice_rows
    assert len(alice_rows) == 2
    assert event_ids(by_task.text) == task_rows
    assert len(task_rows) == 2
    assert event_ids(future.text) == []
    assert "No audit events match." in future.text
    assert len(event_ids(window.text)) > 0
    assert 'value="2999-01-01T00:00"' in window.text  # the filter is kept in the form
    # Every view above, and the one after signing in none (the tasks page), is one audit_read over console.
    assert await audit_reads(db) == 6


async def test_the_audit_log_pages_with_the_audit_cursor(database_url, db):
    async with replica(database_url) as (app, http):
        auditor = await key(app, Role.AUDITOR)
        await signed_in(http, auditor.key)
        for _ in range(25):
            await http.get("/console/tasks")  # each a `list` event
        first = await http.get(AUDIT, params={"action": "list"})
        [link] = [line for line in first.text.splitlines() if 'rel="next"' in line]
        href = link.split('href="')[1].split('"')[0].replace("&amp;", "&")
        second = await http.get(href)
    assert "action=list" in href
    ids = event_ids(first.text) + event_ids(second.text)
    assert len(event_ids(first.text)) == 20
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == len(set(ids)) == 26


async def test_bad_filters_are_refused_without_echo(database_url, db):
    async with replica(database_url) as (app, http):
        auditor = await key(app, Role.AUDITOR)
        await signed_in(http, auditor.key)
        answers = [
            await http.get(AUDIT, params={name: "<b>nope</b>"})
            for name in ("actor_id", "action", "outcome", "channel", "task_id", "since", "until", "cursor")
        ]
        answers.append(await http.get(AUDIT, params={"since": "99999-01-01T00:00"}))
        answers.append(await http.get(AUDIT, params={"since": "2026-02-01T00:00", "until": "2026-01-01T00:00"}))
        answers.append(await http.get(AUDIT, params={"cursor": "9" * 40}))
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert "nope" not in answer.text
        assert "99999" not in answer.text
    assert await audit_reads(db) == 0  # nothing refused was read, nor audited


async def test_the_retention_page_shows_the_policy_and_the_purge_history_with_its_chart(database_url, db):
    async with replica(database_url, purge_cron="17 3 * * *") as (app, http):
        auditor, alice = await key(app, Role.AUDITOR), await key(app)
        await http.post(RUN, json={"prompt": "to expire"}, headers=alice.headers)
        await db.execute("UPDATE agent_task SET expires_at = now() - interval '1 minute'")
        await app.state.components.purger.run()
        await app.state.components.purger.run(dry_run=True)
        await app.state.components.purger.run()
        await signed_in(http, auditor.key)
        as_auditor = await http.get(RETENTION)
        await signed_in(http, alice.key)
        as_client = await http.get(RETENTION)

    for answer in (as_auditor, as_client):
        assert answer.status_code == 200
        assert "<code>17 3 * * *</code>" in answer.text
        assert re.search(r"Next scheduled purge</dt><dd>\d{4}-\d\d-\d\d 03:17:00 UTC", answer.text)
    assert "Purge history" in as_auditor.text
    assert as_auditor.text.count('<g class="run">') == 2  # the real runs; the dry one is in the table only
    assert as_auditor.text.count('class="bar-tasks"') == 2
    assert "<title>" in as_auditor.text
    assert 'role="img"' in as_auditor.text
    assert " style=" not in as_auditor.text  # the CSP allows no inline style
    assert as_auditor.text.count("<td>yes</td>") == 1  # the dry run
    assert "Purge history" not in as_client.text  # every client's figures: auditors and admins only
    events = await db.fetch("SELECT actor_id FROM audit_event WHERE action = 'audit_read' AND channel = 'console'")
    assert [e["actor_id"] for e in events] == [auditor.key_id]


async def test_neither_page_shows_a_prompt_or_an_answer(database_url, db):
    """The audit log and the purge history hold who, what and how many: never a task's contents,
    nor a filter value that was refused."""
    marker = f"MARKER-{uuid.uuid4().hex}"
    async with replica(database_url) as (app, http):
        alice, auditor = await key(app), await key(app, Role.AUDITOR)
        task = (await http.post(RUN, json={"prompt": f"secret {marker}"}, headers=alice.headers)).json()["task_id"]
        await http.get(f"/resources/get_agent_result/{task}", headers=alice.headers)
        await app.state.components.purger.run()
        await signed_in(http, auditor.key)
        await http.get(f"/console/tasks/{task}")
        pages = [
            await http.get(AUDIT),
            await http.get(AUDIT, params={"task_id": task}),
            await http.get(AUDIT, params={"action": marker}),
            await http.get(AUDIT, params={"actor_id": marker, "until": marker}),
            await http.get(RETENTION),
        ]
    assert [p.status_code for p in pages] == [200, 200, 422, 422, 200]
    for answer in pages:
        assert marker not in answer.text
        assert "No language model was called." not in answer.text  # the answer: on the task's page only


async def test_without_an_in_service_purge_the_page_says_so(database_url, db):
    async with replica(database_url, purge_enabled=False) as (app, http):
        await signed_in(http, (await key(app)).key)
        answer = await http.get(RETENTION)
    assert answer.status_code == 200
    assert "not scheduled by this process" in answer.text
    assert "an external cron job runs <code>agent-service purge</code>" in answer.text
