"""A key's revocation or new limits reach every process within a second (PostgreSQL LISTEN/NOTIFY),
however long the processes cache verified keys; a listener that lost its connection reconnects by
itself and forgets every cached key, since it may have missed a notification meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest

from app.access.keys import KeyStore
from app.devdb.cluster import LocalPostgres
from app.storage.database import Database
from app.storage.notifications import LISTENER_NAME
from tests.support.app import key, replica
from tests.support.postgres import stoppable_cluster
from tests.support.routes import LIST
from tests.support.settings import make_settings

CACHED = {"auth_cache_seconds": 300, "purge_enabled": False}


@asynccontextmanager
async def another_process(database_url: str) -> AsyncIterator[KeyStore]:
    """A key store of its own, on its own pool, as `agent-service keys …` has one."""
    db = Database(make_settings(database_url))
    await db.open()
    try:
        yield KeyStore(db, cache_seconds=0)
    finally:
        await db.close()


async def status_within(http: httpx.AsyncClient, headers: dict[str, str], want: int, *, seconds: float) -> int:
    """Ask until the answer is `want` or `seconds` have passed; the last status."""
    deadline = time.monotonic() + seconds
    while True:
        status = (await http.get(LIST, headers=headers)).status_code
        if status == want or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.02)


async def test_a_revocation_elsewhere_reaches_every_replica_within_a_second(database_url):
    async with replica(database_url, **CACHED) as (app_a, http_a), replica(database_url, **CACHED) as (_, http_b):
        alice = await key(app_a)
        assert [(await http.get(LIST, headers=alice.headers)).status_code for http in (http_a, http_b)] == [200, 200]
        async with another_process(database_url) as keys:
            await keys.revoke(alice.key_id)

        assert await status_within(http_a, alice.headers, 401, seconds=1) == 401
        assert await status_within(http_b, alice.headers, 401, seconds=1) == 401


async def test_new_limits_made_elsewhere_reach_a_replica_within_a_second(database_url):
    async with replica(database_url, **CACHED) as (app, http):
        alice = await key(app)
        assert (await http.get(LIST, headers=alice.headers)).status_code == 200  # cached, without a limit
        async with another_process(database_url) as keys:
            await keys.set_limits(alice.key_id, rate_limit_per_minute=1, max_running_tasks=None)

        assert await status_within(http, alice.headers, 429, seconds=1) == 429


async def test_a_listener_that_reconnects_forgets_every_cached_key(database_url, db):
    async with replica(database_url, **CACHED) as (app, http):
        alice = await key(app)
        assert (await http.get(LIST, headers=alice.headers)).status_code == 200
        # A revocation whose notification this process never hears: written behind the service's back.
        await db.execute("UPDATE api_key SET revoked_at = now() WHERE id = $1", alice.key_id)
        assert (await http.get(LIST, headers=alice.headers)).status_code == 200  # still cached

        ended = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", LISTENER_NAME
        )
        assert ended == 1

        assert await status_within(http, alice.headers, 401, seconds=5) == 401


@pytest.fixture
def own_cluster() -> Iterator[tuple[LocalPostgres, int, str]]:
    """A cluster this test may stop and start (the shared test server must stay up)."""
    with stoppable_cluster("key_events") as started:
        yield started


async def test_the_listener_comes_back_by_itself_after_a_database_outage(own_cluster):
    cluster, port, url = own_cluster
    async with replica(url, db_connect_timeout_seconds=1, **CACHED) as (app, http):
        alice = await key(app)
        assert (await http.get(LIST, headers=alice.headers)).status_code == 200

        await asyncio.to_thread(cluster.stop)
        await asyncio.sleep(0.5)  # the listener notices, and starts trying to reconnect
        await asyncio.to_thread(cluster.start, port)
        await until_listening(url)
        assert (await http.get(LIST, headers=alice.headers)).status_code == 200  # cached again
        async with another_process(url) as keys:
            await keys.revoke(alice.key_id)

        assert await status_within(http, alice.headers, 401, seconds=1) == 401


async def until_listening(url: str, within: float = 15) -> None:
    """Until a listener is connected to the database again."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + within
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        while not await conn.fetchval(query, LISTENER_NAME):
            assert time.monotonic() < deadline, f"no listener within {within} s"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
