"""The fault tests' machinery: clients that record every call, the count of what was lost, rows
seeded for the retention purge and the check of what it left, purges run again and again (in
process, and as `agent-service purge` commands, as cron runs them).

A fault test ends by counting what was lost (an acknowledged task that is missing, never finishes,
or changed; a row the purge should not have deleted) and asserts the count is 0.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from app.access.encryption import OUTPUT, ResultCipher, StaticKeyProvider, parse_keys
from app.access.keys import KeyStore
from app.access.signing import AuditSigner
from app.domain import DatabaseUnavailable, Role
from app.service.retention import Purger, PurgeReport
from app.service.trail import AuditTrail
from app.settings import Settings
from app.storage.database import Database
from app.telemetry.tracing import configure_observability
from tests.support.app import Caller
from tests.support.routes import GET, LIST, RUN
from tests.support.service_process import cli
from tests.support.settings import TEST_HASH_KEY, TEST_RESULT_KEYS, TEST_SIGNING_KEY

UNFINISHED = ("pending", "running")
OURS = "WHERE prompt_hash_key_id <> 'seed'"  # the tasks the clients made, not the rows seeded for the purge

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


def _opened_output(row: asyncpg.Record) -> str | None:
    """The stored answer, opened with the tests' result key (rows hold it sealed)."""
    if row["output"] is None:
        return None
    cipher = ResultCipher(StaticKeyProvider(parse_keys(TEST_RESULT_KEYS)))
    return cipher.open(row["output"], task_id=row["uuid"], owner_id=row["owner_id"], field=OUTPUT).decode()


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
            "SELECT id::text, id AS uuid, owner_id, status, output, error_code FROM agent_task "
            "WHERE id = ANY($1::uuid[])",
            ids,
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
            _opened_output(row),
        ):
            losses.changed += 1
    return losses


# -- retention: rows for the purge to work on, and what it must leave ------------------------------

SEED_EXPIRED, SEED_EXPIRING, SEED_LIVE = 3000, 1500, 500
SEED_OLD_EVENTS, SEED_RECENT_EVENTS = 2000, 300


_EVENTS = """
    INSERT INTO audit_event (occurred_at, actor_id, actor_role, channel, action, task_id, outcome, request_id)
    SELECT {when}, $1, 'client', 'rest', 'read', gen_random_uuid(), 'ok', $2 FROM generate_series(1, $3)
"""


async def seed_retention(
    conn: asyncpg.Connection, owner: uuid.UUID, *, expiring_within: float, settings: Settings
) -> float:
    """Tasks already expired, expiring within `expiring_within` s, and live for a day; audit events
    older than the audit retention and recent ones. Marked, so the check can find them.

    The old events are sealed at once, before anything else is written: the purge removes only
    whole seals of old events, and events back-dated into a seal with today's events would stay
    (as they should: see `check_retention`).

    Returns when (time.monotonic()) the last of them has expired: the final purge waits for it.
    """
    await conn.execute(
        _EVENTS.format(when="now() - interval '400 days' - random() * interval '30 days'"),
        owner,
        "seed-old",
        SEED_OLD_EVENTS,
    )
    await seal_now(settings)
    insert = """
        INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, template, output,
                                created_at, completed_at, expires_at)
        SELECT gen_random_uuid(), $1, 'succeeded', 'offline:echo', md5(g::text) || md5(g::text), 'seed',
               'seed:' || $2::text, convert_to('an answer', 'UTF8'),
               now() - interval '31 days', now(), {expires}
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
    await conn.execute(_EVENTS.format(when="now() - interval '1 day'"), owner, "seed-recent", SEED_RECENT_EVENTS)
    return all_expired_at


@dataclass
class RetentionCheck:
    expired_left: int  # expired by the final purge's cut-off, still there
    old_events_left: int  # in a seal whose events are all old (and every seal before it too): due to go
    live_deleted: int  # never expired, yet gone: lost
    recent_events_deleted: int  # lost

    @property
    def lost(self) -> int:
        return self.live_deleted + self.recent_events_deleted


async def check_retention(conn: asyncpg.Connection, final: PurgeReport) -> RetentionCheck:
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM agent_task WHERE expires_at <= $1)                 AS expired_left,
               (SELECT count(*) FROM agent_task WHERE template IN ('seed:expired', 'seed:expiring')) AS seeds_left,
               (SELECT count(*) FROM agent_task WHERE template = 'seed:live')        AS live,
               (SELECT count(*) FROM audit_event e JOIN audit_seal s ON e.id = ANY(s.event_ids)
                 WHERE s.id < coalesce((SELECT min(id) FROM audit_seal WHERE last_occurred_at >= $2),
                                       9223372036854775807))                            AS old_events,
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


async def seal_now(settings: Settings) -> None:
    """Seal the audit events committed so far, as the in-service job does every AUDIT_SEAL_SECONDS."""
    db = Database(settings)
    await db.open()
    try:
        await AuditTrail(db, AuditSigner(TEST_SIGNING_KEY)).seal()
    finally:
        await db.close()


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


# -- keys, waits, and the service as a process ------------------------------------------------------


async def new_caller(keys: KeyStore, role: Role = Role.CLIENT) -> Caller:
    """A new key of `role`, made through the key store."""
    record, plain, _ = await keys.create(f"faults-{uuid.uuid4().hex[:6]}", role)
    return Caller(record.id, plain, role)


async def until(condition: Any, *, within: float) -> None:
    """Until `condition()` (a value or an awaitable) is true; fails after `within` s."""
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


def all_finished(conn: asyncpg.Connection, ids: list[str]) -> Any:
    """A condition for `until`: none of these tasks is pending or running."""

    async def check() -> bool:
        unfinished = await conn.fetchval(
            "SELECT count(*) FROM agent_task WHERE id = ANY($1::uuid[]) AND status IN ('pending', 'running')", ids
        )
        return int(unfinished) == 0

    return check


def nothing_unfinished(conn: asyncpg.Connection) -> Any:
    """A condition for `until`: no task at all is pending or running."""

    async def check() -> bool:
        return int(await conn.fetchval("SELECT count(*) FROM agent_task WHERE status IN ('pending', 'running')")) == 0

    return check


def service_env(database_url: str, **values: str) -> dict[str, str]:
    """The environment of an `agent-service` command on this database, with no provider configured but `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEFAULT_MODEL", "PROVIDER_"))}
    env.update(
        DATABASE_URL=database_url,
        PROMPT_HASH_KEY=TEST_HASH_KEY,
        RESULT_ENCRYPTION_KEYS=TEST_RESULT_KEYS,
        AUDIT_SIGNING_KEY=TEST_SIGNING_KEY,
        LOG_LEVEL="WARNING",
        **values,
    )
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
            done = cli("purge", env=self.env, check=False)
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
