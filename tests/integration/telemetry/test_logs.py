"""Logs with the scheduler running for real: an idle service says nothing at INFO, while a purge
that deleted rows and a sweep that interrupted tasks each say what they did, with the count."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from app.service.schedule import PURGE_JOB_ID, SWEEP_JOB_ID
from tests.support.app import replica
from tests.support.retention import add_tasks, owner_key

# The heartbeat every 0.1 s and the sweep every 0.3 s: a second of idling is some 15 job runs.
BUSY_SCHEDULE = {"task_lease_seconds": 0.3}


async def until_logged(
    caplog: pytest.LogCaptureFixture, logger: str, level: int = logging.INFO, within: float = 10
) -> logging.LogRecord:
    for _ in range(int(within / 0.05)):
        if found := [r for r in caplog.records if r.name == logger and r.levelno >= level]:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing logged by {logger} within {within} s")


async def test_an_idle_service_logs_nothing_at_info(database_url, caplog):
    caplog.set_level(logging.INFO)
    async with replica(database_url, **BUSY_SCHEDULE) as (app, _):
        sweep = app.state.components.schedule.scheduler.get_job(SWEEP_JOB_ID)
        first_run = sweep.next_run_time
        caplog.clear()
        await asyncio.sleep(1.2)
        idle = list(caplog.records)
        assert sweep.next_run_time > first_run + timedelta(seconds=0.5), "the jobs ran meanwhile"

    assert [r.getMessage() for r in idle if r.levelno >= logging.INFO] == []


async def test_a_failing_job_still_shows_at_error(database_url, caplog):
    caplog.set_level(logging.INFO)
    async with replica(database_url, **BUSY_SCHEDULE) as (app, _):
        scheduler = app.state.components.schedule.scheduler

        async def broken() -> None:
            raise RuntimeError("a job failed")

        scheduler.add_job(broken, id="broken", next_run_time=datetime.now(UTC))
        record = await until_logged(caplog, "apscheduler.executors.default", logging.WARNING)

    assert record.levelno == logging.ERROR
    assert "broken" in record.getMessage()


async def test_a_purge_logs_one_info_line_with_the_counts_only_when_it_deleted_rows(database_url, db, caplog):
    caplog.set_level(logging.INFO)
    await add_tasks(db, await owner_key(db), 3, expires_in=-timedelta(seconds=1))

    def purge_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "app.service.retention" and r.levelno >= logging.INFO]

    async def scheduled_purge(runs: int) -> None:
        schedule.scheduler.get_job(PURGE_JOB_ID).modify(next_run_time=datetime.now(UTC))  # due now
        schedule.scheduler.wakeup()
        for _ in range(100):
            if await db.fetchval("SELECT count(*) FROM audit_event WHERE action = 'purge'") == runs:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the scheduled purge did not run")

    async with replica(database_url, **BUSY_SCHEDULE) as (app, _):
        schedule = app.state.components.schedule
        await scheduled_purge(runs=1)
        deleted = purge_lines()
        caplog.clear()
        await scheduled_purge(runs=2)  # nothing left to delete
        idle = purge_lines()

    [line] = deleted
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith("retention purge deleted: 3 tasks, 0 audit events")
    assert idle == [], "a purge that deleted nothing says nothing at INFO"


async def test_a_sweep_that_interrupts_tasks_logs_how_many(database_url, db, caplog):
    caplog.set_level(logging.INFO)
    owner = await owner_key(db)
    orphans = await add_tasks(db, owner, 2, expires_in=timedelta(hours=1))
    await db.execute(
        "UPDATE agent_task SET status = 'running', lease_expires_at = now() - interval '1 second'"
        " WHERE id = ANY($1::uuid[])",
        orphans,
    )
    async with replica(database_url, **BUSY_SCHEDULE):
        record = await until_logged(caplog, "app.service.runner")

    assert record.levelno == logging.WARNING  # tasks lost to a dead runner are worth a warning
    assert "2 abandoned task(s)" in record.getMessage()
    statuses = await db.fetch("SELECT status, error_code FROM agent_task")
    assert {(r["status"], r["error_code"]) for r in statuses} == {("failed", "interrupted")}
