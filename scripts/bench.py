"""Benchmark the hot paths against the physical limit, in one run.

    uv run python scripts/bench.py [--rows 100000] [--seconds 5] [--repeat 3] [--workers 1]
                                   [--phases cases,workers[,size]] [--large-rows 10000000]

Loopback only; bounded in time; stops everything it starts. Brings up a throwaway
PostgreSQL, migrates it, seeds ROWS task rows, starts the service (offline, zero-latency
provider) and measures at --concurrency connections (wrk for HTTP: a C load generator).

Phase `cases` (the hot paths against their limits):
  (r) a minimal audited read: bare FastAPI, a 6-column table and a 3-column audit insert in
      one CTE, asyncpg pool of 16 (scripts/reference_app.py)  (the independent reference)
  (a) the audited-read SQL from a bare asyncpg loop        (the raw baseline)
  (b) a bare FastAPI endpoint running that SQL             (the framework's limit, our statement)
  (c) GET /resources/get_agent_result/{task_id}, real key  (our hot path)
  (d) the MCP resource agent-result://{task_id}            (through a FastMCP client)
  (e) POST /tools/run_agent_task, cache off
  (f) POST /tools/run_agent_task, cache hits
Phase `workers` (scaling out on one machine): (c) and (e) against `agent-service serve
  --workers 1` and `--workers 2`, both running, measured alternately; ratios w2/w1.
Phase `size` (does the read path stay flat as the table grows?): (c) at ROWS rows, then the
  table grown to --large-rows (bulk insert, indexes rebuilt, VACUUM ANALYZE) and (c) again,
  each reading --read-ids task ids sampled uniformly from the whole table; ratios large/small.

Phase `baseline` (does a change cost the read path?): (c) against the service as it was at
  --baseline-ref (checked out and installed in a temporary folder) and as it is now, both up,
  alternating; ratio now/baseline. Issue 13 (results sealed at rest) was measured with
  `--phases baseline --baseline-ref b2b88bf`.

Targets (issue 17), from the same run: c/r >= 0.7, p99 c/r <= 2, e/c >= 0.5, f/c >= 0.8.
Each figure is the median of --repeat runs. The default (`cases,workers`) takes about 3.5
minutes on a 2-core machine; `size` adds 3 to 4 minutes for 10,000,000 rows (the growth
itself 2 to 3.5 minutes; 6.2 GB on disk, in a temporary folder removed afterwards).
Prints req/s, p50, p99 and the ratios; writes bench-results/bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from benchlib import (
    BIN,
    Stats,
    audited_read_args,
    baseline_checkout,
    create_key,
    load,
    post_json_lua,
    process,
    serve,
    service_env,
    throwaway_postgres,
    wrk,
    wrk_available,
)
from benchreport import median_stats, report_baseline, report_cases, report_size, report_workers
from benchseed import grow, sample_ids, seed, seed_reference
from fastmcp import Client

from app.devdb.cluster import free_port
from app.storage.audit import READ_TASK_AUDITED
from app.storage.database import init_connection

PHASES = ("cases", "workers", "size", "baseline")
POOL_MIN_SIZE = 2


async def raw_loop(url: str, owner: uuid.UUID, ids: list[uuid.UUID], concurrency: int, seconds: float) -> Stats:
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency, init=init_connection)

    async def call(_: int) -> bool:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(READ_TASK_AUDITED.sql, *audited_read_args(random.choice(ids), owner))
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


async def _backends(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'agent-service'")
        )
    finally:
        await conn.close()


def wait_for_backends(url: str, count: int, timeout: float = 60) -> None:
    """Until `count` service connections are open: every worker of a `--workers N` server has
    opened its pool (DB_POOL_MIN_SIZE each), so load is not measured against half a server."""
    deadline = time.monotonic() + timeout
    while asyncio.run(_backends(url)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} service connections after {timeout} s")
        time.sleep(0.2)
    time.sleep(1)  # the pool opens in the lifespan, just before the worker accepts requests


def ids_lua(ids: list[uuid.UUID], path: str, limit: int = 1000) -> str:
    listed = ",".join(f'"{i}"' for i in ids[:limit])
    return (
        f"local ids = {{{listed}}}\n"
        "request = function()\n"
        f'  return wrk.format("GET", "{path}" .. ids[math.random(#ids)])\n'
        "end\n"
    )


class Bench:
    def __init__(self, args: argparse.Namespace, url: str, env: dict[str, str], key: str, owner: uuid.UUID) -> None:
        self.args = args
        self.url = url
        self.env = env
        self.auth = {"Authorization": f"Bearer {key}"}
        self.key = key
        self.owner = owner
        self.common: dict[str, Any] = {"connections": args.concurrency, "seconds": args.seconds}

    def repeat(self, fn: Callable[[], Stats]) -> Stats:
        return median_stats([fn() for _ in range(self.args.repeat)])

    def read(self, name: str, base: str, ids: list[uuid.UUID], limit: int = 1000) -> Stats:
        lua = ids_lua(ids, "/resources/get_agent_result/", limit)
        return wrk(name, f"{base}/", headers=self.auth, lua=lua, **self.common)

    def submit(self, name: str, base: str) -> Stats:
        lua = post_json_lua('{"prompt": "PROMPT", "cache": false}', unique_prompt=True)
        return wrk(name, f"{base}/tools/run_agent_task", headers=self.auth, lua=lua, **self.common)

    def warm_up(self, base: str, ids: list[uuid.UUID], limit: int = 1000) -> None:
        lua = ids_lua(ids, "/resources/get_agent_result/", limit)
        wrk("warm-up", f"{base}/", headers=self.auth, lua=lua, connections=self.args.concurrency, seconds=2)

    # -- phases -------------------------------------------------------------------------------

    def cases(self, ids: list[uuid.UUID]) -> dict[str, Stats]:
        """a-f with every server up at once, measured in interleaved rounds (a, b, c, d, e, f;
        then again), so that drift on a shared machine (autovacuum, checkpoints, neighbours)
        hits every case alike; each figure is the median of its rounds."""
        args = self.args
        bare_port = free_port()
        bare = f"http://127.0.0.1:{bare_port}"
        bare_env = self.env | {"OWNER_ID": str(self.owner), "POOL_SIZE": str(args.concurrency)}
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
        ref_port = free_port()
        ref = f"http://127.0.0.1:{ref_port}"
        ref_cmd = [*bare_cmd[:1], "reference_app:app", *bare_cmd[2:5], str(ref_port), *bare_cmd[6:]]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        same = post_json_lua('{"prompt": "the same question"}')
        measures: dict[str, Callable[[], Stats]] = {
            "r": lambda: wrk("(r) reference audited read", f"{ref}/", lua=ids_lua(ids, "/tasks/"), **self.common),
            "a": lambda: asyncio.run(raw_loop(self.url, self.owner, ids, args.concurrency, args.seconds)),
            "b": lambda: wrk("(b) bare FastAPI + same SQL", f"{bare}/", lua=ids_lua(ids, "/read/"), **self.common),
            "c": lambda: self.read("(c) GET get_agent_result", base, ids),
            "d": lambda: asyncio.run(mcp_reads(base, self.key, ids, args.concurrency, args.seconds)),
            "e": lambda: self.submit("(e) POST run_agent_task, no cache", base),
            "f": lambda: wrk(
                "(f) POST run_agent_task, cache hit",
                f"{base}/tools/run_agent_task",
                headers=self.auth,
                lua=same,
                **self.common,
            ),
        }
        if args.skip_mcp:
            del measures["d"]
        runs: dict[str, list[Stats]] = {name: [] for name in measures}
        with (
            process(bare_cmd, bare_env, f"{bare}/healthz"),
            process(ref_cmd, bare_env, f"{ref}/healthz"),
            serve(self.env, port, workers=args.workers),
        ):
            wait_for_backends(self.url, args.workers * POOL_MIN_SIZE)
            self.warm_up(base, ids)
            for _ in range(args.repeat):
                for name, measure in measures.items():
                    runs[name].append(measure())
        return {name: median_stats(stats) for name, stats in runs.items()}

    def workers(self, ids: list[uuid.UUID]) -> dict[str, Stats]:
        """(c) and (e) against one worker and two, both servers up, measured alternately so
        that drift on a shared machine hits both alike."""
        ports = {1: free_port(), 2: free_port()}
        bases = {n: f"http://127.0.0.1:{port}" for n, port in ports.items()}
        runs: dict[str, list[Stats]] = {"c_w1": [], "c_w2": [], "e_w1": [], "e_w2": []}
        with serve(self.env, ports[2], workers=2):
            wait_for_backends(self.url, 2 * POOL_MIN_SIZE)
            with serve(self.env, ports[1], workers=1):
                wait_for_backends(self.url, 3 * POOL_MIN_SIZE)
                for n in (1, 2):
                    self.warm_up(bases[n], ids)
                for _ in range(self.args.repeat):
                    for n in (1, 2):
                        runs[f"c_w{n}"].append(self.read(f"(c) GET, --workers {n}", bases[n], ids))
                for _ in range(self.args.repeat):
                    for n in (1, 2):
                        runs[f"e_w{n}"].append(self.submit(f"(e) POST no cache, --workers {n}", bases[n]))
        return {name: median_stats(stats) for name, stats in runs.items()}

    def size(self) -> tuple[dict[str, Stats], dict[str, Any]]:
        """(c) at the seeded size, then at --large-rows, each on a fresh server with ids drawn
        uniformly from the whole table."""
        args, results = self.args, {}
        small_rows = asyncio.run(_count(self.url))
        small_ids = asyncio.run(sample_ids(self.url, args.read_ids))
        results["c_small"] = self._read_on_fresh_server(f"(c) GET at {small_rows:,} rows", small_ids)
        print(f"growing agent_task to {args.large_rows:,} rows ...", flush=True)
        growth = asyncio.run(grow(self.url, self.owner, args.large_rows))
        print(f"grown: {growth}", flush=True)
        large_ids = asyncio.run(sample_ids(self.url, args.read_ids))
        results["c_large"] = self._read_on_fresh_server(f"(c) GET at {growth['rows']:,} rows", large_ids)
        return results, {"small_rows": small_rows, "read_ids": len(large_ids)} | growth

    def baseline(self, ids: list[uuid.UUID]) -> dict[str, Stats]:
        """(c) against the service as it was at --baseline-ref and as it is now, both up at once,
        each on its own database of the same cluster seeded alike (as its schema stores rows),
        measured in alternating rounds; the ratio now/baseline is the read path's change."""
        args = self.args
        base_url = asyncio.run(_sibling_database(self.url, "baseline"))
        base_env = self.env | {"DATABASE_URL": base_url}
        runs: dict[str, list[Stats]] = {"c_baseline": [], "c_now": []}
        with baseline_checkout(args.baseline_ref) as old_bin:
            subprocess.run([str(old_bin / "agent-service"), "migrate"], env=base_env, check=True, capture_output=True)
            old_key = create_key(base_env, bin_dir=old_bin)
            old_ids = asyncio.run(seed(base_url, asyncio.run(_owner(base_url)), args.rows))
            old = Bench(args, base_url, base_env, old_key, self.owner)
            ports = {"now": free_port(), "baseline": free_port()}
            bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            with (
                serve(base_env, ports["baseline"], workers=args.workers, bin_dir=old_bin),
                serve(self.env, ports["now"], workers=args.workers),
            ):
                self.warm_up(bases["now"], ids)
                old.warm_up(bases["baseline"], old_ids)
                for round_ in range(args.repeat):
                    order = ("now", "baseline") if round_ % 2 == 0 else ("baseline", "now")
                    for name in order:
                        bench, read_ids = (self, ids) if name == "now" else (old, old_ids)
                        label = f"(c) GET, {name}" + (f" ({args.baseline_ref})" if name == "baseline" else "")
                        runs[f"c_{name}"].append(bench.read(label, bases[name], read_ids))
        return {name: median_stats(stats) for name, stats in runs.items()}

    def _read_on_fresh_server(self, name: str, ids: list[uuid.UUID]) -> Stats:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with serve(self.env, port, workers=self.args.workers):
            wait_for_backends(self.url, self.args.workers * POOL_MIN_SIZE)
            self.warm_up(base, ids, limit=len(ids))
            return self.repeat(lambda: self.read(name, base, ids, limit=len(ids)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers for the `cases` and `size` phases")
    parser.add_argument("--skip-mcp", action="store_true")
    parser.add_argument(
        "--phases", default="cases,workers", help=f"comma-separated, of {', '.join(PHASES)} (default: cases,workers)"
    )
    parser.add_argument("--large-rows", type=int, default=10_000_000, help="the `size` phase grows the table to this")
    parser.add_argument("--read-ids", type=int, default=10_000, help="distinct task ids read in the `size` phase")
    parser.add_argument(
        "--baseline-ref", default=None, help="the git commit the `baseline` phase compares the read path against"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench.json"))
    args = parser.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := set(phases) - set(PHASES):
        sys.exit(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    if "baseline" in phases and not args.baseline_ref:
        sys.exit("the baseline phase needs --baseline-ref (a git commit, e.g. the one before a change)")
    if not wrk_available():
        sys.exit("bench.py needs wrk (apt-get install wrk): a Python load generator saturates before the service")

    results: dict[str, Stats] = {}
    out: dict[str, Any] = {
        "rows": args.rows,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "repeat": args.repeat,
        "seconds": args.seconds,
        "phases": phases,
    }
    t0 = time.perf_counter()
    with throwaway_postgres() as url:
        env = service_env(
            url,
            DB_POOL_MAX_SIZE=str(args.concurrency),
            DB_POOL_MIN_SIZE=str(POOL_MIN_SIZE),
            DEFAULT_MODEL="offline:echo",
            AUTH_CACHE_SECONDS="60",
        )
        key = create_key(env)
        owner = asyncio.run(_owner(url))
        ids = asyncio.run(seed(url, owner, args.rows))
        asyncio.run(seed_reference(url))
        print(f"seeded {args.rows:,} tasks in {time.perf_counter() - t0:.1f} s", flush=True)
        bench = Bench(args, url, env, key, owner)
        if "cases" in phases:
            results = bench.cases(ids)
            out |= report_cases(results, args.repeat)
        if "workers" in phases:
            started = time.perf_counter()
            by_workers = bench.workers(ids)
            out["workers_phase"] = report_workers(by_workers) | {"seconds": round(time.perf_counter() - started)}
        if "size" in phases:
            started = time.perf_counter()
            by_size, growth = bench.size()
            out["size_phase"] = report_size(by_size, growth) | {"seconds": round(time.perf_counter() - started)}
        if "baseline" in phases:
            started = time.perf_counter()
            by_ref = bench.baseline(ids)
            out["baseline_phase"] = report_baseline(by_ref, args.baseline_ref) | {
                "seconds": round(time.perf_counter() - started)
            }
    out["total_seconds"] = round(time.perf_counter() - t0)
    out["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"\ntotal {out['total_seconds']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"written to {args.out}")


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM agent_task"))
    finally:
        await conn.close()


async def _sibling_database(url: str, name: str) -> str:
    """A new, empty database next to `url`'s, in the same cluster; its URL."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return url.rsplit("/", 1)[0] + f"/{name}"


async def _owner(url: str) -> uuid.UUID:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT id FROM api_key WHERE name = 'bench-client'")  # type: ignore[no-any-return]
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
