"""A peer, side by side: LiteLLM's proxy and this service in front of the same zero-latency server.

    uv run python scripts/bench_gateway.py [--seconds 8] [--rounds 3] [--concurrency 16]
                                           [--litellm 1.108.7] [--venv ~/.cache/agent-service/bench-litellm]

In one run (loopback only; everything it starts, it stops):
- LiteLLM's proxy (`litellm[proxy]` at --litellm) in a throwaway virtual environment of its own,
  installed from PyPI by this script with pip the first time (kept in --venv for the next run).
  If it cannot be installed or does not start, the script says so and exits 0 without figures.
- One zero-latency OpenAI-compatible server (scripts/fake_llm_server.py) behind both.
- This service (`agent-service serve`, one worker, on a throwaway PostgreSQL: every task stored
  and audited) and LiteLLM (`--num_workers 1`, no database: a pure gateway), both up at once.
- A task submission each: POST /tools/run_agent_task (`cache: false`, a new prompt each time)
  against POST /v1/chat/completions, at --concurrency connections, in interleaved rounds (the
  order alternates, so a noisy neighbour costs both alike), with wrk when installed, else an async
  Python client (the same client for both).
Prints requests/s, p50 and p99 for each (medians of the rounds) and ours/LiteLLM's ratios; writes
bench-results/gateway.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
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

from app.devdb.cluster import free_port

MASTER_KEY = "sk-bench-gateway-master-key"


def litellm_venv(venv: Path, version: str) -> Path | None:
    """The venv's `litellm` command, installing `litellm[proxy]==version` into it if needed;
    None (with the reason printed) when that cannot be done here."""
    command = venv / "bin" / "litellm"
    marker = venv / f".installed-{version}"
    if command.exists() and marker.exists():
        return command
    python = os.environ.get("BENCH_LITELLM_PYTHON", "python3")
    try:
        subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
        print(f"Installing litellm[proxy]=={version} into {venv} (once) ...", flush=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={version}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(f"SKIPPED: LiteLLM's proxy could not be installed ({type(exc).__name__}): {detail.strip()[-400:]}")
        return None
    marker.touch()
    return command


def litellm_config(upstream: str) -> Path:
    config = {
        "model_list": [
            {"model_name": "bench", "litellm_params": {"model": "openai/bench", "api_base": upstream, "api_key": "x"}}
        ],
        "litellm_settings": {"telemetry": False},
    }
    path = Path(tempfile.mkstemp(prefix="bench-litellm-", suffix=".yaml")[1])
    path.write_text(json.dumps(config))  # YAML is a superset of JSON
    return path


def litellm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "VIRTUAL_ENV"))}
    env.update(
        LITELLM_MASTER_KEY=MASTER_KEY,
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # offline: the bundled price map, no download
        LITELLM_LOG="ERROR",
        LITELLM_TELEMETRY="False",
    )
    return env


async def python_round(name: str, url: str, headers: dict[str, str], body: Callable[[int], dict], args) -> Stats:  # type: ignore[no-untyped-def, type-arg]
    async with httpx.AsyncClient(
        timeout=30, headers=headers, limits=httpx.Limits(max_connections=args.concurrency)
    ) as http:

        async def call(i: int) -> bool:
            return (await http.post(url, json=body(i))).status_code == 200

        return await load(name, call, concurrency=args.concurrency, seconds=args.seconds)


def one_round(name: str, url: str, headers: dict[str, str], body: Callable[[int], dict], args) -> Stats:  # type: ignore[no-untyped-def, type-arg]
    if wrk_available():
        template = json.dumps(body(0)).replace("p-0", "PROMPT")
        return wrk(
            name,
            url,
            connections=args.concurrency,
            seconds=args.seconds,
            headers=headers,
            lua=post_json_lua(template, unique_prompt="PROMPT" in template),
        )
    return asyncio.run(python_round(name, url, headers, body, args))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def median(name: str, runs: list[Stats]) -> Stats:
    return Stats(
        name,
        int(statistics.median(r.requests for r in runs)),
        sum(r.errors for r in runs),
        statistics.median(r.seconds for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--litellm", default="1.108.7", help="the litellm[proxy] version to compare with")
    parser.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "agent-service" / "bench-litellm")
    parser.add_argument("--out", type=Path, default=Path("bench-results/gateway.json"))
    args = parser.parse_args()

    litellm = litellm_venv(args.venv, args.litellm)
    if litellm is None:
        return 0
    upstream_port, ours_port, theirs_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    config = litellm_config(upstream)
    ours_url = f"http://127.0.0.1:{ours_port}/tools/run_agent_task"
    theirs_url = f"http://127.0.0.1:{theirs_port}/v1/chat/completions"

    def ours_body(i: int) -> dict:  # type: ignore[type-arg]
        return {"prompt": f"p-{i}", "cache": False}

    def theirs_body(i: int) -> dict:  # type: ignore[type-arg]
        return {"model": "bench", "messages": [{"role": "user", "content": f"p-{i}"}]}

    ours_runs: list[Stats] = []
    theirs_runs: list[Stats] = []
    with throwaway_postgres() as url:
        env = service_env(
            url,
            OPENAI_BASE_URL=upstream,
            OPENAI_API_KEY="bench",
            DEFAULT_MODEL="openai:bench",
            DB_POOL_MAX_SIZE=str(args.concurrency),
        )
        key = create_key(env)
        fake = [str(BIN / "python"), str(Path(__file__).with_name("fake_llm_server.py")), "--port", str(upstream_port)]
        litellm_args = [str(litellm), "--config", str(config), "--port", str(theirs_port), "--num_workers", "1"]
        try:
            with (
                process(fake, env, f"http://127.0.0.1:{upstream_port}/"),
                serve(env, ours_port),
                process(litellm_args, litellm_env(), f"http://127.0.0.1:{theirs_port}/health/liveliness", timeout=180),
            ):
                ours = ("this service: POST /tools/run_agent_task", ours_url, {"Authorization": f"Bearer {key}"})
                theirs = (
                    "LiteLLM proxy: POST /v1/chat/completions",
                    theirs_url,
                    {"Authorization": f"Bearer {MASTER_KEY}"},
                )
                for warm in (ours, theirs):  # first requests pay for imports and connections
                    httpx.post(
                        warm[1], headers=warm[2], json=(ours_body if warm is ours else theirs_body)(0), timeout=60
                    )
                for n in range(args.rounds):
                    order = [(ours, ours_body, ours_runs), (theirs, theirs_body, theirs_runs)]
                    for (name, target, headers), body, runs in order if n % 2 == 0 else reversed(order):
                        runs.append(one_round(name, target, headers, body, args))
                        print(f"round {n + 1}: {runs[-1].name[:13]:13} {runs[-1].rps:8.1f} req/s", flush=True)
        except RuntimeError as exc:
            print(f"SKIPPED: a server did not start: {exc}")
            return 0
        finally:
            config.unlink(missing_ok=True)

    ours_stats, theirs_stats = median(ours_runs[0].name, ours_runs), median(theirs_runs[0].name, theirs_runs)
    tool = "wrk" if wrk_available() else "python"
    print(
        f"\nTask submission, {args.concurrency} connections, one worker each, medians of {args.rounds} rounds ({tool}):"
    )
    print_table([ours_stats, theirs_stats])
    ratios = {
        "rps_ours_vs_litellm": round(ours_stats.rps / theirs_stats.rps, 2) if theirs_stats.rps else None,
        "p50_ours_vs_litellm": round(ours_stats.p50_ms / theirs_stats.p50_ms, 2) if theirs_stats.p50_ms else None,
        "p99_ours_vs_litellm": round(ours_stats.p99_ms / theirs_stats.p99_ms, 2) if theirs_stats.p99_ms else None,
    }
    print()
    for name, value in ratios.items():
        print(f"{name:22} {value}")
    result = {
        "litellm_version": args.litellm,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "tool": tool,
        "rounds": {"ours": [r.as_dict() for r in ours_runs], "litellm": [r.as_dict() for r in theirs_runs]},
        "median": {"ours": ours_stats.as_dict(), "litellm": theirs_stats.as_dict()},
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
