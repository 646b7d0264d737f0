"""A bounded load test that checks nothing was lost and every read was audited exactly once.

    uv run python scripts/load.py [--clients 200] [--seconds 60] [--keys 4] [--json PATH]

Loopback only; stops by itself; stops everything it starts. It brings up a throwaway
PostgreSQL (or uses --database-url, a migrated database), starts `agent-service serve`
with the zero-latency `offline` provider (or, with --provider openai, the zero-latency
OpenAI-compatible server in scripts/fake_llm_server.py), and runs --clients concurrent
clients for --seconds over several API keys (and one auditor key), mixing:

  submit (wait)          POST /tools/run_agent_task, a new prompt, cache off
  submit (wait=false)    the same with ?wait=false: 202, finished in the background
  submit (cache)         one of a few popular prompts per key: mostly cache hits
  submit (idempotent)    twice with one Idempotency-Key: the second is a replay (audited as a read)
  read                   GET /resources/get_agent_result/{id} of one of the key's tasks
  list                   GET /resources/agent_results
  delete                 DELETE /resources/get_agent_result/{id} of one of the key's tasks
  auditor read           the auditor reads any task
  audit log              the auditor reads a task's audit events

Afterwards it checks against the database that every acknowledged task (200 or 202) is
there, finished and not expired, unless the client erased it (204), and that the audit
trail holds exactly one row per operation the clients made: per task and action (create,
read, delete, audit_read) and per key for lists. Calls that got no answer or a 5xx may or
may not have reached the database: they widen the allowed range instead of failing it. So
does one race the mix makes on purpose: a client erases a task while another client of the
same key replays its Idempotency-Key; the replay's audited look-up finds it gone (a read,
`not_found`) and the request runs afresh as a new task (the first task must then have been
erased, or idempotency broke, which fails the run).
Prints throughput, p50 and p99 per operation and answers by status; --json writes it all.
Exits 1 if anything was lost or the audit counts do not match.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from benchlib import BIN, HASH_KEY, RESULT_KEYS, SIGNING_KEY, process, serve, service_env, throwaway_postgres

from app.access.keys import KeyStore
from app.devdb.cluster import free_port
from app.domain import Role
from app.settings import Settings
from app.storage.database import Database

RUN = "/tools/run_agent_task"
GET = "/resources/get_agent_result/{}"
SETTLE_SECONDS = 30.0  # how long background (202) tasks may take to finish after the load stops
UNCERTAIN = "uncertain"  # no answer, or a 5xx: the operation may or may not have happened

# The mix: operation -> weight, for client keys. Auditor clients read and read the audit log.
MIX = {
    "submit (wait)": 15,
    "submit (wait=false)": 10,
    "submit (cache)": 15,
    "submit (idempotent)": 5,
    "read": 35,
    "list": 12,
    "delete": 8,
}
AUDITOR_MIX = {"auditor read": 80, "audit log": 20}
AUDITOR_SHARE = 10  # one client in this many uses the auditor key


@dataclass(frozen=True, slots=True)
class Key:
    id: uuid.UUID
    plain: str
    role: Role

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.plain}"}


@dataclass
class OpStats:
    latencies: list[float] = field(default_factory=list)  # seconds, every answered call
    statuses: Counter[str] = field(default_factory=Counter)


@dataclass
class Tally:
    """Everything the clients did, as they saw it."""

    ops: defaultdict[str, OpStats] = field(default_factory=lambda: defaultdict(OpStats))
    acked: dict[str, uuid.UUID] = field(default_factory=dict)  # task_id -> owner key id
    accepted: set[str] = field(default_factory=set)  # answered 202 (finished in the background)
    deleted: set[str] = field(default_factory=set)  # erased on purpose (204)
    audits: Counter[tuple[str, str]] = field(default_factory=Counter)  # (task_id, action) -> rows expected
    maybe_audits: Counter[tuple[str, str]] = field(default_factory=Counter)  # uncertain calls
    lists: Counter[uuid.UUID] = field(default_factory=Counter)  # key id -> list rows expected
    maybe_lists: Counter[uuid.UUID] = field(default_factory=Counter)
    maybe_creates: int = 0  # submits without a usable answer: a task may exist that nobody saw
    cache_hits: int = 0
    replays: int = 0
    reruns: dict[str, str] = field(default_factory=dict)  # an idempotent task erased before its replay -> the new one
    by_key: dict[uuid.UUID, list[str]] = field(default_factory=lambda: defaultdict(list))
    every: list[str] = field(default_factory=list)  # every acknowledged task, for the auditor to read

    def ack(self, task_id: str, key: Key, *, accepted: bool) -> None:
        self.acked[task_id] = key.id
        self.by_key[key.id].append(task_id)
        self.every.append(task_id)
        if accepted:
            self.accepted.add(task_id)


class Client:
    """One simulated client: a connection of its own (as independent callers have), a key, a mix."""

    def __init__(self, http: httpx.AsyncClient, keys: list[Key], auditor: Key, tally: Tally) -> None:
        self.http = http
        self.keys = keys
        self.auditor = auditor
        self.tally = tally

    async def call(self, op: str, method: str, url: str, key: Key, **kwargs: Any) -> httpx.Response | None:
        stats = self.tally.ops[op]
        started = time.perf_counter()
        try:
            response = await self.http.request(
                method, url, headers={**key.headers, **kwargs.pop("headers", {})}, **kwargs
            )
        except httpx.HTTPError as exc:
            stats.statuses[type(exc).__name__] += 1
            return None
        stats.latencies.append(time.perf_counter() - started)
        stats.statuses[str(response.status_code)] += 1
        return response

    # Each operation records what it expects the audit trail to hold.

    async def submit(
        self, op: str, key: Key, body: dict[str, Any], *, wait: bool = True, idem: str | None = None
    ) -> str | None:
        headers = {"Idempotency-Key": idem} if idem else {}
        params = None if wait else {"wait": "false"}
        response = await self.call(op, "POST", RUN, key, json=body, params=params, headers=headers)
        if response is None or response.status_code >= 500:
            self.tally.maybe_creates += 1
            return None
        if response.status_code not in (200, 202):
            return None
        answer = response.json()
        task_id: str = answer["task_id"]
        if response.headers.get("idempotent-replayed") == "true":
            self.tally.replays += 1
            self.tally.audits[(task_id, "read")] += 1  # a replay shows the caller a task: a read
        else:
            self.tally.audits[(task_id, "create")] += 1
            self.tally.ack(task_id, key, accepted=response.status_code == 202)
        self.tally.cache_hits += bool(answer.get("cached"))
        return task_id

    async def audited(
        self, op: str, action: str, method: str, url: str, key: Key, task_id: str
    ) -> httpx.Response | None:
        response = await self.call(op, method, url, key)
        if response is None or response.status_code >= 500:
            self.tally.maybe_audits[(task_id, action)] += 1
        elif response.status_code in (200, 204, 404):  # found or not, the attempt is audited
            self.tally.audits[(task_id, action)] += 1
        return response

    async def run(self, index: int, stop_at: float) -> None:
        rng = random.Random(index)
        auditor = index % AUDITOR_SHARE == AUDITOR_SHARE - 1
        key = self.auditor if auditor else self.keys[index % len(self.keys)]
        mix = AUDITOR_MIX if auditor else MIX
        ops, weights = list(mix), list(mix.values())
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            op = rng.choices(ops, weights)[0]
            await self.one(op, key, rng, f"{index}-{n}")

    async def one(self, op: str, key: Key, rng: random.Random, tag: str) -> None:
        mine = self.tally.by_key[key.id]
        if op in ("read", "delete", "auditor read", "audit log"):
            pool = mine if key.role is Role.CLIENT else self.tally.every
            if not pool:
                op = "list" if key.role is Role.CLIENT else op
            else:
                task_id = rng.choice(pool)
        if op == "submit (wait)":
            await self.submit(op, key, {"prompt": f"question {tag}", "cache": False})
        elif op == "submit (wait=false)":
            await self.submit(op, key, {"prompt": f"background question {tag}", "cache": False}, wait=False)
        elif op == "submit (cache)":
            await self.submit(op, key, {"prompt": f"a popular question, number {rng.randrange(5)}"})
        elif op == "submit (idempotent)":
            body = {"prompt": f"charge order {tag}", "cache": False}
            first = await self.submit(op, key, body, idem=f"order-{tag}")
            again = await self.submit(op, key, body, idem=f"order-{tag}")
            if first is not None and again is not None and again != first:
                # Another client of this key erased the first task meanwhile: the replay looked it up
                # (an audited read, not_found) and, finding nothing, ran the request afresh.
                self.tally.reruns[first] = again
                self.tally.maybe_audits[(first, "read")] += 1
        elif op == "list":
            response = await self.call(op, "GET", "/resources/agent_results", key, params={"limit": 20})
            if response is None or response.status_code >= 500:
                self.tally.maybe_lists[key.id] += 1
            elif response.status_code == 200:
                self.tally.lists[key.id] += 1
        elif not pool:
            await asyncio.sleep(0.01)  # nothing to read yet (the auditor waits for the clients)
        elif op in ("read", "auditor read"):
            await self.audited(op, "read", "GET", GET.format(task_id), key, task_id)
        elif op == "delete":
            response = await self.audited(op, "delete", "DELETE", GET.format(task_id), key, task_id)
            if response is not None and response.status_code == 204:
                self.tally.deleted.add(task_id)
                if task_id in mine:
                    mine.remove(task_id)
        elif op == "audit log":
            url = f"/audit/events?task_id={task_id}&limit=5"
            await self.audited(op, "audit_read", "GET", url, key, task_id)


# -- checking against the database -----------------------------------------------------------------


async def settle(conn: asyncpg.Connection, ids: list[str], within: float) -> int:
    """Wait until the background tasks are finished; how many are not, after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        unfinished = int(
            await conn.fetchval(
                "SELECT count(*) FROM agent_task WHERE id = ANY($1::uuid[]) AND status IN ('pending', 'running')",
                ids,
            )
        )
        if unfinished == 0 or time.monotonic() > deadline:
            return unfinished
        await asyncio.sleep(0.2)


async def verify(database_url: str, tally: Tally) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        kept = [t for t in tally.acked if t not in tally.deleted]
        unfinished = await settle(conn, [t for t in kept if t in tally.accepted], SETTLE_SECONDS)
        rows = {
            str(r["id"]): r
            for r in await conn.fetch(
                "SELECT id, status, expires_at > now() AS live FROM agent_task WHERE id = ANY($1::uuid[])",
                list(tally.acked),
            )
        }
        audit_rows = await conn.fetch(
            "SELECT task_id::text, action, count(*) AS n FROM audit_event "
            "WHERE task_id IS NOT NULL AND action IN ('create', 'read', 'delete', 'audit_read') GROUP BY 1, 2"
        )
        list_rows = await conn.fetch("SELECT actor_id, count(*) AS n FROM audit_event WHERE action = 'list' GROUP BY 1")
    finally:
        await conn.close()

    missing = [t for t in kept if t not in rows]
    resurrected = [t for t in tally.deleted if t in rows]
    expired = [t for t in kept if t in rows and not rows[t]["live"]]
    lost = {
        "acknowledged": len(tally.acked),
        "deleted_on_purpose": len(tally.deleted),
        "missing": len(missing),
        "unfinished": unfinished,
        "expired": len(expired),
        "resurrected": len(resurrected),
        "examples": (missing + resurrected + expired)[:5],
    }
    lost["lost"] = len(missing) + unfinished + len(expired) + len(resurrected)

    actual: Counter[tuple[str, str]] = Counter({(r["task_id"], r["action"]): int(r["n"]) for r in audit_rows})
    mismatches: list[dict[str, Any]] = []
    unacknowledged_creates = 0
    for pair in set(actual) | set(tally.audits) | set(tally.maybe_audits):
        task_id, action = pair
        if action == "create" and task_id not in tally.acked:
            unacknowledged_creates += actual[pair]  # a task made by a submit whose answer never arrived
            continue
        low, high = tally.audits[pair], tally.audits[pair] + tally.maybe_audits[pair]
        if not low <= actual[pair] <= high:
            mismatches.append({"task_id": task_id, "action": action, "expected": low, "found": actual[pair]})
    for first, again in tally.reruns.items():
        if first not in tally.deleted:  # a replay that made a second task while the first still existed
            mismatches.append({"task_id": first, "action": "idempotent replay", "made": again})
    if unacknowledged_creates > tally.maybe_creates:
        mismatches.append(
            {"action": "create", "unacknowledged": unacknowledged_creates, "uncertain_submits": tally.maybe_creates}
        )
    listed: Counter[uuid.UUID] = Counter({r["actor_id"]: int(r["n"]) for r in list_rows})
    for key_id in set(listed) | set(tally.lists):
        low, high = tally.lists[key_id], tally.lists[key_id] + tally.maybe_lists[key_id]
        if not low <= listed[key_id] <= high:
            mismatches.append({"key_id": str(key_id), "action": "list", "expected": low, "found": listed[key_id]})
    audit = {
        "expected_rows": dict(_by_action(tally.audits)) | {"list": sum(tally.lists.values())},
        "found_rows": dict(_by_action(actual)) | {"list": sum(listed.values())},
        "uncertain_calls": sum(tally.maybe_audits.values()) + sum(tally.maybe_lists.values()) + tally.maybe_creates,
        "idempotent_reruns_after_erasure": len(tally.reruns),
        "mismatches": len(mismatches),
        "examples": mismatches[:5],
    }
    return {"lost": lost, "audit": audit}


def _by_action(counts: Counter[tuple[str, str]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for (_, action), n in counts.items():
        out[action] += n
    return out


# -- the run -----------------------------------------------------------------------------------------


async def make_keys(database_url: str, count: int) -> tuple[list[Key], Key]:
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        prompt_hash_key=HASH_KEY,
        result_encryption_keys=RESULT_KEYS,
        audit_signing_key=SIGNING_KEY,
    )
    db = Database(settings)
    await db.open()
    try:
        store = KeyStore(db, cache_seconds=0)
        keys = []
        for i in range(count):
            record, plain, _ = await store.create(f"load-client-{i}", Role.CLIENT)
            keys.append(Key(record.id, plain, Role.CLIENT))
        record, plain, _ = await store.create("load-auditor", Role.AUDITOR)
        return keys, Key(record.id, plain, Role.AUDITOR)
    finally:
        await db.close()


async def drive(base: str, keys: list[Key], auditor: Key, clients: int, seconds: float) -> tuple[Tally, float]:
    tally = Tally()
    began = time.monotonic()

    async def client(index: int) -> None:
        # One connection per client: a shared pool of hundreds makes httpx scan them all on every
        # request, and the load generator, not the service, becomes what is measured.
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=1)) as http:
            await Client(http, keys, auditor, tally).run(index, began + seconds)

    # Bounded: each client stops starting calls at the end; a call in flight has the client's timeout.
    async with asyncio.timeout(seconds + 120):
        await asyncio.gather(*(client(i) for i in range(clients)))
    return tally, time.monotonic() - began


def summarize(tally: Tally, elapsed: float) -> dict[str, dict[str, Any]]:
    table = {}
    for op in [*MIX, *AUDITOR_MIX]:
        stats = tally.ops.get(op)
        if stats is None:
            continue
        ordered = sorted(stats.latencies)
        table[op] = {
            "requests": sum(stats.statuses.values()),
            "rps": round(sum(stats.statuses.values()) / elapsed, 1),
            "p50_ms": round(statistics.median(ordered) * 1000, 2) if ordered else None,
            "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 2) if ordered else None,
            "statuses": dict(sorted(stats.statuses.items())),
        }
    return table


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(
        f"\n{cfg['clients']} clients, {cfg['keys']} client keys + 1 auditor, {report['seconds']:.1f} s, "
        f"provider {cfg['provider']}, {cfg['workers']} worker(s)"
    )
    print(f"{'operation':22} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  answers")
    for op, row in report["operations"].items():
        answers = " ".join(f"{k}:{v}" for k, v in row["statuses"].items())
        p50 = f"{row['p50_ms']:.1f}" if row["p50_ms"] is not None else "-"
        p99 = f"{row['p99_ms']:.1f}" if row["p99_ms"] is not None else "-"
        print(f"{op:22} {row['requests']:9d} {row['rps']:8.1f} {p50:>8} {p99:>8}  {answers}")
    total = report["totals"]
    errors = total["errors_by_status"] or "none"
    print(f"{'all':22} {total['requests']:9d} {total['rps']:8.1f}  errors by status: {errors}")
    print(f"cache hits {report['cache_hits']}, idempotent replays {report['replays']}")
    lost, audit = report["lost"], report["audit"]
    print(
        f"LOST: {lost['lost']} (acknowledged {lost['acknowledged']}, erased on purpose {lost['deleted_on_purpose']}, "
        f"missing {lost['missing']}, unfinished {lost['unfinished']}, expired {lost['expired']}, "
        f"erased yet present {lost['resurrected']})"
    )
    print(
        f"AUDIT: {audit['mismatches']} mismatches; rows expected {audit['expected_rows']}, "
        f"found {audit['found_rows']}, uncertain calls {audit['uncertain_calls']} "
        f"(of which idempotent replays of an erased task {audit['idempotent_reruns_after_erasure']})"
    )
    print("OK" if report["ok"] else "FAILED", flush=True)


@contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
    else:
        with throwaway_postgres("load") as made:
            yield made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60, help="how long the clients run")
    parser.add_argument("--keys", type=int, default=4, help="client API keys (plus one auditor key)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--provider", choices=["offline", "openai"], default="offline")
    parser.add_argument("--database-url", help="a migrated database to use instead of a throwaway cluster")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()

    port = free_port()
    with database(args.database_url) as url, ExitStack() as stack:
        extra = {
            "AUTH_CACHE_SECONDS": "60",
            "DB_POOL_MAX_SIZE": "20",
            "DEFAULT_MODEL": "offline:echo",
        }
        if args.provider == "openai":
            llm_port = free_port()
            fake = [str(BIN / "python"), str(Path(__file__).with_name("fake_llm_server.py")), "--port", str(llm_port)]
            stack.enter_context(process(fake, dict(os.environ), f"http://127.0.0.1:{llm_port}/"))
            extra |= {
                "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
                "OPENAI_API_KEY": "load-test",
                "DEFAULT_MODEL": "openai:bench",
            }
        env = service_env(url, **extra)
        keys, auditor = asyncio.run(make_keys(url, args.keys))
        with serve(env, port, workers=args.workers):
            print(f"service up on :{port}; {args.clients} clients for {args.seconds:g} s ...", flush=True)
            tally, elapsed = asyncio.run(drive(f"http://127.0.0.1:{port}", keys, auditor, args.clients, args.seconds))
            checked = asyncio.run(verify(url, tally))  # the service still runs: background tasks may finish

    operations = summarize(tally, elapsed)
    requests = sum(row["requests"] for row in operations.values())
    errors: Counter[str] = Counter()
    for row in operations.values():
        for status, n in row["statuses"].items():
            if not status.startswith("2"):
                errors[status] += n
    report = {
        "config": {
            "clients": args.clients,
            "seconds": args.seconds,
            "keys": args.keys,
            "workers": args.workers,
            "provider": args.provider,
        },
        "seconds": round(elapsed, 2),
        "operations": operations,
        "totals": {
            "requests": requests,
            "rps": round(requests / elapsed, 1),
            "errors_by_status": dict(sorted(errors.items())),
        },
        "cache_hits": tally.cache_hits,
        "replays": tally.replays,
        **checked,
    }
    report["ok"] = checked["lost"]["lost"] == 0 and checked["audit"]["mismatches"] == 0 and requests > 0
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
