"""`bench_purge.py --audit --paired K`: does read throughput stay within 5% while a day is dropped?

One window of reads against another is not enough on a shared machine: two idle windows of
`bench_audit_purge.py` differed by 20%. So here one partitioned database (at the head) holds K
expired days of --audit-rows events each, every day a partition of its own and sealed, and the
purge drops one day per round: K rounds of an idle window, then a window holding one drop (the
service's `Purger.run`, with the retention set so that exactly the oldest day left is past it),
and a last idle window. Each drop window is compared with the mean of the idle windows on either
side of it, and the figure is the median of the K ratios, with their spread.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from bench_audit_purge import RETENTION_DAYS, SEAL_SIZE, bench_key, lay_out, seal_all
from benchlib import HASH_KEY, RESULT_KEYS, SIGNING_KEY

from app.domain import Channel
from app.service.retention import Purger
from app.settings import Settings
from app.storage import migrations
from app.storage.database import Database, init_connection
from app.storage.partitions import midnight


async def _seed(url: str, days: list[datetime], rows: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    from bench_purge import seed as seed_tasks

    conn = await asyncpg.connect(url)
    try:
        await lay_out(conn, days)
        owner = await bench_key(conn)
        await seed_tasks(conn, owner, 50_000, expired=False)
        # Every day's events at once, then seals over them all: days hold whole seals (rows is a
        # multiple of SEAL_SIZE), so each day is droppable on its own.
        for day in days:
            await _seed_day_events(conn, day, rows)
        await seal_all(conn)
        for table in ("audit_event", "audit_seal", "agent_task"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM agent_task LIMIT 50000")]
        return owner, ids
    finally:
        await conn.close()


async def _seed_day_events(conn: asyncpg.Connection, day: datetime, rows: int) -> None:
    await conn.execute(
        """
        INSERT INTO audit_event (occurred_at, actor_id, actor_role, channel, action, task_id, outcome, xact)
        SELECT $1::timestamptz + (g::float8 / $2) * interval '1 day', gen_random_uuid(), 'client', 'rest',
               'read', gen_random_uuid(), 'ok', g
        FROM generate_series(1, $2::bigint) AS g
        """,
        day,
        rows,
    )
    print(f"  {rows:,} events on {day.date()}", flush=True)


def _settings(url: str, retention_days: int, batch_size: int) -> Settings:
    return Settings(
        _env_file=None,
        database_url=url,
        prompt_hash_key=HASH_KEY,  # type: ignore[call-arg]
        result_encryption_keys=RESULT_KEYS,
        audit_signing_key=SIGNING_KEY,
        purge_batch_size=batch_size,
        audit_retention_days=retention_days,
        db_pool_max_size=4,
        db_command_timeout_seconds=3600,
    )


async def _purge(db: Database, settings: Settings) -> Any:
    return await Purger(db, settings).run(channel=Channel.CLI)


async def _window(
    pool: asyncpg.Pool, db: Database, ids: list[uuid.UUID], owner: uuid.UUID, args: Any, drop: Settings | None
) -> dict:
    from bench_purge import Reads, read_load

    stop, reads = asyncio.Event(), Reads()
    load = asyncio.create_task(read_load(pool, ids, owner, stop, reads, args.readers))
    await asyncio.sleep(0.5)
    reads.latencies.clear()
    started = time.perf_counter()
    out: dict[str, Any] = {}
    if drop is not None:
        report = await _purge(db, drop)
        out |= {"seconds": round(time.perf_counter() - started, 3), "partitions_dropped": report.partitions_dropped}
    await asyncio.sleep(max(0.0, args.idle_seconds - (time.perf_counter() - started)))
    window = time.perf_counter() - started
    stop.set()
    await load
    summary = reads.summary()
    return out | {"window_seconds": round(window, 3), "reads_per_second": round(summary["reads"] / window, 1)} | summary


async def run_paired(cluster: Any, port: int, args: argparse.Namespace) -> dict[str, Any]:
    rounds = args.paired
    rows = max(SEAL_SIZE, args.audit_rows // SEAL_SIZE * SEAL_SIZE)
    today = midnight(datetime.now(UTC).date())
    # Day j (0 = the newest) is RETENTION_DAYS + 2 + j days old; the oldest comes first.
    days = [today - timedelta(days=RETENTION_DAYS + 2 + j) for j in reversed(range(rounds))]
    cluster.create_database(port, "paired")
    url = cluster.url(port, "paired")
    await asyncio.to_thread(migrations.upgrade, url)
    print(f"paired: seeding {rounds} days of {rows:,} events", flush=True)
    owner, ids = await _seed(url, days, rows)
    pool = await asyncpg.create_pool(url, min_size=args.readers, max_size=args.readers + 2, init=init_connection)
    windows: list[dict[str, Any]] = []
    # A purge with no day past retention yet: whatever else it would drop (the empty history
    # partition before the first day) goes before the measured rounds.
    # The purge's pool is open before the rounds, as the service's is: a window measures the purge,
    # not connections being made.
    db = Database(_settings(url, RETENTION_DAYS, args.batch_size))
    await db.open()
    await _purge(db, _settings(url, RETENTION_DAYS + 1 + rounds, args.batch_size))
    try:
        windows.append(await _window(pool, db, ids, owner, args, None) | {"phase": "idle"})
        for i in range(rounds):
            j = rounds - 1 - i  # the oldest day left: past a retention of RETENTION_DAYS + 1 + j days
            drop = _settings(url, RETENTION_DAYS + 1 + j, args.batch_size)
            windows.append(await _window(pool, db, ids, owner, args, drop) | {"phase": "drop"})
            windows.append(await _window(pool, db, ids, owner, args, None) | {"phase": "idle"})
            print(f"  round {i + 1}: {windows[-2]}", flush=True)
    finally:
        await pool.close()
        await db.close()
    ratios = [
        windows[k]["reads_per_second"] / ((windows[k - 1]["reads_per_second"] + windows[k + 1]["reads_per_second"]) / 2)
        for k in range(1, len(windows), 2)
    ]
    p99s = [
        windows[k]["p99_ms"] / ((windows[k - 1]["p99_ms"] + windows[k + 1]["p99_ms"]) / 2)
        for k in range(1, len(windows), 2)
    ]
    idle_pairs = [
        windows[k + 2]["reads_per_second"] / windows[k]["reads_per_second"] for k in range(0, len(windows) - 2, 2)
    ]
    dropped = [w["partitions_dropped"] for w in windows if w["phase"] == "drop"]
    assert dropped == [1] * rounds, dropped  # exactly one day a round
    return {
        "mode": "paired",
        "rounds": rounds,
        "events_per_day": rows,
        "readers": args.readers,
        "window_seconds": args.idle_seconds,
        "windows": windows,
        "ratios": {
            "reads_per_s_drop_vs_neighbouring_idle_median": round(statistics.median(ratios), 3),
            "reads_per_s_drop_vs_neighbouring_idle_min": round(min(ratios), 3),
            "reads_per_s_drop_vs_neighbouring_idle_max": round(max(ratios), 3),
            "read_p99_drop_vs_neighbouring_idle_median": round(statistics.median(p99s), 3),
            "reads_per_s_idle_vs_previous_idle_median": round(statistics.median(idle_pairs), 3),
            "drop_seconds_median": round(statistics.median(w["seconds"] for w in windows if w["phase"] == "drop"), 3),
        },
    }


def print_paired(result: dict[str, Any]) -> None:
    print(f"\n{'window':8} {'seconds':>8} {'reads/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for w in result["windows"]:
        print(
            f"{w['phase']:8} {w.get('seconds', w['window_seconds']):8.3f} {w['reads_per_second']:9.1f}"
            f" {w['p50_ms']:8.2f} {w['p99_ms']:8.2f}"
        )
    print()
    for key, value in result["ratios"].items():
        print(f"{key:50} {value}")
