"""Shared pieces of the benchmarks: a throwaway PostgreSQL, the service as a process, a load loop."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.devdb.cluster import LocalPostgres
from app.storage import migrations
from app.storage.audit import READ_TASK_AUDITED

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def audited_read_args(task_id: Any, owner: Any) -> tuple[Any, ...]:
    """READ_TASK_AUDITED's arguments for `owner` reading its own task over REST."""
    return READ_TASK_AUDITED.args(
        {
            "task_id": task_id,
            "owner": owner,
            "actor_id": owner,
            "actor_role": "client",
            "channel": "rest",
            "request_id": None,
        }
    )


HASH_KEY = "bench-prompt-hash-key-" + "0" * 32
# A fixed result key (bytes 32 to 63, base64): throwaway databases only.
RESULT_KEYS = "bench:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
# A fixed Ed25519 private key for the audit seals (base64 of 32 bytes): benchmarks only.
SIGNING_KEY = "k0bL8nvUQ1Vq3m5hYw2x7Zr4Tt9Ee6Jc0Ss1Aa8Ff2I="


@contextmanager
def throwaway_postgres(dbname: str = "bench") -> Iterator[str]:
    """A cluster from the local binaries in a temporary folder, migrated; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="agent-service-bench-"))
    cluster = LocalPostgres(root)
    cluster.ensure_initialized()
    port = cluster.start()
    try:
        cluster.create_database(port, dbname)
        url = cluster.url(port, dbname)
        migrations.upgrade(url)
        yield url
    finally:
        cluster.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEFAULT_MODEL"))}
    env.update(
        DATABASE_URL=database_url,
        PROMPT_HASH_KEY=HASH_KEY,
        RESULT_ENCRYPTION_KEYS=RESULT_KEYS,
        AUDIT_SIGNING_KEY=SIGNING_KEY,
        LOG_LEVEL="WARNING",
        PURGE_ENABLED="false",
        **extra,
    )
    return env


def create_key(env: dict[str, str], role: str = "client", bin_dir: Path = BIN) -> str:
    out = subprocess.run(
        [str(bin_dir / "agent-service"), "keys", "create", f"bench-{role}", "--role", role],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"ask_[A-Za-z0-9_\-]+", out)
    assert match, out
    return match.group(0)


@contextmanager
def process(
    args: list[str], env: dict[str, str], health_url: str, timeout: float = 90
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process and wait until `health_url` answers; stop it afterwards."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited with {proc.returncode}")
            try:
                if httpx.get(health_url, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not come up")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve(env: dict[str, str], port: int, workers: int = 1, bin_dir: Path = BIN) -> Any:
    return process(
        [str(bin_dir / "agent-service"), "serve", "--port", str(port), "--workers", str(workers)],
        env,
        f"http://127.0.0.1:{port}/healthz",
    )


@contextmanager
def baseline_checkout(ref: str) -> Iterator[Path]:
    """The service as it was at git `ref`, in a temporary folder with an environment of its own
    (`uv sync --frozen`, from uv's cache: no network); yields its bin folder. Removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="agent-service-baseline-"))
    try:
        archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
        # With the dev group, as the service under test runs from this checkout's environment:
        # the two differ only in their code.
        subprocess.run(["uv", "sync", "--frozen", "--quiet"], cwd=root, env=env, check=True)
        yield root / ".venv" / "bin"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Stats:
    name: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
        }


async def load(
    name: str, call: Callable[[int], Awaitable[bool]], *, concurrency: int, seconds: float, warmup: float = 1.0
) -> Stats:
    """`concurrency` workers call `call(i)` back to back for `seconds` (after a warm-up); latency of each."""
    latencies: list[float] = []
    errors = 0
    counter = 0
    recording = False
    stop_at = time.perf_counter() + warmup + seconds

    async def worker() -> None:
        nonlocal errors, counter
        while time.perf_counter() < stop_at:
            counter += 1
            started = time.perf_counter()
            try:
                ok = await call(counter)
            except Exception:
                ok = False
            if recording:
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

    async def start_recording() -> None:
        nonlocal recording
        await asyncio.sleep(warmup)
        recording = True

    began = time.perf_counter()
    await asyncio.gather(start_recording(), *(worker() for _ in range(concurrency)))
    measured = time.perf_counter() - began - warmup
    ordered = sorted(latencies)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else 0.0
    return Stats(
        name, len(ordered), errors, measured, statistics.median(ordered) * 1000 if ordered else 0.0, p99 * 1000
    )


def print_table(rows: list[Stats]) -> None:
    print(f"\n{'':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'errors':>7}")
    for s in rows:
        print(f"{s.name:34} {s.rps:9.1f} {s.p50_ms:8.2f} {s.p99_ms:8.2f} {s.requests:9d} {s.errors:7d}")


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    name: str,
    url: str,
    *,
    connections: int,
    seconds: float,
    lua: str | None = None,
    headers: dict[str, str] | None = None,
) -> Stats:
    """Load `url` with wrk (a C load generator: the client is never the bottleneck); its Stats."""
    args = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:g}s", "--latency"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua or "")
    if lua:
        args += ["-s", script.name]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    Path(script.name).unlink()
    return parse_wrk(name, out)


def parse_wrk(name: str, out: str) -> Stats:
    """wrk's report as Stats: answers that were not 2xx/3xx, and socket errors (timeouts
    included), count as errors; a run with no latency distribution (nothing answered) is
    reported, with wrk's output, instead of ending the benchmark."""
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non_2xx = int(bad.group(1)) if bad else 0
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    measured = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]
    dist = re.search(r"Latency Distribution\s+50%\s+(\S+)\s+75%\s+\S+\s+90%\s+\S+\s+99%\s+(\S+)", out)
    if dist is None:
        print(f"wrk gave no latency distribution for {name}:\n{out}", file=sys.stderr, flush=True)
        return Stats(name, total - non_2xx, non_2xx + socket_errors, measured, 0.0, 0.0)
    return Stats(name, total - non_2xx, non_2xx + socket_errors, measured, _ms(dist.group(1)), _ms(dist.group(2)))


def post_json_lua(body: str, *, unique_prompt: bool = False) -> str:
    """A wrk script that POSTs JSON; with `unique_prompt`, a different prompt on every request."""
    if not unique_prompt:
        return f'wrk.method = "POST"\nwrk.body = [[{body}]]\nwrk.headers["Content-Type"] = "application/json"\n'
    return (
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        f"  local body = string.gsub([[{body}]], 'PROMPT', 'question ' .. n .. ' ' .. math.random(1000000000))\n"
        "  local headers = {}\n"
        "  for k, v in pairs(wrk.headers) do headers[k] = v end\n"
        '  headers["Content-Type"] = "application/json"\n'
        '  return wrk.format("POST", nil, headers, body)\n'
        "end\n"
    )
