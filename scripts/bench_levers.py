"""The levers of the hot paths, side by side in one run (issue 17).

    uv run python scripts/bench_levers.py --variant before=702c9f5 --variant checks=847c5b5 \
        --variant now=HEAD --variant no-prepare=HEAD:DB_STATEMENT_CACHE_SIZE=0 \
        [--rows 20000] [--seconds 5] [--repeat 3] [--concurrency 32] [--cases c,e,f] [--no-micro]

Servers, side by side. Each `--variant NAME=REF[:SETTING=VALUE,...]` is the service at git REF
(HEAD: this checkout; else checked out and installed in a temporary folder, as bench.py's
baseline phase does) with those settings, on a database of its own in one throwaway cluster,
migrated by its own code and seeded alike. Every variant and the independent reference (r,
scripts/reference_app.py) are up at once and measured in interleaved rounds, the order turning
each round, so a noisy neighbour costs them alike. For each case (c: the audited read, e: a
submission with cache off, f: a cache hit) it prints each variant's median req/s and p99, its
server's CPU per request, and the ratios against the variant before it (what that lever bought)
and against the first.

In-process, in the same run (`--no-micro` skips it): what a lever can buy at most, in
microseconds of one request, each measured against its alternative by turns:
  - dependency resolution: FastAPI solving the five dependencies a read took before issue 17
    against the one it takes now, and none;
  - the middleware: none, the body-size limit alone, and both of ours (request id, body size);
  - serialization: pydantic's `model_dump_json` against `orjson.dumps(model_dump())` on a read's
    AgentResult (orjson only when importable: `uv run --with orjson ...`);
  - metrics: the counter a read adds to, and what a finished task records.

Loopback only; stops everything it starts. Needs wrk. Writes bench-results/levers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import Bench, _owner, _sibling_database, ids_lua, wait_for_backends
from benchlib import (
    BIN,
    Stats,
    baseline_checkout,
    create_key,
    post_json_lua,
    process,
    serve,
    service_env,
    throwaway_postgres,
    wrk,
    wrk_available,
)
from benchmicro import micro
from benchreport import median_stats, ratio
from benchseed import seed, seed_reference

from app.devdb.cluster import free_port

CASES = ("c", "e", "f")


@dataclass
class Variant:
    name: str
    ref: str
    settings: dict[str, str]
    bench: Bench | None = None
    ids: list[uuid.UUID] = field(default_factory=list)
    base: str = ""
    pid: int = 0

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, _, rest = text.partition("=")
        ref, _, pairs = rest.partition(":")
        if not name or not ref:
            raise argparse.ArgumentTypeError(f"expected NAME=REF[:SETTING=VALUE,...], got {text!r}")
        settings = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
        return cls(name, ref, settings)


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and its waited-for children (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@contextmanager
def checkouts(variants: list[Variant]) -> Iterator[dict[str, Path]]:
    """Each distinct REF's bin folder: this checkout's for HEAD, else a temporary install."""
    with ExitStack() as stack:
        bins: dict[str, Path] = {}
        for ref in dict.fromkeys(v.ref for v in variants):
            bins[ref] = BIN if ref == "HEAD" else stack.enter_context(baseline_checkout(ref))
        yield bins


def measure(args: argparse.Namespace, variants: list[Variant], ref_base: str, ref_ids: list[uuid.UUID]) -> dict:
    common: dict[str, Any] = {"connections": args.concurrency, "seconds": args.seconds}
    runs: dict[str, dict[str, list[tuple[Stats, float]]]] = {c: {v.name: [] for v in variants} for c in args.cases}
    reference: list[Stats] = []
    same = post_json_lua('{"prompt": "the same question"}')
    for round_ in range(args.repeat):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        reference.append(wrk("(r) reference audited read", f"{ref_base}/", lua=ids_lua(ref_ids, "/tasks/"), **common))
        for case in args.cases:
            for v in order:
                assert v.bench is not None
                started = cpu_seconds(v.pid)
                if case == "c":
                    stats = v.bench.read(f"(c) read, {v.name}", v.base, v.ids)
                elif case == "e":
                    stats = v.bench.submit(f"(e) submit, {v.name}", v.base)
                else:
                    url = f"{v.base}/tools/run_agent_task"
                    stats = wrk(f"(f) cache hit, {v.name}", url, headers=v.bench.auth, lua=same, **common)
                runs[case][v.name].append((stats, cpu_seconds(v.pid) - started))
    r = median_stats(reference)
    out: dict[str, Any] = {"r": r.as_dict(), "cases": {}}
    print(f"\n(r) reference: {r.rps:,.0f} req/s, p99 {r.p99_ms:.1f} ms")
    for case in args.cases:
        print(f"\ncase ({case})")
        print(f"{'variant':16} {'req/s':>9} {'p99 ms':>8} {'CPU us/req':>11} {'vs prev':>8} {'vs first':>9} {'/r':>6}")
        rows, first, prev = {}, None, None
        for v in variants:
            stats = median_stats([s for s, _ in runs[case][v.name]])
            cpu = sorted(c / max(s.requests, 1) * 1e6 for s, c in runs[case][v.name])[len(runs[case][v.name]) // 2]
            first = first or stats
            row = {
                **stats.as_dict(),
                "cpu_us_per_request": round(cpu, 1),
                "rps_vs_previous": ratio(stats.rps, prev.rps) if prev else None,
                "rps_vs_first": ratio(stats.rps, first.rps),
                "rps_vs_reference": ratio(stats.rps, r.rps),
                "p99_vs_reference": ratio(stats.p99_ms, r.p99_ms),
            }
            rows[v.name] = row
            print(
                f"{v.name:16} {stats.rps:9,.0f} {stats.p99_ms:8.1f} {cpu:11.0f} {row['rps_vs_previous']!s:>8}"
                f" {row['rps_vs_first']!s:>9} {row['rps_vs_reference']!s:>6}"
            )
            prev = stats
        out["cases"][case] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", type=Variant.parse, action="append", default=[], dest="variants")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cases", type=lambda s: [c for c in s.split(",") if c], default=list(CASES))
    parser.add_argument("--no-micro", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench-results/levers.json"))
    args = parser.parse_args()
    if unknown := set(args.cases) - set(CASES):
        sys.exit(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    out: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": args.rows}
    if not args.no_micro:
        out["micro"] = micro()
    if args.variants:
        if not wrk_available():
            sys.exit("the servers need wrk (apt-get install wrk)")
        out["variants"] = [{"name": v.name, "ref": v.ref, "settings": v.settings} for v in args.variants]
        out |= servers(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"\nwritten to {args.out}")


def servers(args: argparse.Namespace) -> dict[str, Any]:
    variants: list[Variant] = args.variants
    with throwaway_postgres() as url, checkouts(variants) as bins, ExitStack() as stack:
        first_env = service_env(url)
        create_key(first_env)
        owner = asyncio.run(_owner(url))
        ref_ids = asyncio.run(seed(url, owner, args.rows))
        asyncio.run(seed_reference(url))
        ref_port = free_port()
        ref_base = f"http://127.0.0.1:{ref_port}"
        ref_cmd = [str(BIN / "uvicorn"), "reference_app:app", "--app-dir", str(Path(__file__).parent)]
        ref_cmd += ["--port", str(ref_port), "--log-level", "warning", "--no-access-log"]
        stack.enter_context(process(ref_cmd, first_env | {"OWNER_ID": str(owner)}, f"{ref_base}/healthz"))
        for n, v in enumerate(variants):
            db_url = asyncio.run(_sibling_database(url, f"lever{n}"))
            env = service_env(
                db_url,
                DB_POOL_MAX_SIZE=str(args.concurrency),
                DB_POOL_MIN_SIZE="2",
                DEFAULT_MODEL="offline:echo",
                AUTH_CACHE_SECONDS="60",
                **v.settings,
            )
            bin_dir = bins[v.ref]
            subprocess.run([str(bin_dir / "agent-service"), "migrate"], env=env, check=True, capture_output=True)
            key = create_key(env, bin_dir=bin_dir)
            v_owner = asyncio.run(_owner(db_url))
            v.ids = asyncio.run(seed(db_url, v_owner, args.rows))
            v.bench = Bench(args, db_url, env, key, v_owner)
            port = free_port()
            v.base = f"http://127.0.0.1:{port}"
            v.pid = stack.enter_context(serve(env, port, bin_dir=bin_dir)).pid
            wait_for_backends(db_url, 2 * (n + 1))  # every server so far has opened its pool
            v.bench.warm_up(v.base, v.ids)
            print(f"variant {v.name}: {v.ref} {v.settings or ''} up on {v.base}", flush=True)
        return measure(args, variants, ref_base, ref_ids)


if __name__ == "__main__":
    main()
