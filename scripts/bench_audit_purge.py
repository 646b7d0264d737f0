"""The audit half of `bench_purge.py --audit`: one day of audit events purged as a partition drop,
against today's batched delete of whole seals, with audited reads running throughout.

One throwaway cluster, two databases seeded alike:
  plain  migrated to 2d3e4f5a6b7c, the last revision with an unpartitioned audit_event: the purge
         deletes the day's events in batches of whole seals (`delete_sealed_audit_events`)
  part   migrated to the head: the day is a partition of its own, dropped with its seals
Each gets AUDIT_ROWS events on one UTC day past AUDIT_RETENTION_DAYS, in seals of 5,000 events
made in SQL (the purge reads a seal's ids, times and watermark, not its signature), and 50,000 live
tasks to read. For each database, in turn: `idle` (reads, no purge), `purge` (the service's
Purger under the same read load) and `idle_after` (reads again): the baseline is the mean of the
two idle phases, so a drift of the machine over the run does not pass for the purge's cost.
Reads/s are taken over a window of at least --idle-seconds around the purge, so a drop of a
fraction of a second is measured over as long a window as the idle one.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from benchlib import HASH_KEY, RESULT_KEYS, SIGNING_KEY

from app.domain import Channel, Role
from app.service.retention import Purger
from app.settings import Settings
from app.storage import migrations
from app.storage.database import Database, init_connection
from app.storage.partitions import HISTORY, day_name, list_partitions, midnight

BEFORE_PARTITIONS = "2d3e4f5a6b7c"
SEAL_SIZE = 5_000
CHUNK = 1_000_000
RETENTION_DAYS = 30


async def lay_out(conn: asyncpg.Connection, days: list[datetime]) -> None:
    """The partitioned database as a service running for a while has it: each of `days` (oldest
    first) in a partition of its own, the days since in one (the history partition is empty in a
    fresh database, and ends where the first day begins)."""
    history = next(p for p in await list_partitions(conn) if p.name == HISTORY)
    await conn.execute(f"DROP TABLE {HISTORY}")
    await conn.execute(f"CREATE TABLE {HISTORY} PARTITION OF audit_event FOR VALUES FROM (MINVALUE) TO ('{days[0]}')")
    for day in days:
        end = day + timedelta(days=1)
        await conn.execute(
            f"CREATE TABLE {day_name(day.date())} PARTITION OF audit_event FOR VALUES FROM ('{day}') TO ('{end}')"
        )
    end = days[-1] + timedelta(days=1)
    await conn.execute(
        f"CREATE TABLE audit_event_since PARTITION OF audit_event FOR VALUES FROM ('{end}') TO ('{history.upper}')"
    )


async def _seed_day(conn: asyncpg.Connection, day: datetime, rows: int) -> None:
    """`rows` read events spread over the day, then seals of SEAL_SIZE over them, chained."""
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        await conn.execute(
            """
            INSERT INTO audit_event (occurred_at, actor_id, actor_role, channel, action, task_id, outcome, xact)
            SELECT $1::timestamptz + (g::float8 / $3) * interval '1 day', gen_random_uuid(), 'client', 'rest',
                   'read', gen_random_uuid(), 'ok', g
            FROM generate_series($2::bigint + 1, $2::bigint + $4) AS g
            """,
            day,
            start,
            rows,
            n,
        )
        print(f"  {start + n:,} events", flush=True)
    await seal_all(conn)


async def seal_all(conn: asyncpg.Connection) -> None:
    """Seals of SEAL_SIZE over every event, in id order, chained (made in SQL: the purge reads a
    seal's ids, times and watermark, never its signature)."""
    await conn.execute(
        """
        INSERT INTO audit_seal (sealed_at, xact_watermark, first_event_id, last_event_id, event_count,
                                first_occurred_at, last_occurred_at, event_ids, event_digests, events_digest,
                                previous_digest, digest, signature, key_id)
        SELECT now(), max(xact) + 1, min(id), max(id), count(*), min(occurred_at), max(occurred_at),
               array_agg(id ORDER BY id), array_agg('d'::text ORDER BY id), 'e', lpad(to_hex(k), 64, '0'),
               lpad(to_hex(k + 1), 64, '0'), 's', 'bench'
        FROM (SELECT id, xact, occurred_at, (row_number() OVER (ORDER BY id) - 1) / $1 AS k FROM audit_event) AS e
        GROUP BY k ORDER BY k
        """,
        SEAL_SIZE,
    )


async def bench_key(conn: asyncpg.Connection) -> uuid.UUID:
    """An API key row in plain SQL, with the columns every revision has had: the plain database is
    migrated to a revision older than today's key columns, so the service's own insert cannot run."""
    key = uuid.uuid4()
    await conn.execute(
        "INSERT INTO api_key (id, name, role, key_hash, key_prefix) VALUES ($1, 'bench', $2, $3, 'ask_b')",
        key,
        Role.CLIENT.value,
        "f" * 64,
    )
    return key


async def _seed(url: str, rows: int, day: datetime, partitioned: bool) -> tuple[uuid.UUID, list[uuid.UUID]]:
    conn = await asyncpg.connect(url)
    try:
        if partitioned:
            await lay_out(conn, [day])
        owner = await bench_key(conn)
        from bench_purge import seed as seed_tasks  # the task seeding of the other mode

        await seed_tasks(conn, owner, 50_000, expired=False)
        t0 = time.perf_counter()
        await _seed_day(conn, day, rows)
        await conn.execute("VACUUM ANALYZE audit_event")
        await conn.execute("VACUUM ANALYZE audit_seal")
        await conn.execute("VACUUM ANALYZE agent_task")
        print(f"seeded {rows:,} audit events in {time.perf_counter() - t0:.1f} s", flush=True)
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM agent_task LIMIT 50000")]
        return owner, ids
    finally:
        await conn.close()


async def _phase(url: str, owner: uuid.UUID, ids: list[uuid.UUID], args: Any, settings: Settings) -> dict[str, Any]:
    from bench_purge import Reads, read_load

    pool = await asyncpg.create_pool(url, min_size=args.readers, max_size=args.readers + 2, init=init_connection)
    out: dict[str, Any] = {}
    try:
        for name in ("idle", "purge", "idle_after"):
            stop, reads = asyncio.Event(), Reads()
            load = asyncio.create_task(read_load(pool, ids, owner, stop, reads, args.readers))
            await asyncio.sleep(0.5)
            reads.latencies.clear()
            started = time.perf_counter()
            purge_seconds, report = 0.0, None
            if name == "purge":
                db = Database(settings)
                await db.open()
                try:
                    report = await Purger(db, settings).run(channel=Channel.CLI)
                finally:
                    await db.close()
                purge_seconds = time.perf_counter() - started
            await asyncio.sleep(max(0.0, args.idle_seconds - (time.perf_counter() - started)))
            window = time.perf_counter() - started
            stop.set()
            await load
            summary = reads.summary()
            out[name] = {"window_seconds": round(window, 3), "reads_per_second": round(summary["reads"] / window, 1)}
            out[name] |= summary
            if report is not None:
                out[name] |= {
                    "seconds": round(purge_seconds, 3),
                    "deleted": report.deleted,
                    "batches": report.batches,
                    "partitions_dropped": report.partitions_dropped,
                }
    finally:
        await pool.close()
    return out


async def run(cluster: Any, port: int, args: argparse.Namespace) -> dict[str, Any]:
    day = midnight((datetime.now(UTC) - timedelta(days=RETENTION_DAYS + 2)).date())
    result: dict[str, Any] = {"audit_rows": args.audit_rows, "readers": args.readers, "batch_size": args.batch_size}
    for name, revision in (("batched_delete", BEFORE_PARTITIONS), ("partition_drop", "head")):
        cluster.create_database(port, name)
        url = cluster.url(port, name)
        await asyncio.to_thread(migrations.upgrade, url, revision)
        print(f"{name}: seeding", flush=True)
        owner, ids = await _seed(url, args.audit_rows, day, revision == "head")
        settings = Settings(
            _env_file=None,
            database_url=url,
            prompt_hash_key=HASH_KEY,  # type: ignore[call-arg]
            result_encryption_keys=RESULT_KEYS,
            audit_signing_key=SIGNING_KEY,
            purge_batch_size=args.batch_size,
            audit_retention_days=RETENTION_DAYS,
            db_pool_max_size=4,
            db_command_timeout_seconds=3600,
        )
        result[name] = await _phase(url, owner, ids, args, settings)
        print(f"{name}: {result[name]}", flush=True)
        deleted = result[name]["purge"]["deleted"]["audit_event"]
        assert deleted >= args.audit_rows, deleted  # the day and the purge's reads of it
    b, p = result["batched_delete"], result["partition_drop"]
    for side in (b, p):
        side["idle_mean"] = {
            key: round((side["idle"][key] + side["idle_after"][key]) / 2, 3) for key in ("reads_per_second", "p99_ms")
        }
    result["ratios"] = {
        "purge_seconds_drop_vs_delete": round(p["purge"]["seconds"] / b["purge"]["seconds"], 5),
        "read_p99_during_drop_vs_during_delete": round(p["purge"]["p99_ms"] / b["purge"]["p99_ms"], 3),
        "read_p99_during_drop_vs_idle": round(p["purge"]["p99_ms"] / p["idle_mean"]["p99_ms"], 3),
        "read_p99_during_delete_vs_idle": round(b["purge"]["p99_ms"] / b["idle_mean"]["p99_ms"], 3),
        "reads_per_s_during_drop_vs_idle": round(
            p["purge"]["reads_per_second"] / p["idle_mean"]["reads_per_second"], 3
        ),
        "reads_per_s_during_delete_vs_idle": round(
            b["purge"]["reads_per_second"] / b["idle_mean"]["reads_per_second"], 3
        ),
        "reads_per_s_idle_partitioned_vs_plain": round(
            p["idle_mean"]["reads_per_second"] / b["idle_mean"]["reads_per_second"], 3
        ),
    }
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'database / phase':24} {'seconds':>9} {'reads/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name in ("batched_delete", "partition_drop"):
        for phase in ("idle", "purge", "idle_after"):
            r = result[name][phase]
            print(
                f"{name + ' ' + phase:24} {r.get('seconds', r['window_seconds']):9.3f} {r['reads_per_second']:9.1f}"
                f" {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f}"
            )
    print()
    for key, value in result["ratios"].items():
        print(f"{key:42} {value}")
