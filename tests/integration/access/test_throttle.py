"""Failed authentications are throttled per client address: a storm of random keys costs the
database only a few round trips, then 429 `too_many_failed_attempts` without asking it; and a real
key keeps working, from the storming address and from any other, on REST and MCP alike.

The round trips are PostgreSQL's own count of committed transactions for the test database
(`pg_stat_database.xact_commit`), read once every backend of the service has ended.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.access.keys import KeyStore
from app.domain import Role
from app.main import create_app
from app.storage.database import Database
from tests.support.app import Caller, key, running
from tests.support.routes import LIST
from tests.support.settings import make_settings

STORM = 200
FAILURE_LIMIT = 5
STORMING, ELSEWHERE = "203.0.113.7", "198.51.100.2"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def random_key() -> str:
    return "ask_" + secrets.token_urlsafe(32)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# One request of each face: REST's list, MCP's initialize.
Face = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


async def rest(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get(LIST, headers=bearer(token))


async def mcp(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/mcp", json=INITIALIZE, headers={**bearer(token), **MCP_HEADERS})


FACES = [pytest.param(rest, id="rest"), pytest.param(mcp, id="mcp")]


@asynccontextmanager
async def service(database_url: str, **overrides: Any) -> AsyncIterator[FastAPI]:
    """The app, throttling after FAILURE_LIMIT failures. One pooled connection: a pool that grows
    under the storm would add its new connections' set-up to the count."""
    settings = make_settings(
        database_url, auth_failure_limit=FAILURE_LIMIT, purge_enabled=False, db_pool_max_size=1, **overrides
    )
    async with running(create_app(settings)) as app:
        yield app


@asynccontextmanager
async def client_at(app: FastAPI, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests come from `address`."""
    transport = httpx.ASGITransport(app=app, client=(address, 40_000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as http:
        yield http


async def settled_commits(server_url: str, database_url: str) -> int:
    """The database's committed transactions, once no backend of it is left: a backend's counts
    reach `pg_stat_database` when it ends (an idle one may hold them back for 10 s)."""
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(server_url)  # to another database: this connection counts nothing here
    try:
        deadline = time.monotonic() + 20
        while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name):
            assert time.monotonic() < deadline, "the service's connections did not end"
            await asyncio.sleep(0.05)
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def commits_of[T](
    pg_server: str, database_url: str, scenario: Callable[[FastAPI], Awaitable[T]]
) -> tuple[int, T]:
    """The commits `scenario` cost a running service, and what it returned. What the service
    itself does to start and stop is measured on an idle run first, and taken away."""
    before_idle = await settled_commits(pg_server, database_url)
    async with service(database_url):
        pass
    idle = await settled_commits(pg_server, database_url) - before_idle

    before = await settled_commits(pg_server, database_url)
    async with service(database_url) as app:
        result = await scenario(app)
    return await settled_commits(pg_server, database_url) - before - idle, result


async def new_key_elsewhere(database_url: str) -> Caller:
    """A key made by another process's key store (as `agent-service keys create` makes it)."""
    db = Database(make_settings(database_url))
    await db.open()
    try:
        record, plain, _ = await KeyStore(db, cache_seconds=0).create(f"elsewhere-{uuid.uuid4().hex[:6]}", Role.CLIENT)
    finally:
        await db.close()
    return Caller(record.id, plain, Role.CLIENT)


async def accepted_within(face: Face, http: httpx.AsyncClient, token: str, seconds: float) -> int:
    """The status of the first answer that is not 429, asking until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        status = (await face(http, token)).status_code
        if status != 429 or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


# -- the storm --------------------------------------------------------------------------------


@pytest.mark.parametrize("face", FACES)
async def test_a_storm_of_random_keys_costs_only_a_few_database_round_trips(pg_server, database_url, face):
    tokens = [random_key() for _ in range(STORM)]

    async def storm(app: FastAPI) -> list[httpx.Response]:
        async with client_at(app, STORMING) as http:
            return await asyncio.gather(*(face(http, token) for token in tokens))

    commits, answers = await commits_of(pg_server, database_url, storm)

    assert commits <= FAILURE_LIMIT + 2, f"{commits} commits for {STORM} random keys"
    assert Counter(a.status_code for a in answers) == {401: FAILURE_LIMIT, 429: STORM - FAILURE_LIMIT}
    refused = next(a for a in answers if a.status_code == 429)
    body = refused.json()
    assert body["code"] == "too_many_failed_attempts"
    assert "address" in body["message"]
    assert set(body) <= {"code", "message", "jsonrpc", "id", "error"}  # MCP's may also be a JSON-RPC error
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert not any(token in a.text or token[4:12] in a.text for a, token in zip(answers, tokens, strict=True))


@pytest.mark.parametrize("face", FACES)
async def test_a_real_key_keeps_working_during_a_storm_from_its_own_address_and_another(database_url, face):
    async with (
        service(database_url) as app,
        client_at(app, STORMING) as storming,
        client_at(app, ELSEWHERE) as elsewhere,
    ):
        alice = await key(app)  # no positive cache in the tests (AUTH_CACHE_SECONDS=0): each use is looked up
        storm = [face(storming, random_key()) for _ in range(STORM)]
        real = [face(http, alice.key) for http in (storming, elsewhere) for _ in range(10)]
        answers = await asyncio.gather(*storm, *real)
        after = await face(storming, alice.key)
        unknown_elsewhere = await face(elsewhere, random_key())

    assert Counter(a.status_code for a in answers[:STORM])[429] == STORM - FAILURE_LIMIT  # the storm was throttled
    assert [a.status_code for a in answers[STORM:]] == [200] * 20
    assert after.status_code == 200
    assert unknown_elsewhere.status_code == 401  # another address's failures are its own


@pytest.mark.parametrize("face", FACES)
async def test_keys_this_process_has_not_seen_yet_work_from_a_throttled_address(database_url, face):
    made_before = await new_key_elsewhere(database_url)
    async with service(database_url) as app, client_at(app, STORMING) as storming:
        await asyncio.gather(*(face(storming, random_key()) for _ in range(STORM)))
        assert (await face(storming, random_key())).status_code == 429
        made_during = await new_key_elsewhere(database_url)  # announced to every process when it is made

        assert (await face(storming, made_before.key)).status_code == 200  # known since start-up
        assert await accepted_within(face, storming, made_during.key, seconds=1) == 200


async def test_a_refused_key_reaches_the_database_once_whatever_the_address(pg_server, database_url):
    refused = random_key()

    async def fleet(app: FastAPI) -> list[int]:
        statuses = []
        for n in range(50):  # a misconfigured fleet: the same wrong key, each address below the limit
            async with client_at(app, f"192.0.2.{n + 1}") as http:
                statuses.append((await rest(http, refused)).status_code)
        return statuses

    commits, statuses = await commits_of(pg_server, database_url, fleet)

    assert statuses == [401] * 50
    assert commits <= 2, f"{commits} commits for one refused key sent 50 times"


async def test_missing_and_malformed_keys_are_not_counted_as_failed_attempts(database_url):
    async with service(database_url) as app, client_at(app, STORMING) as http:
        alice = await key(app)
        for _ in range(3 * FAILURE_LIMIT):
            await http.get(LIST)
            await http.get(LIST, headers=bearer("not-a-key"))
        unknown = [(await rest(http, random_key())).status_code for _ in range(FAILURE_LIMIT + 1)]
        assert (await rest(http, alice.key)).status_code == 200

    assert unknown == [401] * FAILURE_LIMIT + [429]  # the first unknown keys were still looked up
