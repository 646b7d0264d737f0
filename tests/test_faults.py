"""Faults, with nothing lost: the database stops under load, the service is killed, the provider
misbehaves, and a retention purge runs through all of it.

Each test ends by counting what was lost (an acknowledged task that is missing, never finishes,
or changed; a row the purge should not have deleted) and asserts the count is 0. Run with `-s`
to see the counts.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import pytest

from app.access.keys import KeyStore
from app.devdb.cluster import LocalPostgres, free_port
from app.domain import DatabaseUnavailable, Role
from app.main import create_app
from app.service.retention import Purger, PurgeReport
from app.settings import Settings
from app.storage.database import Database
from app.telemetry.tracing import configure_observability
from tests.conftest import TEST_HASH_KEY, Caller, make_settings, running
from tests.fake_openai import FakeOpenAI, Reply, TcpFault, completion
from tests.postgres import stoppable_cluster

RUN = "/tools/run_agent_task"
GET = "/resources/get_agent_result/{}"
LIST = "/resources/agent_results"
CLI = str(Path(sys.executable).parent / "agent-service")
UNFINISHED = ("pending", "running")
OURS = "WHERE context->>'seed' IS NULL"  # the tasks the clients made, not the rows seeded for the purge

# Spans nobody reads cost CPU the load needs; the in-process schedule stays off (the tests run the purge).
QUIET: dict[str, Any] = {"trace_requests": False, "trace_sql": False, "purge_enabled": False}


# -- what the clients did and what the service acknowledged --------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    op: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer at all
    code: str | None  # the error answer's `code`, or the client-side exception's type

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class Traffic:
    """Clients talking to the service: every call, every acknowledged task, every erasure."""

    def __init__(self, http: httpx.AsyncClient, callers: list[Caller]) -> None:
        self.http = http
        self.callers = callers
        self.calls: list[Call] = []
        self.acked: dict[str, dict[str, Any]] = {}  # task_id -> the 200/202 answer's body
        self.owned: list[list[str]] = [[] for _ in callers]
        self.deleted: set[str] = set()

    async def request(self, op: str, method: str, url: str, who: int, **kwargs: Any) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await self.http.request(method, url, headers=self.callers[who].headers, **kwargs)
        except Exception as exc:  # no answer: recorded, and judged by the test
            self.calls.append(Call(op, started, time.monotonic(), None, type(exc).__name__))
            return None
        code = None
        if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
            code = response.json().get("code")
        self.calls.append(Call(op, started, time.monotonic(), response.status_code, code))
        return response

    async def submit(self, who: int, body: dict[str, Any], *, wait: bool = True) -> httpx.Response | None:
        params = None if wait else {"wait": "false"}
        response = await self.request("submit" if wait else "submit_async", "POST", RUN, who, json=body, params=params)
        if response is not None and response.status_code in (200, 202):
            answer = response.json()
            self.acked[answer["task_id"]] = answer
            self.owned[who].append(answer["task_id"])
        return response

    async def read(self, who: int, task_id: str) -> httpx.Response | None:
        return await self.request("read", "GET", GET.format(task_id), who)

    async def listing(self, who: int) -> httpx.Response | None:
        return await self.request("list", "GET", LIST, who)

    async def delete(self, who: int, task_id: str) -> httpx.Response | None:
        response = await self.request("delete", "DELETE", GET.format(task_id), who)
        if response is not None and response.status_code == 204:
            self.deleted.add(task_id)
        return response

    def statuses(self) -> Counter[str]:
        return Counter(f"{c.op} {c.status or c.code}" for c in self.calls)


@dataclass
class Losses:
    """Acknowledged tasks that are not in the database as acknowledged."""

    acknowledged: int
    missing: int = 0  # acknowledged (and not erased on purpose), but not in the database
    unfinished: int = 0  # still pending or running after the bound
    changed: int = 0  # answered as finished, but the row says otherwise
    resurrected: int = 0  # erased (204), yet still there
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def lost(self) -> int:
        return self.missing + self.unfinished + self.changed + self.resurrected


async def settle(conn: asyncpg.Connection, traffic: Traffic, *, within: float) -> None:
    """Wait (at most `within` s, while the service runs) until no acknowledged task is pending or running."""
    ids = list(traffic.acked)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        unfinished = await conn.fetchval(
            "SELECT count(*) FROM agent_task WHERE id = ANY($1::uuid[]) AND status IN ('pending', 'running')", ids
        )
        if unfinished == 0:
            return
        await asyncio.sleep(0.1)


async def count_losses(conn: asyncpg.Connection, traffic: Traffic, *, expiring: frozenset[str] = frozenset()) -> Losses:
    """What was lost of what the service acknowledged (after `settle`, and after the final purge).

    `expiring`: tasks that asked for a retention short enough to end during the test (the purge may take them).
    """
    ids = [task_id for task_id in traffic.acked if task_id not in expiring]
    rows = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id::text, status, output, error_code FROM agent_task WHERE id = ANY($1::uuid[])", ids
        )
    }
    losses = Losses(acknowledged=len(ids))
    for task_id in ids:
        answer, row = traffic.acked[task_id], rows.get(task_id)
        if task_id in traffic.deleted:
            losses.resurrected += row is not None
            continue
        if row is None:
            losses.missing += 1
            continue
        losses.statuses[row["status"] if row["status"] != "failed" else f"failed/{row['error_code']}"] += 1
        if row["status"] in UNFINISHED:
            losses.unfinished += 1
        elif answer["status"] not in UNFINISHED and (answer["status"], answer["output"]) != (
            row["status"],
            row["output"],
        ):
            losses.changed += 1
    return losses


# -- retention: rows for the purge to work on, and what it must leave ------------------------------

SEED_EXPIRED, SEED_EXPIRING, SEED_LIVE = 3000, 1500, 500
SEED_OLD_EVENTS, SEED_RECENT_EVENTS = 2000, 300


async def seed_retention(conn: asyncpg.Connection, owner: uuid.UUID, *, expiring_within: float) -> float:
    """Tasks already expired, expiring within `expiring_within` s, and live for a day; audit events
    older than the audit retention and recent ones. Marked, so the check can find them.

    Returns when (time.monotonic()) the last of them has expired: the final purge waits for it.
    """
    insert = """
        INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, context, output,
                                created_at, completed_at, expires_at)
        SELECT gen_random_uuid(), $1, 'succeeded', 'offline:echo', md5(g::text) || md5(g::text), 'seed',
               jsonb_build_object('seed', $2::text), 'an answer', now() - interval '31 days', now(), {expires}
        FROM generate_series(1, $3) AS g
    """
    await conn.execute(
        insert.format(expires="now() - interval '1 second' - random() * interval '10 days'"),
        owner,
        "expired",
        SEED_EXPIRED,
    )
    await conn.execute(
        insert.format(expires="now() + random() * make_interval(secs => $4)"),
        owner,
        "expiring",
        SEED_EXPIRING,
        expiring_within,
    )
    # After that statement, not before the first: its now() is when it began, so its rows expire by
    # now + expiring_within (measured before the inserts, the last rows could outlive the final purge).
    all_expired_at = time.monotonic() + expiring_within
    await conn.execute(insert.format(expires="now() + interval '1 day'"), owner, "live", SEED_LIVE)
    events = """
        INSERT INTO audit_event (occurred_at, actor_id, actor_role, channel, action, task_id, outcome, request_id)
        SELECT {when}, $1, 'client', 'rest', 'read', gen_random_uuid(), 'ok', $2 FROM generate_series(1, $3)
    """
    await conn.execute(
        events.format(when="now() - interval '400 days' - random() * interval '30 days'"),
        owner,
        "seed-old",
        SEED_OLD_EVENTS,
    )
    await conn.execute(events.format(when="now() - interval '1 day'"), owner, "seed-recent", SEED_RECENT_EVENTS)
    return all_expired_at


@dataclass
class RetentionCheck:
    expired_left: int  # expired by the final purge's cut-off, still there
    old_events_left: int
    live_deleted: int  # never expired, yet gone: lost
    recent_events_deleted: int  # lost

    @property
    def lost(self) -> int:
        return self.live_deleted + self.recent_events_deleted


async def check_retention(conn: asyncpg.Connection, final: PurgeReport) -> RetentionCheck:
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM agent_task WHERE expires_at <= $1)                 AS expired_left,
               (SELECT count(*) FROM agent_task WHERE context->>'seed' IN ('expired', 'expiring')) AS seeds_left,
               (SELECT count(*) FROM agent_task WHERE context->>'seed' = 'live')        AS live,
               (SELECT count(*) FROM audit_event WHERE occurred_at < $2)                AS old_events,
               (SELECT count(*) FROM audit_event WHERE request_id = 'seed-recent')      AS recent_events
        """,
        final.expired_by,
        final.audit_before,
    )
    assert row is not None
    return RetentionCheck(
        expired_left=int(row["expired_left"]) + int(row["seeds_left"]),
        old_events_left=int(row["old_events"]),
        live_deleted=SEED_LIVE - int(row["live"]),
        recent_events_deleted=SEED_RECENT_EVENTS - int(row["recent_events"]),
    )


@dataclass
class PurgeTally:
    runs: int = 0
    skipped: int = 0  # another purge held the lock
    unavailable: int = 0  # the database was down
    tasks_deleted: int = 0
    events_deleted: int = 0
    errors: list[str] = field(default_factory=list)


@asynccontextmanager
async def purging(purger: Purger, pause: float = 0.05) -> AsyncIterator[PurgeTally]:
    """The purge, run again and again in the background for as long as the block lasts."""
    tally = PurgeTally()
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                report = await purger.run()
            except DatabaseUnavailable:
                tally.unavailable += 1
            except Exception as exc:
                tally.errors.append(type(exc).__name__)
            else:
                tally.runs += 1
                tally.skipped += report.skipped
                tally.tasks_deleted += report.deleted["agent_task"]
                tally.events_deleted += report.deleted["audit_event"]
            await asyncio.sleep(pause)

    task = asyncio.create_task(loop())
    try:
        yield tally
    finally:
        stop.set()
        await task


async def final_purge(settings: Settings, *, not_before: float) -> PurgeReport:
    """One last purge after the faults (and after every seeded row has expired, at `not_before`),
    whose cut-off the retention check is measured against."""
    await asyncio.sleep(max(0.0, not_before - time.monotonic()))
    configure_observability(token=None, version="test")  # the purge's span needs logfire set up
    db = Database(settings)
    await db.open()
    try:
        return await Purger(db, settings).run()
    finally:
        await db.close()


# -- 1. PostgreSQL stops under load ----------------------------------------------------------------


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
            callers = [await _caller(service.keys) for _ in range(3)]
            seed_conn = await asyncpg.connect(url)
            try:
                seeds_expired_at = await seed_retention(seed_conn, callers[0].key_id, expiring_within=6)
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


async def _caller(keys: KeyStore, role: Role = Role.CLIENT) -> Caller:
    record, plain = await keys.create(f"faults-{uuid.uuid4().hex[:6]}", role)
    return Caller(record.id, plain, role)


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


# -- 2. the service process is killed --------------------------------------------------------------


class ServiceProcess:
    """`agent-service serve` as a user runs it, on one port across restarts; its output in a file."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None
        self._log: IO[str] = tempfile.TemporaryFile("w+")

    async def start(self, timeout: float = 60) -> None:
        self.process = subprocess.Popen(
            [CLI, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as http:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"serve exited early:\n{self.output()}")
                try:
                    if (await http.get(f"{self.base}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"serve did not come up:\n{self.output()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read()

    def close(self) -> None:
        self.stop()
        self._log.close()


def _service_env(database_url: str, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEFAULT_MODEL", "PROVIDER_"))}
    env.update(DATABASE_URL=database_url, PROMPT_HASH_KEY=TEST_HASH_KEY, LOG_LEVEL="WARNING", **values)
    return env


class CliPurges:
    """`agent-service purge`, as cron runs it, again and again in a thread until stopped."""

    def __init__(self, env: dict[str, str], pause: float = 1.0) -> None:
        self.env = env
        self.pause = pause  # a purge is a whole Python process: leave the CPU to the service between runs
        self.results: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(
                [CLI, "purge"], env=self.env, capture_output=True, text=True, timeout=120, check=False
            )
            self.results.append((done.returncode, (done.stdout + done.stderr).strip()))
            self._stop.wait(self.pause)

    def __enter__(self) -> CliPurges:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=150)

    @property
    def failures(self) -> list[str]:
        return [out for code, out in self.results if code != 0]


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
        alice = await _caller(KeyStore(keys_db, 0))
    finally:
        await keys_db.close()
    conn = await asyncpg.connect(database_url)
    seeds_expired_at = await seed_retention(conn, alice.key_id, expiring_within=5)

    with FakeOpenAI(answer).running() as fake:
        env = _service_env(
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
                await service.start()
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
                    await _until(lambda: fake.count >= fast + slow + len(waiting), within=10)
                    await _until(_all_finished(conn, fast_ids), within=5)
                    before = Counter(r["status"] for r in await conn.fetch(f"SELECT status FROM agent_task {OURS}"))

                    service.kill()
                    killed_at = time.monotonic()
                    await asyncio.gather(*waiting)
                    await service.start()
                    restarted_at = time.monotonic()
                    await _until(_nothing_unfinished(conn), within=2 * lease + 5)
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


async def _until(condition: Any, *, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        done = condition()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.05)


def _all_finished(conn: asyncpg.Connection, ids: list[str]) -> Any:
    async def check() -> bool:
        unfinished = await conn.fetchval(
            "SELECT count(*) FROM agent_task WHERE id = ANY($1::uuid[]) AND status IN ('pending', 'running')", ids
        )
        return int(unfinished) == 0

    return check


def _nothing_unfinished(conn: asyncpg.Connection) -> Any:
    async def check() -> bool:
        return int(await conn.fetchval("SELECT count(*) FROM agent_task WHERE status IN ('pending', 'running')")) == 0

    return check


# -- 3. the provider misbehaves --------------------------------------------------------------------

# By the model a task names (the fake answers by model): the fault, the error code it must end with.
HTTP_FAULTS: dict[str, tuple[Reply, str]] = {
    "hang": (Reply(delay=60), "timeout"),  # answers the request line, never the body
    "not-json": (Reply(raw=b"<html><body>502 Bad Gateway</body></html>"), "provider_error"),
    "wrong-shape": (Reply(body={"object": "list", "data": [{"id": "x"}]}), "provider_error"),
    "truncated": (Reply(raw=b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"ind'), "provider_error"),
    "dropped": (Reply(drop=True), "provider_error"),  # the connection closes halfway through the answer
    "overloaded": (Reply(503, {"error": {"message": "busy", "code": "overloaded"}}), "provider_error"),
    "throttled": (Reply(429, {"error": {"message": "slow down", "code": "rate_limit"}}), "rate_limited"),
}
NOT_RETRIED = frozenset({"not-json", "wrong-shape", "truncated"})
TCP_FAULTS = {"hang": "timeout", "reset": "provider_error", "garbage": "provider_error"}


async def test_provider_faults_end_failed_with_the_right_code_in_bounded_time_and_the_service_stays_responsive(
    database_url,
):
    replies = {model: reply for model, (reply, _) in HTTP_FAULTS.items()}
    with (
        FakeOpenAI(lambda body: replies.get(body["model"])).running() as fake,
        TcpFault("hang").running() as tcp_hang,
        TcpFault("reset").running() as tcp_reset,
        TcpFault("garbage").running() as tcp_garbage,
    ):
        tcp = {"hang": tcp_hang, "reset": tcp_reset, "garbage": tcp_garbage}
        settings = make_settings(
            database_url,
            **QUIET,
            openai_api_key="sk-test",
            openai_base_url=fake.base_url,
            default_model="openai:gpt-test",
            provider_endpoints=[{"name": f"tcp-{mode}", "base_url": f.base_url} for mode, f in tcp.items()],
            provider_request_timeout_seconds=1,
            provider_max_retries=2,
            provider_retry_max_seconds=2,
            provider_timeout_seconds=3,
            auth_cache_seconds=60,
            purge_batch_size=100,
        )
        # The whole provider call is capped at PROVIDER_TIMEOUT_SECONDS, retries and waits included;
        # storing the outcome and answering adds two statements and a loopback round trip.
        bound = settings.provider_timeout_seconds + 1.0
        expected = {f"openai:{m}": code for m, (_, code) in HTTP_FAULTS.items()}
        expected |= {f"tcp-{mode}:any-model": code for mode, code in TCP_FAULTS.items()}
        async with running(create_app(settings)) as app:
            service = app.state.components
            alice = await _caller(service.keys)
            conn = await asyncpg.connect(database_url)
            seeds_expired_at = await seed_retention(conn, alice.key_id, expiring_within=3)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as http:
                traffic = Traffic(http, [alice])
                healthy = (await traffic.submit(0, {"prompt": "fine", "model": "openai:gpt-test"})).json()  # type: ignore[union-attr]

                async def timed(model: str) -> tuple[float, httpx.Response | None]:
                    began = time.monotonic()
                    response = await traffic.submit(0, {"prompt": f"waited on {model}", "model": model, "cache": False})
                    return time.monotonic() - began, response

                async with purging(service.purger) as purges:
                    waited = {model: asyncio.create_task(timed(model)) for model in expected}
                    accepted = {}
                    for model in expected:
                        body = {"prompt": f"not waited on {model}", "model": model, "cache": False}
                        response = await traffic.submit(0, body, wait=False)
                        assert response is not None
                        assert response.status_code == 202
                        accepted[model] = response.json()["task_id"]
                    # Meanwhile, other callers are served as if nothing were wrong.
                    probes: list[tuple[str, float, int | None]] = []
                    while not all(task.done() for task in waited.values()):
                        for op, call in (
                            ("read", traffic.read(0, healthy["task_id"])),
                            ("list", traffic.listing(0)),
                            ("run offline", traffic.submit(0, {"prompt": "quick", "model": "offline:echo"})),
                            ("run healthy", traffic.submit(0, {"prompt": "ok?", "model": "openai:gpt-test"})),
                        ):
                            began = time.monotonic()
                            response = await call
                            probes.append((op, time.monotonic() - began, response.status_code if response else None))
                        await asyncio.sleep(0.02)
                    results = {model: task.result() for model, task in waited.items()}
                    await _until(_all_finished(conn, list(accepted.values())), within=bound)
            final = await final_purge(settings, not_before=seeds_expired_at)
            try:
                losses = await count_losses(conn, traffic)
                retention = await check_retention(conn, final)
                rows = {
                    str(r["id"]): r
                    for r in await conn.fetch(
                        "SELECT id, status, error_code, extract(epoch FROM completed_at - created_at) AS seconds "
                        "FROM agent_task WHERE id = ANY($1::uuid[])",
                        list(accepted.values()),
                    )
                }
            finally:
                await conn.close()

    requests_per_model = Counter(body["model"] for body in fake.requests)
    slowest_probe = max(probes, key=lambda p: p[1])
    print(
        "\n[provider faults] waited: "
        + ", ".join(f"{m}={s:.2f}s" for m, (s, _) in results.items())
        + f"; bound {bound:g} s; probes={len(probes)} slowest={slowest_probe[0]} {slowest_probe[1]:.3f} s; "
        f"provider requests={dict(requests_per_model)}, tcp connections="
        f"{ {mode: f.connections for mode, f in tcp.items()} }; acknowledged={losses.acknowledged} "
        f"LOST={losses.lost}; purge runs={purges.runs} errors={purges.errors}; retention lost={retention.lost}"
    )
    for model, code in expected.items():
        seconds, response = results[model]
        assert response is not None
        assert response.status_code == 200, (model, response.text)
        answer = response.json()
        assert (answer["status"], answer["error"]["code"]) == ("failed", code), (model, answer["error"])
        assert seconds <= bound, (model, seconds)
        row = rows[accepted[model]]
        assert (row["status"], row["error_code"]) == ("failed", code), model
        assert float(row["seconds"]) <= bound, (model, row["seconds"])
        if model.endswith(":hang"):
            assert seconds >= settings.provider_request_timeout_seconds  # it did wait for the provider
    for name in NOT_RETRIED:
        assert requests_per_model[name] == 2, name  # one attempt per task: a malformed answer is not retried
    for name in HTTP_FAULTS.keys() - NOT_RETRIED - {"hang"}:
        assert 2 * 2 <= requests_per_model[name] <= 2 * (settings.provider_max_retries + 1), name
    for mode, fault in tcp.items():
        assert 2 * 2 <= fault.connections <= 2 * (settings.provider_max_retries + 1), mode
    assert probes
    assert {status for _, _, status in probes} == {200}
    # A read stuck behind a hung call would take the provider's timeout; these take milliseconds.
    assert slowest_probe[1] < settings.provider_request_timeout_seconds, slowest_probe
    assert losses.lost == 0, losses
    assert purges.errors == []
    assert retention.lost == 0, retention
    assert (retention.expired_left, retention.old_events_left) == (0, 0), retention


# -- 4. purges race each other and the load --------------------------------------------------------


async def test_purges_racing_each_other_and_the_load_delete_exactly_what_expired(database_url):
    settings = make_settings(
        database_url, **QUIET, purge_batch_size=50, auth_cache_seconds=60, db_pool_max_size=8, default_model=None
    )
    short_days = 2.0 / 86_400  # these tasks expire two seconds after they are made, during the test
    async with running(create_app(settings)) as app:
        service = app.state.components
        callers = [await _caller(service.keys) for _ in range(3)]
        conn = await asyncpg.connect(database_url)
        seeds_expired_at = await seed_retention(conn, callers[0].key_id, expiring_within=3)
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

            cli_env = _service_env(database_url, PURGE_BATCH_SIZE="50")
            async with purging(service.purger, pause=0.02) as purges:
                workers = [asyncio.create_task(client(i)) for i in range(8)]
                cli = asyncio.gather(
                    *(
                        asyncio.to_thread(
                            subprocess.run, [CLI, "purge"], env=cli_env, capture_output=True, text=True, timeout=120
                        )
                        for _ in range(2)
                    )
                )
                await asyncio.sleep(4.0)
                stop.set()
                await asyncio.gather(*workers)
                cli_runs = await cli
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
