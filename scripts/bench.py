"""Benchmark the hot paths against the physical limit, in one run.

    uv run python scripts/bench.py [--rows 100000] [--seconds 5] [--repeat 3] [--workers 1]

Loopback only; bounded in time; stops everything it starts. Brings up a throwaway
PostgreSQL, migrates it, seeds ROWS task rows, starts the service (offline, zero-latency
provider) and measures at --concurrency connections (wrk for HTTP: a C load generator):
  (a) the audited-read SQL from a bare asyncpg loop        (the raw baseline)
  (b) a bare FastAPI endpoint running that SQL             (the framework's limit)
  (c) GET /resources/get_agent_result/{task_id}, real key  (our hot path)
  (d) the MCP resource agent-result://{task_id}            (through a FastMCP client)
  (e) POST /tools/run_agent_task, cache off
  (f) POST /tools/run_agent_task, cache hits
Each figure is the median of --repeat runs. Prints req/s, p50, p99 and the ratios;
writes bench-results/bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from benchlib import (
    BIN,
    Stats,
    create_key,
    load,
    post_json_lua,
    print_table,
    process,
    serve,
    service_env,
    throwaway_postgres,
    wrk,
    wrk_available,
)
from fastmcp import Client

from app.db import init_connection
from app.local_postgres import free_port
from app.repository import _READ_TASK_AUDITED

SEED_CHUNK = 200_000


async def seed(url: str, owner: uuid.UUID, rows: int) -> list[uuid.UUID]:
    conn = await asyncpg.connect(url)
    try:
        for start in range(0, rows, SEED_CHUNK):
            await conn.execute(
                """
                INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, context,
                                        output, prompt_tokens, completion_tokens, total_tokens,
                                        created_at, completed_at, expires_at)
                SELECT gen_random_uuid(), $1, 'succeeded', 'offline:echo', md5(random()::text) || md5(random()::text),
                       'bench', '{"source": "bench"}'::jsonb, repeat('answer ', 30), 10, 30, 40,
                       now() - random() * interval '1 day', now(), now() + interval '30 days'
                FROM generate_series(1, $2)
                """,
                owner,
                min(SEED_CHUNK, rows - start),
            )
        await conn.execute("VACUUM ANALYZE agent_task")
        rows_ = await conn.fetch("SELECT id FROM agent_task TABLESAMPLE SYSTEM (1) LIMIT 2000")
        if len(rows_) < 100:
            rows_ = await conn.fetch("SELECT id FROM agent_task LIMIT 2000")
        return [r["id"] for r in rows_]
    finally:
        await conn.close()


async def raw_loop(url: str, owner: uuid.UUID, ids: list[uuid.UUID], concurrency: int, seconds: float) -> Stats:
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency, init=init_connection)

    async def call(_: int) -> bool:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(_READ_TASK_AUDITED, random.choice(ids), owner, owner, "client", "rest", None)
        return row is not None

    try:
        return await load("(a) bare asyncpg loop", call, concurrency=concurrency, seconds=seconds)
    finally:
        await pool.close()


async def mcp_reads(base: str, key: str, ids: list[uuid.UUID], concurrency: int, seconds: float) -> Stats:
    clients = [Client(f"{base}/mcp", auth=key) for _ in range(concurrency)]
    for client in clients:
        await client.__aenter__()
    slots: asyncio.Queue[Client] = asyncio.Queue()
    for client in clients:
        slots.put_nowait(client)

    async def call(_: int) -> bool:
        client = await slots.get()
        try:
            contents = await client.read_resource(f"agent-result://{random.choice(ids)}")
            return bool(contents)
        finally:
            slots.put_nowait(client)

    try:
        return await load("(d) MCP resource read", call, concurrency=concurrency, seconds=seconds)
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)


def ids_lua(ids: list[uuid.UUID], path: str) -> str:
    listed = ",".join(f'"{i}"' for i in ids[:1000])
    return (
        f"local ids = {{{listed}}}\n"
        "request = function()\n"
        f'  return wrk.format("GET", "{path}" .. ids[math.random(#ids)])\n'
        "end\n"
    )


def median_stats(runs: list[Stats]) -> Stats:
    """The run with the median throughput (its latencies belong to it)."""
    ordered = sorted(runs, key=lambda s: s.rps)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip-mcp", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench.json"))
    args = parser.parse_args()
    if not wrk_available():
        sys.exit("bench.py needs wrk (apt-get install wrk): a Python load generator saturates before the service")

    port, bare_port = free_port(), free_port()
    base, bare = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
    results: dict[str, Stats] = {}
    t0 = time.perf_counter()
    with throwaway_postgres() as url:
        env = service_env(
            url, DB_POOL_MAX_SIZE=str(args.concurrency), DEFAULT_MODEL="offline:echo", AUTH_CACHE_SECONDS="60"
        )
        key = create_key(env)
        owner = asyncio.run(_owner(url))
        ids = asyncio.run(seed(url, owner, args.rows))
        print(f"seeded {args.rows:,} tasks in {time.perf_counter() - t0:.1f} s", flush=True)
        auth = {"Authorization": f"Bearer {key}"}
        common = {"connections": args.concurrency, "seconds": args.seconds}

        def repeat(fn) -> Stats:  # type: ignore[no-untyped-def]
            return median_stats([fn() for _ in range(args.repeat)])

        results["a"] = repeat(lambda: asyncio.run(raw_loop(url, owner, ids, args.concurrency, args.seconds)))
        bare_env = env | {"OWNER_ID": str(owner), "POOL_SIZE": str(args.concurrency)}
        bare_cmd = [
            str(BIN / "uvicorn"),
            "bare_app:app",
            "--app-dir",
            str(Path(__file__).parent),
            "--port",
            str(bare_port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with process(bare_cmd, bare_env, f"{bare}/healthz"):
            results["b"] = repeat(
                lambda: wrk("(b) bare FastAPI + same SQL", f"{bare}/", lua=ids_lua(ids, "/read/"), **common)
            )
        with serve(env, port, workers=args.workers):
            results["c"] = repeat(
                lambda: wrk(
                    "(c) GET get_agent_result",
                    f"{base}/",
                    headers=auth,
                    lua=ids_lua(ids, "/resources/get_agent_result/"),
                    **common,
                )
            )
            if not args.skip_mcp:
                results["d"] = repeat(lambda: asyncio.run(mcp_reads(base, key, ids, args.concurrency, args.seconds)))
            results["e"] = repeat(
                lambda: wrk(
                    "(e) POST run_agent_task, no cache",
                    f"{base}/tools/run_agent_task",
                    headers=auth,
                    lua=post_json_lua('{"prompt": "PROMPT", "cache": false}', unique_prompt=True),
                    **common,
                )
            )
            results["f"] = repeat(
                lambda: wrk(
                    "(f) POST run_agent_task, cache hit",
                    f"{base}/tools/run_agent_task",
                    headers=auth,
                    lua=post_json_lua('{"prompt": "the same question"}'),
                    **common,
                )
            )

    print_table(list(results.values()))
    a, b, c, e, f = (results[k] for k in "abcef")
    ratios = {
        "c/a": round(c.rps / a.rps, 3),
        "c/b": round(c.rps / b.rps, 3),
        "e/a": round(e.rps / a.rps, 3),
        "e/c": round(e.rps / c.rps, 3),
        "f/c": round(f.rps / c.rps, 3),
        "p99 c/b": round(c.p99_ms / b.p99_ms, 2),
    }
    if "d" in results:
        ratios["d/c"] = round(results["d"].rps / c.rps, 3)
    targets = {"c/b": ">= 0.7", "c/a": ">= 0.35", "p99 c/b": "<= 2", "e/c": ">= 0.5", "f/c": ">= 0.8"}
    print()
    for name, value in ratios.items():
        print(f"{name:10} {value:8}   {('target ' + targets[name]) if name in targets else ''}")
    out = {
        "rows": args.rows,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "repeat": args.repeat,
        "seconds": args.seconds,
        "results": {k: v.as_dict() for k, v in results.items()},
        "ratios": ratios,
        "medians_of": args.repeat,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "p50_ms": {k: v.p50_ms for k, v in results.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"\nwritten to {args.out}")


async def _owner(url: str) -> uuid.UUID:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT id FROM api_key WHERE name = 'bench-client'")  # type: ignore[no-any-return]
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
