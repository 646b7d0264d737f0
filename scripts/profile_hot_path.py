"""Profile the hot paths with py-spy under wrk load: where one request's CPU goes, by layer.

    uv run --with py-spy python scripts/profile_hot_path.py [--case read|submit|cache]
                                                            [--seconds 15] [--rows 10000]

Loopback only; bounded in time; stops everything it starts. A throwaway PostgreSQL, ROWS
seeded tasks, `agent-service serve` (one worker, offline zero-latency provider), and wrk at
--concurrency connections on the case's endpoint while py-spy samples the server (`record
--format raw --nonblocking`, so the profiler does not stop the process it measures).

It prints the share of the server's samples per layer (a frame's layer is the first of its
stack, leaf first, whose file matches; the rest is "other"), and the 25 functions that
are most often on top of the stack, then writes the collapsed stacks (for a flame graph:
speedscope, inferno) and the summary under bench-results/. A layer's share is the most that
removing it entirely could buy; that is what the levers of issue 17 are weighed by.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import ids_lua
from benchlib import create_key, post_json_lua, serve, service_env, throwaway_postgres, wrk, wrk_available
from benchseed import seed

from app.devdb.cluster import free_port

# (layer, substrings of a frame's file path), matched leaf first: the first layer found wins.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("asyncpg (protocol, codecs)", ("asyncpg/",)),
    ("telemetry (metrics, logfire, OpenTelemetry)", ("opentelemetry", "logfire", "prometheus", "app/telemetry/")),
    ("pydantic (validation, serialization)", ("pydantic/", "pydantic_core")),
    ("json (stdlib)", ("json/",)),
    ("FastAPI (routing, dependencies)", ("fastapi/",)),
    ("Starlette (middleware, requests)", ("starlette/",)),
    ("the service's own code", ("/app/",)),
    ("uvicorn, httptools", ("uvicorn/", "httptools")),
    ("asyncio event loop", ("asyncio/", "uvloop")),
]

CASES = {
    "read": "GET /resources/get_agent_result/{task_id}",
    "submit": "POST /tools/run_agent_task, cache off",
    "cache": "POST /tools/run_agent_task, cache hit",
}


def layer_of(stack: list[str]) -> str:
    """The layer of a sample: its frames are `function (file:line)`, root first."""
    for frame in reversed(stack):
        for name, needles in LAYERS:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def summarise(raw: str) -> dict[str, object]:
    layers: collections.Counter[str] = collections.Counter()
    tops: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack_text.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        layers[layer_of(frames)] += count
        tops[frames[-1]] += count
    share = {name: round(n / total, 3) for name, n in layers.most_common()} if total else {}
    top = [(frame, round(n / total, 3)) for frame, n in tops.most_common(25)] if total else []
    return {"samples": total, "layers": share, "top_frames": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), default="read")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        sys.exit("needs py-spy: uv run --with py-spy python scripts/profile_hot_path.py")
    if not wrk_available():
        sys.exit("needs wrk (apt-get install wrk)")
    args.out.mkdir(parents=True, exist_ok=True)
    raw_path = args.out / f"profile-{args.case}.collapsed"
    with throwaway_postgres() as url:
        env = service_env(url, DEFAULT_MODEL="offline:echo", AUTH_CACHE_SECONDS="60")
        key = create_key(env)
        ids = asyncio.run(seed(url, asyncio.run(_owner(url)), args.rows))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {key}"}
        if args.case == "read":
            target, lua = f"{base}/", ids_lua(ids, "/resources/get_agent_result/")
        elif args.case == "submit":
            target, lua = (
                f"{base}/tools/run_agent_task",
                post_json_lua('{"prompt": "PROMPT", "cache": false}', unique_prompt=True),
            )
        else:
            target, lua = f"{base}/tools/run_agent_task", post_json_lua('{"prompt": "the same question"}')
        with serve(env, port) as server:
            wrk("warm-up", target, headers=auth, lua=lua, connections=args.concurrency, seconds=3)
            load: dict[str, object] = {}
            loader = threading.Thread(
                target=lambda: load.update(
                    stats=wrk(
                        CASES[args.case],
                        target,
                        headers=auth,
                        lua=lua,
                        connections=args.concurrency,
                        seconds=args.seconds + 2,
                    )
                )
            )
            loader.start()
            time.sleep(1)
            subprocess.run(
                [spy, "record", "--pid", str(server.pid), "--subprocesses", "--nonblocking", "--format", "raw",
                 "--rate", str(args.rate), "--duration", str(args.seconds), "--output", str(raw_path)],
                check=True, capture_output=True,
            )  # fmt: skip
            loader.join()
    summary = summarise(raw_path.read_text())
    stats = load["stats"]
    print(f"\n{CASES[args.case]}: {stats}")  # the load under the profiler (slower than bench.py's)
    print(f"{summary['samples']} samples; share of the server's CPU by layer:")
    for name, share in summary["layers"].items():  # type: ignore[attr-defined]
        print(f"  {share:6.1%}  {name}")
    print("most often on top of the stack:")
    for frame, share in summary["top_frames"]:  # type: ignore[attr-defined]
        print(f"  {share:6.1%}  {frame}")
    (args.out / f"profile-{args.case}.json").write_text(json.dumps(summary, indent=2))
    print(f"written to {raw_path} and {args.out / f'profile-{args.case}.json'}")


async def _owner(url: str) -> object:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT id FROM api_key WHERE name = 'bench-client'")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
