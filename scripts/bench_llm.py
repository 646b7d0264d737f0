"""Benchmark: task submission against a zero-latency OpenAI-compatible server.

    uv run python scripts/bench_llm.py [--seconds 10] [--concurrency 32]

In one run (loopback only; everything it starts, it stops):
  direct   the `openai` SDK calling the zero-latency server itself (the floor)
  nocache  POST /tools/run_agent_task with `cache: false`, a new prompt each time
  cached   POST /tools/run_agent_task with the same prompt again and again (cache hits)
Prints req/s, p50 and p99 of each and the service's overhead over the direct calls;
writes them to bench-results/llm.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import httpx
import openai
from benchlib import BIN, create_key, load, print_table, process, serve, service_env, throwaway_postgres

from app.local_postgres import free_port


async def measure(base: str, llm_base: str, key: str, args: argparse.Namespace) -> dict[str, object]:
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    sdk = openai.AsyncOpenAI(api_key="bench", base_url=llm_base, max_retries=0)

    async def direct(i: int) -> bool:
        reply = await sdk.chat.completions.create(model="bench", messages=[{"role": "user", "content": f"q {i}"}])
        return bool(reply.choices)

    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:

        async def nocache(i: int) -> bool:
            r = await http.post("/tools/run_agent_task", json={"prompt": f"question {i}", "cache": False})
            return r.status_code == 200 and r.json()["status"] == "succeeded"

        async def cached(i: int) -> bool:
            r = await http.post("/tools/run_agent_task", json={"prompt": "the same question"})
            return r.status_code == 200 and r.json()["status"] == "succeeded"

        await cached(0)  # fill the cache
        runs = [
            await load("direct: openai SDK -> server", direct, concurrency=args.concurrency, seconds=args.seconds),
            await load("service, cache: false", nocache, concurrency=args.concurrency, seconds=args.seconds),
            await load("service, cache hits", cached, concurrency=args.concurrency, seconds=args.seconds),
        ]
    await sdk.close()
    print_table(runs)
    direct_stats, nocache_stats, cached_stats = runs
    ratios = {
        "nocache_rps_vs_direct": round(nocache_stats.rps / direct_stats.rps, 3),
        "cached_rps_vs_direct": round(cached_stats.rps / direct_stats.rps, 3),
        "nocache_p50_overhead_ms": round(nocache_stats.p50_ms - direct_stats.p50_ms, 2),
        "cached_rps_vs_nocache": round(cached_stats.rps / nocache_stats.rps, 3),
    }
    print()
    for name, value in ratios.items():
        print(f"{name:28} {value}")
    return {"runs": [r.as_dict() for r in runs], "ratios": ratios, "concurrency": args.concurrency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("bench-results/llm.json"))
    args = parser.parse_args()

    llm_port, port = free_port(), free_port()
    llm_base = f"http://127.0.0.1:{llm_port}/v1"
    with throwaway_postgres() as url:
        env = service_env(
            url,
            OPENAI_BASE_URL=llm_base,
            OPENAI_API_KEY="bench",
            DEFAULT_MODEL="openai:bench",
            DB_POOL_MAX_SIZE=str(args.concurrency),
        )
        key = create_key(env)
        fake = [str(BIN / "python"), str(Path(__file__).with_name("fake_llm_server.py")), "--port", str(llm_port)]
        with process(fake, env, f"http://127.0.0.1:{llm_port}/"), serve(env, port):
            result = asyncio.run(measure(f"http://127.0.0.1:{port}", llm_base, key, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
