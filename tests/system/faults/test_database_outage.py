"""PostgreSQL stops under load: every call meanwhile is a quick 503 (never a hang or a 500), the
service recovers by itself when the database returns, and nothing acknowledged is lost; a retention
purge runs throughout and deletes exactly what expired. Run with `-s` to see the counts."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from app.devdb.cluster import LocalPostgres
from app.main import create_app
from tests.support.app import running
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.faults import (
    QUIET,
    Traffic,
    check_retention,
    count_losses,
    final_purge,
    new_caller,
    purging,
    seed_retention,
    settle,
)
from tests.support.postgres import stoppable_cluster
from tests.support.settings import make_settings


@pytest.fixture
def own_cluster() -> Iterator[tuple[LocalPostgres, int, str]]:
    """A cluster of this test's own, which it may stop and start (the shared test server stays up)."""
    with stoppable_cluster("faults") as cluster:
        yield cluster


async def test_postgres_stopping_under_load_answers_503_quickly_recovers_and_loses_nothing(own_cluster):
    cluster, port, url = own_cluster
    settings = make_settings(
        url,
        **QUIET,
        openai_api_key="sk-test",
        default_model="openai:gpt-test",
        db_connect_timeout_seconds=1,
        db_command_timeout_seconds=2,
        db_pool_max_size=8,
        auth_cache_seconds=60,  # the outage meets the operations themselves, not only authentication
        task_lease_seconds=2,
        provider_timeout_seconds=5,
        purge_batch_size=100,
    )
    # Any single request: waiting for a connection, then one statement; beyond that it must be a 503.
    db_bound = settings.db_connect_timeout_seconds + settings.db_command_timeout_seconds
    provider_delay = 0.2
    outage_seconds = 3.0
    with FakeOpenAI(lambda _: Reply(delay=provider_delay)).running() as fake:
        settings = settings.model_copy(update={"openai_base_url": fake.base_url})
        async with running(create_app(settings)) as app:
            service = app.state.components
            callers = [await new_caller(service.keys) for _ in range(3)]
            seed_conn = await asyncpg.connect(url)
            try:
                seeds_expired_at = await seed_retention(
                    seed_conn, callers[0].key_id, expiring_within=6, settings=settings
                )
            finally:
                await seed_conn.close()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as http:
                traffic = Traffic(http, callers)
                stop = asyncio.Event()
                async with purging(service.purger) as purges:
                    workers = [asyncio.create_task(_mixed_client(traffic, i, stop)) for i in range(16)]
                    await asyncio.sleep(1.5)
                    await asyncio.to_thread(cluster.stop)
                    down_at = time.monotonic()
                    probe_started = time.monotonic()
                    health = await http.get("/healthz")
                    ready = await http.get("/readyz")
                    probe_seconds = time.monotonic() - probe_started
                    await asyncio.sleep(outage_seconds)
                    restart_at = time.monotonic()
                    await asyncio.to_thread(cluster.start, port)
                    up_at = time.monotonic()
                    await asyncio.sleep(2.0)
                    stop.set()
                    await asyncio.gather(*workers)
                ready_after = await http.get("/readyz")
            conn = await asyncpg.connect(url)
            # A 202 whose runner met the outage is settled by the lease sweep: lease expiry + one sweep period.
            await settle(conn, traffic, within=2 * settings.task_lease_seconds + provider_delay + db_bound + 2)

    try:
        final = await final_purge(settings, not_before=seeds_expired_at)
        losses = await count_losses(conn, traffic)
        retention = await check_retention(conn, final)
    finally:
        await conn.close()

    during = [c for c in traffic.calls if down_at <= c.started < restart_at]
    after = [c for c in traffic.calls if c.started >= up_at]
    print(
        f"\n[postgres outage] calls={len(traffic.calls)} during outage={len(during)} "
        f"(slowest {max(c.seconds for c in during):.3f} s, bound {db_bound:g} s) after={len(after)}; "
        f"acknowledged={losses.acknowledged} final={dict(losses.statuses)}; LOST={losses.lost} "
        f"(missing {losses.missing}, unfinished {losses.unfinished}, changed {losses.changed}); "
        f"purge: runs={purges.runs} unavailable={purges.unavailable} deleted={purges.tasks_deleted} tasks "
        f"+ {purges.events_deleted} events, errors={purges.errors}; retention lost={retention.lost}"
    )
    print(f"[postgres outage] answers: {dict(traffic.statuses())}")
    assert losses.lost == 0, losses
    assert retention.lost == 0, retention
    assert (retention.expired_left, retention.old_events_left) == (0, 0), retention
    assert purges.errors == []
    assert purges.runs > 0
    assert purges.unavailable > 0  # it did run into the outage
    # During the outage: a quick 503 database_unavailable for everything, never a hang or a 500.
    assert len(during) > 20
    assert {(c.status, c.code) for c in during if c.ended < restart_at} == {(503, "database_unavailable")}
    assert max(c.seconds for c in during) <= db_bound
    assert (health.status_code, ready.status_code) == (200, 503)
    assert probe_seconds <= db_bound
    # No call ever failed another way: a 5xx other than 503, or no answer.
    assert not [c for c in traffic.calls if c.status is None or (c.status >= 500 and c.status != 503)]
    # Recovered without a restart: every call after the database returned succeeded.
    assert len(after) > 20
    assert {c.status for c in after} <= {200, 202}, Counter((c.status, c.code) for c in after)
    assert ready_after.status_code == 200
    assert fake.count > 0


async def _mixed_client(traffic: Traffic, index: int, stop: asyncio.Event) -> None:
    """Submits (waited for or not, some identical so the cache answers) and reads of its own tasks."""
    rng = random.Random(index)
    who = index % len(traffic.callers)
    n = 0
    while not stop.is_set():
        n += 1
        roll = rng.random()
        if roll < 0.3:
            response = await traffic.submit(who, {"prompt": f"question {index}-{n}", "cache": False})
        elif roll < 0.4:
            response = await traffic.submit(who, {"prompt": f"a popular question {n % 3}"})
        elif roll < 0.65:
            response = await traffic.submit(who, {"prompt": f"later {index}-{n}", "cache": False}, wait=False)
        elif traffic.owned[who]:
            response = await traffic.read(who, rng.choice(traffic.owned[who]))
        else:
            response = await traffic.listing(who)
        if response is None or response.status_code >= 500:
            await asyncio.sleep(0.02)  # what a client does on a 503 (Retry-After), compressed
