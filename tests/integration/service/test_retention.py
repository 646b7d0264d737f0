"""Retention: expired rows are invisible at once and the purge deletes exactly them, safely (in process:
the purge, its lock, its audit record, the schedule that fires it, the policy callers see)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from app.access.signing import AuditSigner
from app.domain import Actor, Channel, NewTask, Principal, Role, TaskStatus
from app.main import create_app
from app.schemas import AgentTask
from app.service.retention import Purger
from app.service.schedule import PURGE_JOB_ID
from app.service.trail import AuditTrail
from app.settings import Settings
from app.storage import retention as purge_sql
from app.storage import tasks as task_sql
from app.storage.database import Database
from tests.support.app import count_rows, running
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.retention import add_audit_events, add_tasks, owner_key
from tests.support.settings import TEST_SIGNING_KEY, make_settings


@pytest.fixture
async def purge_db(settings: Settings):
    db = Database(settings)
    await db.open()
    yield db
    await db.close()


def purger(db: Database, settings: Settings, **overrides: object) -> Purger:
    return Purger(db, settings.model_copy(update=overrides))


async def seal(db: Database) -> None:
    """Audit events are purged as whole sealed ranges only: seal what is there."""
    await AuditTrail(db, AuditSigner(TEST_SIGNING_KEY)).seal()


async def test_exactly_the_expired_rows_go(db, purge_db, settings):
    owner = await owner_key(db)
    live = await add_tasks(db, owner, 3, expires_in=timedelta(hours=1))
    await add_tasks(db, owner, 7, expires_in=-timedelta(seconds=1))
    for age in (366, 366, 364):  # three seals of two events each
        await add_audit_events(db, 2, age=timedelta(days=age))
        await seal(purge_db)

    report = await purger(purge_db, settings, purge_batch_size=2).run()

    assert report.deleted == {"agent_task": 7, "audit_event": 4, "audit_seal": 2}
    assert report.batches == 4 + 2  # 2+2+2+1 tasks, then one seal of 2 events at a time
    remaining = {r["id"] for r in await db.fetch("SELECT id FROM agent_task")}
    assert remaining == set(live)
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'read'") == 2


async def test_a_row_that_expires_after_the_run_started_is_left_whole(db):
    owner = await owner_key(db)
    cutoff = await purge_sql.database_now(db)
    later = await add_tasks(db, owner, 1, expires_in=timedelta(milliseconds=1))
    await add_tasks(db, owner, 2, expires_in=-timedelta(seconds=5))
    await asyncio.sleep(0.01)  # now the first row has expired too, but after the cut-off

    assert (await purge_sql.delete_expired_tasks(db, expired_by=cutoff, limit=100)).deleted == 2
    row = await db.fetchrow("SELECT output, prompt_hash FROM agent_task WHERE id = $1", later[0])
    assert bytes(row["output"]).startswith(b"sealed answer ")
    assert row["prompt_hash"]


async def test_a_dry_run_deletes_nothing_and_says_what_it_would_delete(db, purge_db, settings):
    owner = await owner_key(db)
    await add_tasks(db, owner, 5, expires_in=-timedelta(minutes=1))
    await add_audit_events(db, 3, age=timedelta(days=400))
    await seal(purge_db)

    report = await purger(purge_db, settings).run(dry_run=True)

    assert report.deleted == {"agent_task": 5, "audit_event": 3, "audit_seal": 0}
    assert await count_rows(db, "agent_task") == 5
    event = await db.fetchrow("SELECT detail FROM audit_event WHERE action = 'purge'")
    assert event["detail"]["dry_run"] is True


async def test_every_run_is_recorded_with_its_figures_and_no_row_contents(db, purge_db, settings):
    owner = await owner_key(db)
    await add_tasks(db, owner, 3, expires_in=-timedelta(minutes=1))

    await purger(purge_db, settings).run(channel=Channel.CLI)

    event = await db.fetchrow("SELECT * FROM audit_event WHERE action = 'purge'")
    assert (event["channel"], event["outcome"], event["task_id"], event["actor_id"]) == ("cli", "ok", None, None)
    detail = event["detail"]
    assert detail["deleted"] == {"agent_task": 3, "audit_event": 0, "audit_seal": 0}
    assert detail["dry_run"] is False
    assert datetime.fromisoformat(detail["started_at"]) <= datetime.fromisoformat(detail["finished_at"])
    assert "answer" not in str(detail)


async def test_a_purge_skips_quietly_while_another_process_holds_the_lock(db, purge_db, settings):
    owner = await owner_key(db)
    await add_tasks(db, owner, 3, expires_in=-timedelta(minutes=1))
    assert await purge_sql.try_purge_lock(db)  # another session, as another replica would

    report = await purger(purge_db, settings).run()

    assert report.skipped
    assert await count_rows(db, "agent_task") == 3
    await purge_sql.release_purge_lock(db)
    assert (await purger(purge_db, settings).run()).deleted["agent_task"] == 3


async def test_two_purges_at_once_delete_every_row_exactly_once(db, settings):
    owner = await owner_key(db)
    await add_tasks(db, owner, 2_000, expires_in=-timedelta(minutes=1))
    pools = [Database(settings), Database(settings)]
    for pool in pools:
        await pool.open()
    try:
        reports = await asyncio.gather(*(purger(p, settings, purge_batch_size=100).run() for p in pools))
    finally:
        for pool in pools:
            await pool.close()

    assert sum(r.deleted["agent_task"] for r in reports) == 2_000
    assert await count_rows(db, "agent_task") == 0


async def test_reads_and_writes_keep_working_during_a_large_purge(db, components, settings):
    owner_record, _, _ = await components.keys.create("busy", Role.CLIENT)
    principal = Principal(owner_record.id, "busy", Role.CLIENT)
    await add_tasks(db, owner_record.id, 50_000, expires_in=-timedelta(minutes=1))
    keep = await add_tasks(db, owner_record.id, 1, expires_in=timedelta(hours=1))
    done = asyncio.Event()
    served = 0

    async def traffic() -> None:
        nonlocal served
        while not done.is_set():
            await components.service.get_result(principal, keep[0], channel=Channel.REST)
            await components.service.run_task(principal, AgentTask(prompt=f"still here {served}"), channel=Channel.REST)
            served += 1

    load = asyncio.create_task(traffic())
    report = await purger(components.db, settings, purge_batch_size=1_000).run()
    done.set()
    await load

    assert report.deleted["agent_task"] == 50_000
    assert report.batches >= 50
    assert served > 0
    assert await db.fetchval("SELECT count(*) FROM agent_task WHERE expires_at > now()") == served + 1


async def test_the_scheduler_really_fires_the_purge(database_url, db):
    owner = await owner_key(db)
    await add_tasks(db, owner, 4, expires_in=-timedelta(minutes=1))
    settings = make_settings(database_url, purge_cron="0 3 * * *")  # not due for hours
    async with running(create_app(settings)) as app:
        schedule = app.state.components.schedule
        job = schedule.scheduler.get_job(PURGE_JOB_ID)
        assert str(job.trigger).startswith("cron[")
        job.modify(next_run_time=datetime.now(UTC))  # due now, through APScheduler's own API
        schedule.scheduler.wakeup()
        for _ in range(100):
            if await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'purge'"):
                break
            await asyncio.sleep(0.1)

    event = await db.fetchrow("SELECT channel, outcome, detail FROM audit_event WHERE action = 'purge'")
    assert (event["channel"], event["outcome"]) == ("system", "ok")
    assert event["detail"]["deleted"]["agent_task"] == 4
    assert await count_rows(db, "agent_task") == 0


async def test_the_schedule_can_be_switched_off(database_url):
    async with running(create_app(make_settings(database_url, purge_enabled=False))) as app:
        assert app.state.components.schedule.scheduler.get_job(PURGE_JOB_ID) is None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            ready = (await http.get("/readyz")).json()
    assert ready["checks"]["scheduler"] == "ok"  # still running: task leases need it
    assert ready["retention"]["purge_cron"] is None


async def test_an_expired_task_is_gone_for_every_reader_before_any_purge(client, alice, auditor, db):
    created = (
        await client.post("/tools/run_agent_task", json={"prompt": "x", "retention_days": 1e-5}, headers=alice.headers)
    ).json()
    await asyncio.sleep(1.0)  # 1e-5 days is 0.864 s
    path = f"/resources/get_agent_result/{created['task_id']}"

    assert (await client.get(path, headers=alice.headers)).status_code == 404
    assert (await client.get(path, headers=auditor.headers)).status_code == 404
    assert (await client.get("/resources/agent_results", headers=alice.headers)).json()["items"] == []
    assert (await client.delete(path, headers=alice.headers)).status_code == 404
    assert await count_rows(db, "agent_task") == 1  # still there: only the purge deletes
    outcomes = await db.fetch(
        "SELECT action, outcome FROM audit_event WHERE task_id = $1 ORDER BY id", uuid.UUID(created["task_id"])
    )
    assert [(o["action"], o["outcome"]) for o in outcomes] == [
        ("create", "ok"),
        ("read", "expired"),
        ("read", "expired"),
        ("delete", "expired"),
    ]


async def test_the_policy_is_visible_to_callers(client, alice):
    policy = (await client.get("/retention", headers=alice.headers)).json()
    assert policy == {
        "result_retention_days": 30,
        "failed_result_retention_days": None,
        "audit_retention_days": 365,
        "purge_cron": "0 * * * *",
    }
    assert (await client.get("/retention")).status_code == 401


async def test_failed_tasks_can_be_kept_for_less(database_url, db):
    with FakeOpenAI().running() as fake:
        fake.enqueue(Reply(400, {"error": {"message": "no", "code": "bad"}}))
        settings = make_settings(
            database_url, openai_base_url=fake.base_url, default_model="openai:m", failed_result_retention_days=1
        )
        async with running(create_app(settings)) as app:
            _, key, _ = await app.state.components.keys.create("f", Role.CLIENT)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                failed = (
                    await http.post(
                        "/tools/run_agent_task", json={"prompt": "x"}, headers={"Authorization": f"Bearer {key}"}
                    )
                ).json()
                ok = (
                    await http.post(
                        "/tools/run_agent_task", json={"prompt": "x"}, headers={"Authorization": f"Bearer {key}"}
                    )
                ).json()
    lifetime = datetime.fromisoformat(failed["expires_at"]) - datetime.fromisoformat(failed["created_at"])
    assert failed["status"] == TaskStatus.FAILED
    assert lifetime == timedelta(days=1)
    ok_lifetime = datetime.fromisoformat(ok["expires_at"]) - datetime.fromisoformat(ok["created_at"])
    assert ok_lifetime == timedelta(days=30)


async def test_new_task_rows_need_an_owner(db):
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await task_sql.insert_task(
            db,
            NewTask(uuid.uuid4(), uuid.uuid4(), TaskStatus.RUNNING, "offline:echo", None, "h", "k", None, {}, 60),
            Actor(None, None, Channel.REST),
        )
