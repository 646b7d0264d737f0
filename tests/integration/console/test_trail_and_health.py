"""The audit log's export and seal-chain check, and the health page: an auditor downloads the
same verifiable export as `GET /audit/export` (audited as `audit_export`, channel `console`) and
checks the chain (ok, or the first problem named); every key sees the readiness checks, auditors
and admins the live tasks and the metrics too; a refused window is a 422 that echoes nothing."""

from __future__ import annotations

from app.access.signing import AuditVerifier
from app.domain import Role
from app.service.export import verify_export
from tests.support.app import key, replica
from tests.support.console import signed_in
from tests.support.routes import RUN

WINDOW = {"since": "2020-01-01T00:00", "until": "2100-01-01T00:00"}


async def test_an_auditor_downloads_an_export_that_verifies_offline(database_url, db):
    async with replica(database_url) as (app, http):
        alice, auditor = await key(app), await key(app, Role.AUDITOR)
        await http.post(RUN, json={"prompt": "hi"}, headers=alice.headers)
        await app.state.components.trail.seal()
        await signed_in(http, auditor.key)
        page = await http.get("/console/audit")
        export = await http.get("/console/audit/export", params=WINDOW, headers={"X-Request-ID": "console-export-1"})
        pem = (await http.get("/audit/public-key", headers=auditor.headers)).content

    assert "Download the export" in page.text
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert export.headers["content-disposition"].startswith('attachment; filename="audit-export-20200101T000000Z')
    assert export.headers["cache-control"] == "no-store"
    check = verify_export(export.content.splitlines(keepends=True), AuditVerifier.from_pem(pem))
    assert check.ok, check.reason
    assert check.events >= 1
    row = await db.fetchrow(
        "SELECT action, channel, actor_id, detail FROM audit_event WHERE request_id = 'console-export-1'"
    )
    assert (row["action"], row["channel"], row["actor_id"]) == ("audit_export", "console", auditor.key_id)
    assert row["detail"] == {"since": "2020-01-01T00:00:00.000000Z", "until": "2100-01-01T00:00:00.000000Z"}


async def test_a_refused_export_window_is_a_422_that_echoes_nothing_and_records_nothing(database_url, db):
    probe = "<u>probe-51aa</u>"
    async with replica(database_url) as (app, http):
        auditor = await key(app, Role.AUDITOR)
        await signed_in(http, auditor.key)
        answers = [
            await http.get("/console/audit/export"),
            await http.get("/console/audit/export", params={"since": probe, "until": WINDOW["until"]}),
            await http.get("/console/audit/export", params={"since": WINDOW["until"], "until": WINDOW["since"]}),
        ]
    assert [a.status_code for a in answers] == [422, 422, 422]
    for answer in answers:
        assert "probe-51aa" not in answer.text
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'audit_export'") == 0


async def test_the_chain_check_says_ok_and_names_the_first_problem(database_url, db):
    async with replica(database_url) as (app, http):
        alice, auditor = await key(app), await key(app, Role.AUDITOR)
        await http.post(RUN, json={"prompt": "hi"}, headers=alice.headers)
        await app.state.components.trail.seal()
        await signed_in(http, auditor.key)
        good = await http.get("/console/audit/verify")
        victim = await db.fetchval("SELECT min(id) FROM audit_event")
        await db.execute("UPDATE audit_event SET outcome = 'denied' WHERE id = $1", victim)
        bad = await http.get("/console/audit/verify")

    assert good.status_code == bad.status_code == 200
    assert "The chain verifies" in good.text
    assert "The chain does not verify" in bad.text
    assert f"event {victim} was modified" in bad.text


async def test_the_health_page_shows_readiness_to_all_and_figures_to_auditors(database_url, db):
    async with replica(database_url) as (app, http):
        alice, auditor = await key(app), await key(app, Role.AUDITOR)
        await http.post(RUN, json={"prompt": "hi"}, headers=alice.headers)
        await signed_in(http, alice.key)
        clients = await http.get("/console/health")
        await signed_in(http, auditor.key)
        auditors = await http.get("/console/health")

    for answer in (clients, auditors):
        assert answer.status_code == 200
        assert "Readiness checks" in answer.text
        assert '<th scope="row">database</th>' in answer.text
    assert "Live tasks by status" not in clients.text
    assert "Tasks finished by this process, by status" not in clients.text
    assert "Live tasks by status" in auditors.text
    assert "Tasks finished by this process, by status" in auditors.text
    assert "Task latency, submit to result" in auditors.text
    assert '<th scope="row">succeeded</th>' in auditors.text
    assert "in flight" in auditors.text
