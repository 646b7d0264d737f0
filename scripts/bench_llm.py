"""Benchmark: task submission against a zero-latency OpenAI-compatible server.

    uv run python scripts/bench_llm.py [--seconds 8] [--concurrency 32]

In one run (loopback only; everything it starts, it stops), against a local
zero-latency OpenAI-compatible server (scripts/fake_llm_server.py):

1. Latency, one request at a time (the client is never the bottleneck):
     direct   the `openai` SDK calling the server itself
     nocache  POST /tools/run_agent_task, `cache: false`, a new prompt each time
     cached   POST /tools/run_agent_task, the same prompt (cache hits)
   The service's overhead is nocache p50 minus direct p50.
2. Throughput at --concurrency connections, with wrk when installed (apt-get install
   wrk; a C load generator, so the client is not what is measured), else an async Python
   client: the server alone (its ceiling), nocache, cached.
3. CPU per provider call, in this process (`time.process_time`, the server is another process),
   one call at a time against the same server: the `openai` SDK path the service uses
   (`OpenAICompatibleProvider.complete`) and the same call through pydantic-ai
   (`direct.model_request` over `OpenAIChatModel`, instrumentation off); their ratio decides
   whether the OpenAI path moves onto pydantic-ai (docs/providers.md).
   `--cpu-only` runs this phase alone (no database, no service).
Writes everything to bench-results/llm.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx
import openai
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

SAME_PROMPT = {"prompt": "the same question"}


async def sequential(name: str, call, count: int) -> Stats:  # type: ignore[no-untyped-def]
    latencies = []
    started = time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        assert await call(i)
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Stats(name, count, 0, elapsed, latencies[count // 2] * 1000, latencies[int(count * 0.99) - 1] * 1000)


async def latency_phase(base: str, llm_base: str, key: str, count: int) -> list[Stats]:
    sdk = openai.AsyncOpenAI(api_key="bench", base_url=llm_base, max_retries=0)

    async def direct(i: int) -> bool:
        reply = await sdk.chat.completions.create(model="bench", messages=[{"role": "user", "content": f"q {i}"}])
        return bool(reply.choices)

    async with httpx.AsyncClient(base_url=base, timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:

        async def nocache(i: int) -> bool:
            r = await http.post("/tools/run_agent_task", json={"prompt": f"question {i}", "cache": False})
            return r.status_code == 200 and r.json()["status"] == "succeeded"

        async def cached(i: int) -> bool:
            r = await http.post("/tools/run_agent_task", json=SAME_PROMPT)
            return r.status_code == 200 and r.json()["status"] == "succeeded"

        await cached(0)
        for warm in (direct, nocache):
            await warm(-1)
        runs = [
            await sequential("direct: openai SDK -> server", direct, count),
            await sequential("service, cache: false", nocache, count),
            await sequential("service, cache hits", cached, count),
        ]
    await sdk.close()
    return runs


async def python_throughput(base: str, llm_port: int, key: str, args: argparse.Namespace) -> list[Stats]:
    async with httpx.AsyncClient(
        base_url=base,
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        limits=httpx.Limits(max_connections=args.concurrency),
    ) as http:

        async def server(i: int) -> bool:
            r = await http.post(f"http://127.0.0.1:{llm_port}/v1/chat/completions", json={"model": "bench"})
            return r.status_code == 200

        async def nocache(i: int) -> bool:
            r = await http.post("/tools/run_agent_task", json={"prompt": f"question {i}", "cache": False})
            return r.status_code == 200

        async def cached(i: int) -> bool:
            return (await http.post("/tools/run_agent_task", json=SAME_PROMPT)).status_code == 200

        return [
            await load(name, call, concurrency=args.concurrency, seconds=args.seconds)
            for name, call in (
                ("server alone", server),
                ("service, cache: false", nocache),
                ("service, cache hits", cached),
            )
        ]


def wrk_throughput(base: str, llm_port: int, key: str, args: argparse.Namespace) -> list[Stats]:
    auth = {"Authorization": f"Bearer {key}"}
    common = {"connections": args.concurrency, "seconds": args.seconds}
    return [
        wrk(
            "server alone",
            f"http://127.0.0.1:{llm_port}/v1/chat/completions",
            lua=post_json_lua('{"model": "bench", "messages": []}'),
            **common,
        ),
        wrk(
            "service, cache: false",
            f"{base}/tools/run_agent_task",
            headers=auth,
            lua=post_json_lua('{"prompt": "PROMPT", "cache": false}', unique_prompt=True),
            **common,
        ),
        wrk(
            "service, cache hits",
            f"{base}/tools/run_agent_task",
            headers=auth,
            lua=post_json_lua(json.dumps(SAME_PROMPT)),
            **common,
        ),
    ]


async def cpu_phase(llm_base: str, count: int) -> dict[str, float]:
    """CPU seconds per call of each path, after a warm-up of each, alternating in rounds so that
    neither gets a cooler or a warmer machine."""
    from pydantic_ai import direct
    from pydantic_ai.messages import ModelRequest, SystemPromptPart, UserPromptPart
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from app.llm.base import CompletionRequest, Message
    from app.llm.openai_compatible import OpenAICompatibleProvider

    ours = OpenAICompatibleProvider("openai", api_key="bench", base_url=llm_base)
    client = openai.AsyncOpenAI(api_key="bench", base_url=llm_base, max_retries=0)
    model = OpenAIChatModel("bench", provider=OpenAIProvider(openai_client=client))

    async def sdk(i: int) -> None:
        request = CompletionRequest("bench", (Message("system", "be brief"), Message("user", f"q {i}")))
        assert (await ours.complete(request)).text

    async def pydantic_ai(i: int) -> None:
        messages = [ModelRequest(parts=[SystemPromptPart("be brief"), UserPromptPart(f"q {i}")])]
        response = await direct.model_request(model, messages, instrument=False)
        assert response.parts

    paths = {"openai_sdk": sdk, "pydantic_ai": pydantic_ai}
    for call in paths.values():
        for i in range(50):
            await call(i)
    spent = dict.fromkeys(paths, 0.0)
    rounds = 10
    for _ in range(rounds):
        for name, call in paths.items():
            started = time.process_time()
            for i in range(count // rounds):
                await call(i)
            spent[name] += time.process_time() - started
    await ours.aclose()
    await client.close()
    per_call = {f"{name}_cpu_ms_per_call": round(total / count * 1000, 4) for name, total in spent.items()}
    per_call["pydantic_ai_vs_openai_sdk_cpu"] = round(spent["pydantic_ai"] / spent["openai_sdk"], 3)
    return per_call


def cpu_only(args: argparse.Namespace) -> None:
    llm_port = free_port()
    llm_base = f"http://127.0.0.1:{llm_port}/v1"
    fake = [str(BIN / "python"), str(Path(__file__).with_name("fake_llm_server.py")), "--port", str(llm_port)]
    with process(fake, {}, f"http://127.0.0.1:{llm_port}/"):
        cpu = asyncio.run(cpu_phase(llm_base, args.cpu_calls))
    for name, value in cpu.items():
        print(f"{name:36} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"provider_cpu": cpu, "cpu_calls": args.cpu_calls}, indent=2))
    print(f"\nwritten to {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=300, help="requests per latency measurement")
    parser.add_argument("--out", type=Path, default=Path("bench-results/llm.json"))
    parser.add_argument("--cpu-calls", type=int, default=3000, help="provider calls per path in the CPU phase")
    parser.add_argument("--cpu-only", action="store_true", help="only the CPU per provider call phase")
    args = parser.parse_args()
    if args.cpu_only:
        cpu_only(args)
        return

    llm_port, port = free_port(), free_port()
    llm_base = f"http://127.0.0.1:{llm_port}/v1"
    base = f"http://127.0.0.1:{port}"
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
            latency = asyncio.run(latency_phase(base, llm_base, key, args.sequential))
            tool = "wrk" if wrk_available() else "python"
            throughput = (
                wrk_throughput(base, llm_port, key, args)
                if tool == "wrk"
                else asyncio.run(python_throughput(base, llm_port, key, args))
            )
            cpu = asyncio.run(cpu_phase(llm_base, args.cpu_calls))

    print("\nLatency, one request at a time:")
    print_table(latency)
    print(f"\nThroughput at {args.concurrency} connections ({tool}):")
    print_table(throughput)
    direct, nocache, cached = latency
    server, t_nocache, t_cached = throughput
    ratios = {
        "service_overhead_p50_ms": round(nocache.p50_ms - direct.p50_ms, 2),
        "nocache_p50_vs_direct_p50": round(nocache.p50_ms / direct.p50_ms, 2),
        "cached_p50_vs_nocache_p50": round(cached.p50_ms / nocache.p50_ms, 2),
        "nocache_rps_vs_server_rps": round(t_nocache.rps / server.rps, 3),
        "cached_rps_vs_nocache_rps": round(t_cached.rps / t_nocache.rps, 2),
    }
    print("\nCPU per provider call, one at a time (this process):")
    for name, value in cpu.items():
        print(f"{name:36} {value}")
    print()
    for name, value in ratios.items():
        print(f"{name:28} {value}")
    result = {
        "latency": [s.as_dict() for s in latency],
        "throughput": [s.as_dict() for s in throughput],
        "throughput_tool": tool,
        "concurrency": args.concurrency,
        "ratios": ratios,
        "provider_cpu": cpu,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
