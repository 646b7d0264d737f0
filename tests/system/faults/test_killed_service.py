"""The service process is killed (SIGKILL) with tasks at the provider and callers waiting: after a
restart on the same port, no task is left pending or running (each succeeded or ended interrupted),
every acknowledged task reads back, and `agent-service purge` runs throughout as cron would. Run
with `-s` to see the counts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg
import httpx

from app.access.keys import KeyStore
from app.storage.database import Database
from tests.support.fake_openai import FakeOpenAI, Reply, completion
from tests.support.faults import (
    OURS,
    QUIET,
    UNFINISHED,
    CliPurges,
    Traffic,
    all_finished,
    check_retention,
    count_losses,
    final_purge,
    new_caller,
    nothing_unfinished,
    seed_retention,
    service_env,
    until,
)
from tests.support.service_process import ServiceProcess
from tests.support.settings import make_settings


async def test_a_killed_service_leaves_no_task_pending_or_running(database_url):
    lease = 2.0
    slow, fast = 10, 4

    def answer(body: dict[str, Any]) -> Reply:
        # "slow" tasks are still with the provider when the service dies; the others finish first.
        return Reply(delay=120) if "slow" in body["messages"][-1]["content"] else Reply(body=completion("done"))

    settings = make_settings(database_url, **QUIET, purge_batch_size=100)
    keys_db = Database(settings)
    await keys_db.open()
    try:
        alice = await new_caller(KeyStore(keys_db, 0))
    finally:
        await keys_db.close()
    conn = await asyncpg.connect(database_url)
    seeds_expired_at = await seed_retention(conn, alice.key_id, expiring_within=5, settings=settings)

    with FakeOpenAI(answer).running() as fake:
        env = service_env(
            database_url,
            OPENAI_API_KEY="sk-test",
            OPENAI_BASE_URL=fake.base_url,
            DEFAULT_MODEL="openai:gpt-test",
            TASK_LEASE_SECONDS=str(lease),
            PURGE_ENABLED="false",
            PURGE_BATCH_SIZE="100",
            AUTH_CACHE_SECONDS="60",
        )
        service = ServiceProcess(env)
        try:
            with CliPurges(env) as purges:
                await asyncio.to_thread(service.start)
                async with httpx.AsyncClient(base_url=service.base, timeout=30) as http:
                    traffic = Traffic(http, [alice])
                    for i in range(fast):
                        await traffic.submit(0, {"prompt": f"fast {i}", "cache": False}, wait=False)
                    fast_ids = list(traffic.acked)
                    for i in range(slow):
                        await traffic.submit(0, {"prompt": f"slow {i}", "cache": False}, wait=False)
                    # And callers waiting on slow tasks when the process dies (never acknowledged).
                    waiting = [
                        asyncio.create_task(traffic.submit(0, {"prompt": f"slow waited {i}", "cache": False}))
                        for i in range(3)
                    ]
                    await until(lambda: fake.count >= fast + slow + len(waiting), within=10)
                    await until(all_finished(conn, fast_ids), within=5)
                    before = Counter(r["status"] for r in await conn.fetch(f"SELECT status FROM agent_task {OURS}"))

                    service.kill()
                    killed_at = time.monotonic()
                    await asyncio.gather(*waiting)
                    await asyncio.to_thread(service.start)
                    restarted_at = time.monotonic()
                    await until(nothing_unfinished(conn), within=2 * lease + 5)
                    settled_at = time.monotonic()
                    reads = [await traffic.read(0, task_id) for task_id in traffic.acked]
            final = await final_purge(settings, not_before=seeds_expired_at)
            losses = await count_losses(conn, traffic)
            retention = await check_retention(conn, final)
            rows = await conn.fetch(f"SELECT status, error_code, output FROM agent_task {OURS}")
        finally:
            service.close()
            await conn.close()

    left_unfinished = sum(r["status"] in UNFINISHED for r in rows)
    outcomes = Counter(f"{r['status']}/{r['error_code']}" if r["error_code"] else r["status"] for r in rows)
    print(
        f"\n[service killed] before the kill: {dict(before)}; restart took {restarted_at - killed_at:.1f} s, "
        f"settled {settled_at - restarted_at:.1f} s after (lease {lease:g} s); tasks now: {dict(outcomes)}; "
        f"LOST (left pending/running, of {len(rows)} tasks)={left_unfinished}, acknowledged lost={losses.lost}; "
        f"CLI purges: {len(purges.results)} runs, failures={len(purges.failures)}; retention lost={retention.lost}"
    )
    assert left_unfinished == 0
    assert losses.lost == 0, losses
    assert set(outcomes) <= {"succeeded", "failed/interrupted"}
    assert outcomes["succeeded"] == fast
    assert outcomes["failed/interrupted"] == slow + len(waiting)
    assert all(c.status is None for c in traffic.calls if c.op == "submit")  # the waiting callers lost their line
    # The restarted service serves them all (and so proves it recovered its state from the database alone).
    assert [r.status_code if r is not None else None for r in reads] == [200] * len(traffic.acked)
    assert {r.json()["status"] for r in reads if r is not None} <= {"succeeded", "failed"}
    # The sweep runs at start-up and every lease; a lease outlives its last renewal by at most a lease.
    assert settled_at - restarted_at <= 2 * lease + 1
    assert purges.failures == []
    assert len(purges.results) >= 2
    assert retention.lost == 0, retention
    assert (retention.expired_left, retention.old_events_left) == (0, 0), retention
