"""Two `agent-service serve` processes on one database: what replicas share through PostgreSQL.

Each test starts two real service processes (separate OS processes, one test database, the
same PROMPT_HASH_KEY) and splits its requests across both. The provider is a local
OpenAI-compatible server that counts the calls it gets.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from app.access.keys import KeyStore
from app.domain import Role
from app.storage.database import Database
from app.storage.retention import PURGE_LOCK_KEY
from tests.support.app import Caller
from tests.support.fake_openai import FakeOpenAI, Reply, completion
from tests.support.faults import seal_now
from tests.support.routes import GET, RUN
from tests.support.service_process import CLI, ServiceProcess, environment, replicas
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY, make_settings

LEASE_SECONDS = 2  # the sweep runs every lease period: a dead replica's tasks settle within ~2 leases
# A protocol version the pinned FastMCP speaks with a plain JSON-RPC initialize (2026-07-28 wants an envelope).
MCP_PROTOCOL = "2025-06-18"


@pytest.fixture
def env(database_url: str, fake: FakeOpenAI) -> dict[str, str]:
    return environment(
        DATABASE_URL=database_url,
        PROMPT_HASH_KEY=TEST_HASH_KEY,
        AUDIT_SIGNING_KEY=TEST_SIGNING_KEY,
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=fake.base_url,
        DEFAULT_MODEL="openai:gpt-test",
        PROVIDER_MAX_RETRIES="0",
        PROVIDER_TIMEOUT_SECONDS="20",
        TASK_LEASE_SECONDS=str(LEASE_SECONDS),
        PURGE_ENABLED="false",
        DB_POOL_MAX_SIZE="10",
        LOG_LEVEL="WARNING",
    )


@asynccontextmanager
async def clients(pair: list[ServiceProcess]) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=pair[0].base, timeout=30) as a,
        httpx.AsyncClient(base_url=pair[1].base, timeout=30) as b,
    ):
        yield [a, b]


async def new_key(database_url: str) -> Caller:
    db = Database(make_settings(database_url))
    await db.open()
    try:
        record, plain, _ = await KeyStore(db, cache_seconds=0).create(f"replicas-{uuid.uuid4().hex[:6]}", Role.CLIENT)
    finally:
        await db.close()
    return Caller(record.id, plain, Role.CLIENT)


async def rows_of(db: asyncpg.Connection, owner: uuid.UUID) -> int:
    return int(await db.fetchval("SELECT count(*) FROM agent_task WHERE owner_id = $1", owner))


# -- idempotency ----------------------------------------------------------------------------------


async def test_one_idempotency_key_makes_one_task_across_replicas(env, database_url, fake, db):
    fake.enqueue(Reply(body=completion("charged once"), delay=1.0))
    alice = await new_key(database_url)
    headers = {**alice.headers, "Idempotency-Key": "order-7"}
    body = {"prompt": "charge the card for order 7", "cache": False}
    with replicas(env) as pair:
        async with clients(pair) as http:
            answers = await asyncio.gather(*(http[i % 2].post(RUN, json=body, headers=headers) for i in range(20)))
            conflicts = [
                await client.post(RUN, json={**body, "prompt": "charge it twice"}, headers=headers) for client in http
            ]

    assert [a.status_code for a in answers] == [200] * 20
    results = [a.json() for a in answers]
    assert len({r["task_id"] for r in results}) == 1
    assert {(r["status"], r["output"]) for r in results} == {("succeeded", "charged once")}
    # Exactly one request made the task; the other 19, on either replica, replayed it.
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert len(fake.requests) == 1
    assert [c.status_code for c in conflicts] == [409, 409]
    assert {c.json()["code"] for c in conflicts} == {"idempotency_conflict"}
    assert await rows_of(db, alice.key_id) == 1


# -- response cache ---------------------------------------------------------------------------------


async def test_identical_requests_to_both_replicas_make_one_provider_call(env, database_url, fake, db):
    fake.enqueue(Reply(body=completion("the one answer"), delay=1.5))
    alice = await new_key(database_url)
    with replicas(env) as pair:
        async with clients(pair) as http:
            answers = await asyncio.gather(
                *(
                    http[i % 2].post(RUN, json={"prompt": "a popular question"}, headers=alice.headers)
                    for i in range(20)
                )
            )

    assert [a.status_code for a in answers] == [200] * 20
    results = [a.json() for a in answers]
    assert len(fake.requests) == 1
    assert {(r["status"], r["output"]) for r in results} == {("succeeded", "the one answer")}
    assert sum(not r["cached"] for r in results) == 1  # the leader; every other answer is a copy
    assert len({r["task_id"] for r in results}) == 20  # each request still has a task row of its own
    assert await rows_of(db, alice.key_id) == 20


# -- retention purge ---------------------------------------------------------------------------------

EXPIRED, LIVE, OLD_EVENTS = 30_000, 500, 2_000
PURGED = re.compile(r"Purge deleted: (\d+) expired tasks, (\d+) audit events")


async def _seed_for_purge(db: asyncpg.Connection, owner: uuid.UUID) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    seed = """
        INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, output,
                                created_at, completed_at, expires_at)
        SELECT gen_random_uuid(), $1, 'succeeded', 'openai:gpt-test', md5(g::text) || md5(g::text), 'k', 'x',
               e - interval '30 days', e - interval '30 days', e
        FROM generate_series(1, $2) AS g, LATERAL (SELECT now() + make_interval(secs => $3 + g)) AS t(e)
        RETURNING id
    """
    expired = [r["id"] for r in await db.fetch(seed, owner, EXPIRED, -10 * 86_400.0)]
    live = [r["id"] for r in await db.fetch(seed, owner, LIVE, 86_400.0)]
    await db.execute(
        "INSERT INTO audit_event (occurred_at, actor_id, actor_role, channel, action, task_id, outcome) "
        "SELECT now() - interval '400 days', $1, 'client', 'rest', 'read', gen_random_uuid(), 'ok' "
        "FROM generate_series(1, $2)",
        owner,
        OLD_EVENTS,
    )
    return expired, live


async def _purge(env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        CLI,
        "purge",
        env=env | {"PURGE_BATCH_SIZE": "1000", "DB_COMMAND_TIMEOUT_SECONDS": "60"},
        stdout=asyncio.subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, out.decode()
    return out.decode()


async def _until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_two_concurrent_purges_delete_each_expired_row_once_while_both_replicas_serve(env, database_url, db):
    alice = await new_key(database_url)
    expired, live = await _seed_for_purge(db, alice.key_id)
    await seal_now(make_settings(database_url))  # the purge takes old audit events only as whole seals
    with replicas(env) as pair:
        async with clients(pair) as http:
            reads: Counter[tuple[int, str, int]] = Counter()  # (replica, kind, status)
            stop = asyncio.Event()

            async def reader(n: int) -> None:
                while not stop.is_set():
                    kind, ids = random.choice([("live", live), ("live", live), ("expired", expired)])
                    answer = await http[n % 2].get(GET.format(random.choice(ids)), headers=alice.headers)
                    reads[(n % 2, kind, answer.status_code)] += 1

            readers = [asyncio.create_task(reader(n)) for n in range(6)]
            # Stall the first purge inside its first batch (a row lock on the row that expired
            # first), so the second one certainly starts while the first holds the purge lock.
            blocker = await asyncpg.connect(database_url)
            stalled = blocker.transaction()
            await stalled.start()
            await blocker.execute(
                "SELECT 1 FROM agent_task WHERE id = (SELECT id FROM agent_task ORDER BY expires_at LIMIT 1) FOR UPDATE"
            )
            first = asyncio.create_task(_purge(env))

            async def first_is_stalled_holding_the_lock() -> bool:
                return bool(
                    await db.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted)"
                        " AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'agent-service'"
                        "             AND wait_event_type = 'Lock' AND query LIKE '%DELETE FROM agent_task%')",
                        PURGE_LOCK_KEY,
                    )
                )

            await _until(first_is_stalled_holding_the_lock)
            reads_before = sum(reads.values())
            second = await _purge(env)  # at once, while the first one runs
            await stalled.rollback()
            await blocker.close()
            first_out = await first
            stop.set()
            await asyncio.gather(*readers)
            reads_during = sum(reads.values()) - reads_before

    assert "Another process is purging right now; nothing done." in second
    reported = [tuple(map(int, m.groups())) for out in (first_out, second) if (m := PURGED.search(out))]
    assert reported == [(EXPIRED, OLD_EVENTS)]  # the one that ran deleted every expired row, once
    assert await db.fetchval("SELECT count(*) FROM agent_task WHERE expires_at <= now()") == 0
    assert await db.fetchval("SELECT count(*) FROM agent_task WHERE id = ANY($1::uuid[])", live) == LIVE
    assert await db.fetchval("SELECT count(*) FROM audit_event WHERE occurred_at < now() - interval '365 days'") == 0
    runs = await db.fetch("SELECT outcome, detail FROM audit_event WHERE action = 'purge'")
    assert [(r["outcome"], r["detail"]["deleted"]) for r in runs] == [
        ("ok", {"agent_task": EXPIRED, "audit_event": OLD_EVENTS, "audit_seal": 1})
    ]
    # Both replicas kept answering throughout: every live row 200, every expired one 404.
    assert reads_during > 0
    assert {status for (_, kind, status) in reads if kind == "live"} == {200}
    assert {status for (_, kind, status) in reads if kind == "expired"} == {404}
    assert all(reads[(n, "live", 200)] > 0 for n in (0, 1))


# -- runner leases --------------------------------------------------------------------------------


async def test_tasks_of_a_killed_replica_end_interrupted_by_the_other(env, database_url, fake, db):
    fake.enqueue(*(Reply(body=completion("never seen"), delay=60) for _ in range(3)))
    alice = await new_key(database_url)
    with replicas(env) as (doomed, survivor):
        async with clients([doomed, survivor]) as (on_doomed, on_survivor):
            accepted = [
                await on_doomed.post(
                    RUN, params={"wait": "false"}, json={"prompt": f"slow {i}", "cache": False}, headers=alice.headers
                )
                for i in range(3)
            ]
            assert [a.status_code for a in accepted] == [202] * 3
            ids = [a.json()["task_id"] for a in accepted]

            async def all_running_at_the_provider() -> bool:
                statuses = [(await on_survivor.get(GET.format(i), headers=alice.headers)).json()["status"] for i in ids]
                return fake.count == 3 and statuses == ["running"] * 3

            await _until(all_running_at_the_provider)
            doomed.kill()
            killed_at = time.monotonic()

            async def all_settled() -> bool:
                statuses = [(await on_survivor.get(GET.format(i), headers=alice.headers)).json()["status"] for i in ids]
                return statuses == ["failed"] * 3

            await _until(all_settled, timeout=8 * LEASE_SECONDS)
            settled_after = time.monotonic() - killed_at
            results = [(await on_survivor.get(GET.format(i), headers=alice.headers)).json() for i in ids]
            survivor_alive = survivor.process.poll() is None

    assert doomed.process.returncode == -signal.SIGKILL
    assert survivor_alive, "the survivor was never restarted"
    assert {(r["status"], r["error"]["code"]) for r in results} == {("failed", "interrupted")}
    assert all(r["completed_at"] for r in results)
    assert settled_after < 4 * LEASE_SECONDS  # a lease runs out, then the next sweep (every lease period)
    assert await db.fetchval("SELECT count(*) FROM agent_task WHERE status IN ('pending', 'running')") == 0


# -- cancel -----------------------------------------------------------------------------------------


async def test_a_cancel_sent_to_one_replica_stops_the_task_running_on_the_other_within_a_second(
    env, database_url, fake, db
):
    fake.enqueue(Reply(body=completion("never seen"), delay=60))
    alice = await new_key(database_url)
    with replicas(env) as (runner, other):
        async with clients([runner, other]) as (on_runner, on_other):
            body = {"prompt": "a long one", "cache": False}
            waiting = asyncio.create_task(on_runner.post(RUN, json=body, headers=alice.headers))
            await _until(lambda: _true(fake.count == 1))
            task_id = str(await db.fetchval("SELECT id FROM agent_task WHERE owner_id = $1", alice.key_id))
            sent = time.monotonic()
            cancel = await on_other.post(f"{GET.format(task_id)}/cancel", headers=alice.headers)
            waited = await asyncio.wait_for(waiting, 5)
            answered_after = time.monotonic() - sent
            await _until(lambda: _true(bool(fake.hang_ups)), timeout=5)
            aborted_after = fake.hang_ups[0] - sent

    assert cancel.status_code == 200, cancel.text
    assert (waited.status_code, waited.json()["status"]) == (200, "cancelled")
    assert answered_after < 1.0, f"the waiting caller on the other replica got the cancel after {answered_after:.3f} s"
    assert aborted_after < 1.0, f"the provider call was aborted after {aborted_after:.3f} s"
    assert await db.fetchval("SELECT status FROM agent_task WHERE id = $1", uuid.UUID(task_id)) == "cancelled"


async def _true(value: bool) -> bool:
    return value


# -- MCP sessions -----------------------------------------------------------------------------------


def _mcp_headers(caller: Caller, session: str | None = None) -> dict[str, str]:
    headers = {
        **caller.headers,
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MCP_PROTOCOL,
    }
    return headers | ({"Mcp-Session-Id": session} if session else {})


async def _mcp_session(http: httpx.AsyncClient, caller: Caller) -> str | None:
    """Initialize an MCP session on `http`'s replica; its id (None in stateless mode)."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": MCP_PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    answer = await http.post("/mcp", json=init, headers=_mcp_headers(caller))
    assert answer.status_code == 200, answer.text
    session = answer.headers.get("mcp-session-id")
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post("/mcp", json=done, headers=_mcp_headers(caller, session))).status_code == 202
    return session


async def test_any_replica_answers_any_mcp_request(env, database_url):
    """MCP is stateless: no Mcp-Session-Id to pin a client to the process that initialized it."""
    alice = await new_key(database_url)
    with replicas(env) as pair:
        async with clients(pair) as (a, b):
            session = await _mcp_session(a, alice)
            listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
            same = await a.post("/mcp", json=listing, headers=_mcp_headers(alice, session))
            other = await b.post("/mcp", json=listing, headers=_mcp_headers(alice, session))

    assert session is None
    for answer in (same, other):
        assert answer.status_code == 200
        assert "run_agent_task" in answer.text


# -- PgBouncer (transaction pooling) ------------------------------------------------------------------


async def test_no_connection_keeps_prepared_statements_when_the_statement_cache_is_off(database_url):
    """DB_STATEMENT_CACHE_SIZE=0 (PgBouncer in transaction mode) holds for the pool and for the
    purge's own connection alike: a named prepared statement would be missing on the next server."""
    named = "SELECT count(*) FROM pg_prepared_statements"
    for cache, expect_named in ((0, False), (256, True)):
        db = Database(make_settings(database_url, db_statement_cache_size=cache))
        await db.open()
        try:
            async with db.connection() as pooled:
                await pooled.fetchval("SELECT $1::int + 1", 1)
                pooled_named = await pooled.fetchval(named)
            async with db.dedicated() as own:
                await own.fetchval("SELECT $1::int + 1", 1)
                own_named = await own.fetchval(named)
        finally:
            await db.close()
        assert (pooled_named > 0, own_named > 0) == (expect_named, expect_named), cache
