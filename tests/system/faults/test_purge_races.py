"""Purges race each other and the load: in-process purges and two `agent-service purge` commands at
once, while clients make, read and erase tasks (some made to expire during the test), delete exactly
what expired, each expired row once, and nothing else. Run with `-s` to see the counts."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import httpx

from app.main import create_app
from tests.support.app import running
from tests.support.faults import (
    QUIET,
    Traffic,
    check_retention,
    count_losses,
    final_purge,
    new_caller,
    purging,
    seed_retention,
    service_env,
    settle,
)
from tests.support.service_process import cli
from tests.support.settings import make_settings


async def test_purges_racing_each_other_and_the_load_delete_exactly_what_expired(database_url):
    settings = make_settings(
        database_url, **QUIET, purge_batch_size=50, auth_cache_seconds=60, db_pool_max_size=8, default_model=None
    )
    short_days = 2.0 / 86_400  # these tasks expire two seconds after they are made, during the test
    async with running(create_app(settings)) as app:
        service = app.state.components
        callers = [await new_caller(service.keys) for _ in range(3)]
        conn = await asyncpg.connect(database_url)
        seeds_expired_at = await seed_retention(conn, callers[0].key_id, expiring_within=3, settings=settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as http:
            traffic = Traffic(http, callers)
            expiring: set[str] = set()
            stop = asyncio.Event()

            async def client(index: int) -> None:
                rng = random.Random(index)
                who = index % len(callers)
                n = 0
                while not stop.is_set():
                    n += 1
                    roll = rng.random()
                    if roll < 0.15:
                        body = {"prompt": f"brief {index}-{n}", "retention_days": short_days, "cache": False}
                        response = await traffic.submit(who, body)
                        if response is not None and response.status_code == 200:
                            expiring.add(response.json()["task_id"])
                    elif roll < 0.45:
                        await traffic.submit(who, {"prompt": f"kept {index}-{n}", "cache": False}, wait=roll < 0.35)
                    elif roll < 0.55 and traffic.owned[who]:
                        await traffic.delete(who, rng.choice(traffic.owned[who]))
                    elif roll < 0.9 and traffic.owned[who]:
                        await traffic.read(who, rng.choice(traffic.owned[who]))
                    else:
                        await traffic.listing(who)

            cli_env = service_env(database_url, PURGE_BATCH_SIZE="50")
            async with purging(service.purger, pause=0.02) as purges:
                workers = [asyncio.create_task(client(i)) for i in range(8)]
                commands = asyncio.gather(
                    *(asyncio.to_thread(cli, "purge", env=cli_env, check=False) for _ in range(2))
                )
                await asyncio.sleep(4.0)
                stop.set()
                await asyncio.gather(*workers)
                cli_runs = await commands
            await settle(conn, traffic, within=5)
        await asyncio.sleep(short_days * 86_400)  # the last brief tasks expire too: the final purge takes them all
        final = await final_purge(settings, not_before=seeds_expired_at)
        try:
            losses = await count_losses(conn, traffic, expiring=frozenset(expiring))
            retention = await check_retention(conn, final)
            expired_acked_left = await conn.fetchval(
                "SELECT count(*) FROM agent_task WHERE id = ANY($1::uuid[])", list(expiring)
            )
            purge_events = await conn.fetchval("SELECT count(*) FROM audit_event WHERE action = 'purge'")
        finally:
            await conn.close()

    cli_skipped = sum("nothing done" in run.stdout for run in cli_runs)
    print(
        f"\n[purge race] calls={len(traffic.calls)} acknowledged={losses.acknowledged} (+{len(expiring)} made to "
        f"expire) erased on purpose={len(traffic.deleted)}; in-process purges: runs={purges.runs} "
        f"skipped={purges.skipped} deleted={purges.tasks_deleted} tasks + {purges.events_deleted} events; "
        f"CLI purges: {len(cli_runs)} ({cli_skipped} skipped); LOST={losses.lost} (missing {losses.missing}, "
        f"resurrected {losses.resurrected}); retention lost={retention.lost}, expired left={retention.expired_left}"
    )
    assert [run.returncode for run in cli_runs] == [0] * len(cli_runs), [run.stderr for run in cli_runs]
    assert losses.lost == 0, losses
    assert retention.lost == 0, retention
    assert (retention.expired_left, retention.old_events_left, expired_acked_left) == (0, 0, 0)
    assert not [c for c in traffic.calls if c.status is None or c.status >= 500]
    assert purges.errors == []
    assert purges.runs - purges.skipped >= 2
    assert expiring
    assert traffic.deleted
    # Every purge that ran (not skipped for another) left its audit event; the final one too.
    assert purge_events == purges.runs - purges.skipped + len(cli_runs) - cli_skipped + 1
