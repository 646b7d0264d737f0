"""Benchmark: our batched purge against one big DELETE, with audited reads running throughout.

    uv run python scripts/bench_purge.py [--rows 1000000] [--readers 8] [--batch-size 5000]
    uv run python scripts/bench_purge.py --audit [--audit-rows 10000000] [--readers 8]

`--audit` measures the audit purge instead: one day of AUDIT_ROWS events dropped as a partition
against today's batched delete of whole seals (scripts/bench_audit_purge.py); it writes
bench-results/purge-audit.json.

Brings up a throwaway PostgreSQL from the local binaries (loopback only), migrates it,
seeds ROWS tasks (half expired), and in one run measures:
  idle    audited reads by task_id with no purge running (the read baseline)
  delete  `DELETE FROM agent_task WHERE expires_at <= now()` under the same read load
  purge   our purge (app.service.retention.Purger) under the same read load, after re-seeding
Prints time, read p50/p99/max for each, and the ratios the retention issue sets targets
for; writes them to bench-results/purge.json. Stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from benchlib import HASH_KEY, RESULT_KEYS, SIGNING_KEY

from app.devdb.cluster import LocalPostgres
from app.domain import Actor, Channel, Role
from app.service.retention import Purger
from app.settings import Settings
from app.storage import audit, migrations
from app.storage import keys as key_sql
from app.storage.database import Database, init_connection

SEED_CHUNK = 100_000


@dataclass
class Reads:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def summary(self) -> dict[str, float]:
        if not self.latencies:
            return {"reads": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "errors": self.errors}
        ordered = sorted(self.latencies)
        return {
            "reads": len(ordered),
            "p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
            "max_ms": round(ordered[-1] * 1000, 3),
            "errors": self.errors,
        }


async def seed(conn: asyncpg.Connection, owner: uuid.UUID, count: int, *, expired: bool) -> None:
    """Tasks as stored since results are sealed at rest: bytes (their contents do not matter here)."""
    offset = "-1 hour" if expired else "30 days"
    for start in range(0, count, SEED_CHUNK):
        n = min(SEED_CHUNK, count - start)
        await conn.execute(
            f"""
            INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, context,
                                    output, created_at, completed_at, expires_at)
            SELECT gen_random_uuid(), $1, 'succeeded', 'offline:echo', md5(random()::text) || md5(random()::text),
                   'bench', convert_to('{{"source": "bench"}}', 'UTF8'), convert_to(repeat('x', 200), 'UTF8'),
                   now(), now(),
                   now() + interval '{offset}' + random() * interval '1 minute'
            FROM generate_series(1, $2)
            """,
            owner,
            n,
        )


async def read_load(
    pool: asyncpg.Pool, ids: list[uuid.UUID], owner: uuid.UUID, stop: asyncio.Event, reads: Reads, readers: int
) -> None:
    actor = Actor(owner, Role.CLIENT, Channel.REST, "bench")

    async def reader() -> None:
        while not stop.is_set():
            task_id = random.choice(ids)
            started = time.perf_counter()
            try:
                async with pool.acquire() as conn:
                    await audit.read_task_audited(conn, task_id, owner, actor)
                reads.latencies.append(time.perf_counter() - started)
            except Exception:
                reads.errors += 1

    await asyncio.gather(*(reader() for _ in range(readers)))


async def measure(
    pool: asyncpg.Pool, ids: list[uuid.UUID], owner: uuid.UUID, readers: int, work: Any
) -> tuple[float, Reads]:
    """Run `work` (a coroutine factory, or seconds to idle) under read load; its time and the reads."""
    stop, reads = asyncio.Event(), Reads()
    load = asyncio.create_task(read_load(pool, ids, owner, stop, reads, readers))
    await asyncio.sleep(0.5)  # the load is up before the work starts
    reads.latencies.clear()
    started = time.perf_counter()
    if isinstance(work, int | float):
        await asyncio.sleep(work)
    else:
        await work()
    elapsed = time.perf_counter() - started
    stop.set()
    await load
    return elapsed, reads


async def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="agent-service-bench-purge-"))
    cluster = LocalPostgres(root)
    cluster.ensure_initialized()
    port = cluster.start()
    try:
        cluster.create_database(port, "bench")
        url = cluster.url(port, "bench")
        await asyncio.to_thread(migrations.upgrade, url)
        settings = Settings(
            _env_file=None,
            database_url=url,
            prompt_hash_key=HASH_KEY,  # type: ignore[call-arg]
            result_encryption_keys=RESULT_KEYS,
            audit_signing_key=SIGNING_KEY,
            purge_batch_size=args.batch_size,
            db_pool_max_size=4,
        )
        pool = await asyncpg.create_pool(url, min_size=args.readers, max_size=args.readers + 2, init=init_connection)
        async with pool.acquire() as conn:
            owner = (
                await key_sql.insert_api_key(
                    conn, name="bench", role=Role.CLIENT, key_hash="f" * 64, key_prefix="ask_bench"
                )
            ).id
            half = args.rows // 2
            t0 = time.perf_counter()
            await seed(conn, owner, half, expired=False)
            await seed(conn, owner, args.rows - half, expired=True)
            await conn.execute("VACUUM ANALYZE agent_task")
            print(
                f"seeded {args.rows:,} tasks ({args.rows - half:,} expired) in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            ids = [r["id"] for r in await conn.fetch("SELECT id FROM agent_task WHERE expires_at > now() LIMIT 50000")]

        idle_time, idle = await measure(pool, ids, owner, args.readers, args.idle_seconds)

        async def single_delete() -> None:
            async with pool.acquire() as conn:
                await conn.execute("DELETE FROM agent_task WHERE expires_at <= now()")

        delete_time, during_delete = await measure(pool, ids, owner, args.readers, single_delete)

        async with pool.acquire() as conn:
            await seed(conn, owner, args.rows - half, expired=True)
            await conn.execute("VACUUM ANALYZE agent_task")
            await conn.execute("VACUUM ANALYZE audit_event")

        db = Database(settings)
        await db.open()
        report_box: dict[str, Any] = {}

        async def our_purge() -> None:
            report_box["report"] = await Purger(db, settings).run(channel=Channel.CLI)

        purge_time, during_purge = await measure(pool, ids, owner, args.readers, our_purge)
        await db.close()
        await pool.close()
        report = report_box["report"]
        assert report.deleted["agent_task"] == args.rows - half, report.deleted

        result = {
            "rows": args.rows,
            "expired": args.rows - half,
            "readers": args.readers,
            "batch_size": args.batch_size,
            "idle": {"seconds": round(idle_time, 3), **idle.summary()},
            "single_delete": {"seconds": round(delete_time, 3), **during_delete.summary()},
            "our_purge": {"seconds": round(purge_time, 3), "batches": report.batches, **during_purge.summary()},
        }
        s, d = result["single_delete"], result["our_purge"]
        result["ratios"] = {
            "purge_time_vs_single_delete": round(d["seconds"] / s["seconds"], 2),
            "read_p99_during_purge_vs_during_single_delete": round(d["p99_ms"] / s["p99_ms"], 2),
            "read_p99_during_purge_vs_idle": round(d["p99_ms"] / result["idle"]["p99_ms"], 2),
        }
        return result
    finally:
        cluster.stop()
        import subprocess

        subprocess.run(["rm", "-rf", str(root)], check=False)


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'phase':15} {'seconds':>8} {'reads':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    for phase in ("idle", "single_delete", "our_purge"):
        r = result[phase]
        print(
            f"{phase:15} {r['seconds']:8.2f} {r['reads']:8d} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
            f"{r['max_ms']:8.2f} {r['errors']:7d}"
        )
    ratios = result["ratios"]
    print(f"\npurge time / single DELETE time:           {ratios['purge_time_vs_single_delete']:.2f}  (target <= 2.5)")
    print(
        f"read p99 during purge / during DELETE:     {ratios['read_p99_during_purge_vs_during_single_delete']:.2f}"
        "  (target <= 1.5)"
    )
    print(f"read p99 during purge / idle:              {ratios['read_p99_during_purge_vs_idle']:.2f}")
    print(f"slowest read during purge:                 {result['our_purge']['max_ms']:.1f} ms  (target < 100)")


async def audit_main(args: argparse.Namespace) -> dict[str, Any]:
    from bench_audit_drops import run_paired
    from bench_audit_purge import run

    root = Path(tempfile.mkdtemp(prefix="agent-service-bench-purge-"))
    cluster = LocalPostgres(root)
    cluster.ensure_initialized()
    port = cluster.start()
    try:
        return await (run_paired if args.paired else run)(cluster, port, args)
    finally:
        cluster.stop()
        import subprocess

        subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--audit", action="store_true", help="the audit purge: a partition drop against batches")
    parser.add_argument("--audit-rows", type=int, default=10_000_000)
    parser.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="K",
        help="with --audit: K days of --audit-rows events, one dropped a round between idle windows",
    )
    arguments = parser.parse_args()
    if arguments.audit:
        from bench_audit_drops import print_paired
        from bench_audit_purge import print_table as print_audit_table

        arguments.out = arguments.out or Path(f"bench-results/purge-audit{'-paired' if arguments.paired else ''}.json")
        outcome = asyncio.run(audit_main(arguments))
        (print_paired if arguments.paired else print_audit_table)(outcome)
    else:
        arguments.out = arguments.out or Path("bench-results/purge.json")
        outcome = asyncio.run(main(arguments))
        print_table(outcome)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(outcome, indent=2))
    print(f"\nwritten to {arguments.out}")
