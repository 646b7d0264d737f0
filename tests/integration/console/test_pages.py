"""The console's pages follow the API's role rules: a client sees its own tasks, auditors and admins
every task, its audit trail and its holds; viewing an output is an audited read over `console`."""

from __future__ import annotations

import uuid

from app.domain import Role
from tests.support.app import key, replica
from tests.support.console import TASKS, signed_in
from tests.support.routes import RUN

OUTPUT = "No language model was called."  # the offline provider's answer


async def run(http, caller, prompt: str = "hello") -> str:
    answer = await http.post(RUN, json={"prompt": prompt}, headers=caller.headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["task_id"])


async def console_events(db, task_id: str) -> list[tuple[str, str, str]]:
    rows = await db.fetch(
        "SELECT action, outcome, channel FROM audit_event WHERE task_id = $1 AND channel = 'console' ORDER BY id",
        uuid.UUID(task_id),
    )
    return [tuple(r) for r in rows]


async def test_a_client_lists_and_reads_only_its_own_tasks(database_url, db):
    async with replica(database_url) as (app, http):
        alice, bob = await key(app), await key(app)
        mine, theirs = await run(http, alice, "alice asks"), await run(http, bob, "bob asks")
        await signed_in(http, alice.key)

        listing = await http.get(TASKS)
        own = await http.get(f"{TASKS}/{mine}")
        other = await http.get(f"{TASKS}/{theirs}")
        unknown = await http.get(f"{TASKS}/{uuid.uuid4()}")
        not_an_id = await http.get(f"{TASKS}/not-a-uuid")

    assert mine in listing.text
    assert theirs not in listing.text
    assert own.status_code == 200
    assert OUTPUT in own.text  # the output is shown on the task's page
    assert OUTPUT not in listing.text  # and only there
    assert "Audit trail" not in own.text  # the audit log is for auditors and admins
    assert "Place a legal hold" not in own.text
    assert (other.status_code, unknown.status_code, not_an_id.status_code) == (404, 404, 404)
    assert other.text == unknown.text  # another client's task is exactly an unknown one
    assert await console_events(db, mine) == [("read", "ok", "console")]
    assert await console_events(db, theirs) == [("read", "denied", "console")]


async def test_an_auditor_sees_every_task_its_trail_and_its_holds(database_url, db):
    async with replica(database_url) as (app, http):
        alice, auditor = await key(app), await key(app, Role.AUDITOR)
        task_id = await run(http, alice, "audited question")
        csrf = await signed_in(http, auditor.key)

        listing = await http.get(TASKS)
        page = await http.get(f"{TASKS}/{task_id}")
        placed = await http.post(f"{TASKS}/{task_id}/holds", data={"reference": "MATTER-7", "csrf": csrf})
        held = await http.get(f"{TASKS}/{task_id}")
        hold_id = await db.fetchval("SELECT id FROM legal_hold WHERE task_id = $1", uuid.UUID(task_id))
        released = await http.post(f"/console/holds/{hold_id}/release", data={"csrf": csrf, "task_id": task_id})
        after = await http.get(f"{TASKS}/{task_id}")

    assert task_id in listing.text
    assert OUTPUT in page.text
    assert "Audit trail" in page.text
    assert "<td>console</td>" in page.text  # the read this very page made, in its trail
    assert placed.status_code == released.status_code == 303
    assert "MATTER-7" in held.text
    assert "in force" in held.text
    assert "MATTER-7" not in after.text
    assert await console_events(db, task_id) == [
        ("read", "ok", "console"),
        ("audit_read", "ok", "console"),
        ("hold_place", "ok", "console"),
        ("read", "ok", "console"),
        ("audit_read", "ok", "console"),
        ("hold_release", "ok", "console"),
        ("read", "ok", "console"),
        ("audit_read", "ok", "console"),
    ]


async def test_a_client_may_not_place_a_hold(database_url, db):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        task_id = await run(http, alice)
        csrf = await signed_in(http, alice.key)
        answer = await http.post(f"{TASKS}/{task_id}/holds", data={"reference": "MATTER-1", "csrf": csrf})
    assert answer.status_code == 403
    assert "legal holds are for the auditor and admin roles" in answer.text
    assert await db.fetchval("SELECT count(*) FROM legal_hold") == 0


async def test_the_tasks_filter_by_status_and_id_and_page_with_the_cursor(database_url, db):
    async with replica(database_url) as (app, http):
        alice = await key(app)
        ids = [await run(http, alice, f"question {n}") for n in range(21)]
        await db.execute("UPDATE agent_task SET status = 'failed' WHERE id = $1", uuid.UUID(ids[0]))
        await signed_in(http, alice.key)

        first = await http.get(TASKS)
        [next_page] = [line for line in first.text.splitlines() if 'rel="next"' in line]
        href = next_page.split('href="')[1].split('"')[0].replace("&amp;", "&")
        second = await http.get(href)
        failed = await http.get(TASKS, params={"status": "failed"})
        by_id = await http.get(TASKS, params={"task_id": ids[5]})
        bad_status = await http.get(TASKS, params={"status": "<script>x</script>"})
        bad_id = await http.get(TASKS, params={"task_id": "<b>nope</b>"})

    on_first = [i for i in ids if i in first.text]
    assert len(on_first) == 20
    assert ids[0] not in first.text  # the oldest is on the second page
    assert ids[0] in second.text
    assert 'rel="next"' not in second.text
    assert [i for i in ids if i in failed.text] == [ids[0]]
    assert [i for i in ids if i in by_id.text] == [ids[5]]
    for bad in (bad_status, bad_id):
        assert bad.status_code == 422
        assert "<script>x" not in bad.text
        assert "nope" not in bad.text
    # Each listing is audited: the one after signing in, the two pages, the two filters (not the refused ones).
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'list' AND channel = 'console'") == 5


async def test_auditors_filter_the_tasks_by_model_owner_and_creation_time(database_url, db):
    async with replica(database_url) as (app, http):
        alice, bob, auditor = await key(app), await key(app), await key(app, Role.AUDITOR)
        old, alices, bobs = await run(http, alice, "old"), await run(http, alice, "new"), await run(http, bob, "b")
        await db.execute("UPDATE agent_task SET created_at = '2026-01-15T12:00Z' WHERE id = $1", uuid.UUID(old))
        await db.execute("UPDATE agent_task SET model = 'offline:other-model' WHERE id = $1", uuid.UUID(bobs))
        await signed_in(http, auditor.key)
        by_owner = await http.get(TASKS, params={"owner_id": str(alice.key_id)})
        by_model = await http.get(TASKS, params={"model": "offline:other-model"})
        in_january = await http.get(
            TASKS, params={"created_from": "2026-01-01T00:00", "created_to": "2026-02-01T00:00"}
        )
        from_february = await http.get(TASKS, params={"created_from": "2026-02-01T00:00"})
        combined = await http.get(TASKS, params={"owner_id": str(bob.key_id), "model": "offline:other-model"})
        await signed_in(http, alice.key)
        client_owner = await http.get(TASKS, params={"owner_id": str(bob.key_id)})  # not a client's filter

    def shown(answer) -> set[str]:
        assert answer.status_code == 200, answer.text
        return {t for t in (old, alices, bobs) if t in answer.text}

    assert shown(by_owner) == {old, alices}
    assert shown(by_model) == {bobs}
    assert shown(in_january) == {old}
    assert shown(from_february) == {alices, bobs}
    assert shown(combined) == {bobs}
    assert shown(client_owner) == {old, alices}  # a client sees its own tasks, whatever it asks
    assert 'id="owner_id"' in by_owner.text
    assert 'id="owner_id"' not in client_owner.text  # and is not offered the field


async def test_refused_task_filters_answer_422_without_echo_and_are_not_audited(database_url, db):
    probe = "<i>probe-93b0</i>"
    async with replica(database_url) as (app, http):
        auditor = await key(app, Role.AUDITOR)
        await signed_in(http, auditor.key)
        before = await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'list'")
        answers = [
            await http.get(TASKS, params={"owner_id": probe}),
            await http.get(TASKS, params={"model": probe * 20}),  # longer than a model's name can be
            await http.get(TASKS, params={"model": "a\x00b"}),
            await http.get(TASKS, params={"created_from": probe}),
            await http.get(TASKS, params={"created_to": "0001-01-01T00:00"}),
            await http.get(TASKS, params={"created_from": "2026-02-01T00:00", "created_to": "2026-01-01T00:00"}),
        ]
        after = await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'list'")

    assert [a.status_code for a in answers] == [422] * len(answers)
    for answer in answers:
        assert "probe-93b0" not in answer.text
        assert 'role="alert"' in answer.text  # a clear message of the console's own
    assert "created to must be later than created from" in answers[-1].text
    assert after == before
