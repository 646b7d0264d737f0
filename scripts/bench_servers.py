"""Measure the HTTP servers the service could run on: their limits first, then their speed.

    uv run --with granian==2.8.7 python scripts/bench_servers.py [--seconds 5] [--repeat 5] \
                                                                 [--concurrency 32] [--out PATH]

(Without `--with granian` it measures the uvicorn candidates only.) Loopback only; bounded
in time; stops everything it starts. One throwaway PostgreSQL, one task to read, and the
service's app under every candidate at once, each on its own port:

  httptools  uvicorn with httptools, as `serve` ran before issue 12 (the baseline)
  guarded    the same with app/transport.py's protocol, as `agent-service serve` runs now
  h11        uvicorn with h11 and `h11_max_incomplete_event_size` (its one limit)
  granian    granian 2.8 (hyper): its header buffer and header read timeout

Limits: what each does with an 8 MB header, 50,000 headers and a 1 MB request target;
how long it holds a connection trickling a header line, or 10 bytes of body, every 0.5 s;
how much its memory grows under 20 connections each sending 4 MB of headers that never end.
Speed: wrk on `GET /healthz` (the server's own cost dominates) and on the audited read
`GET /resources/get_agent_result/{id}` (the service's hot path), in interleaved rounds, with
the server's CPU time per request; ratios against the baseline from the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from benchlib import BIN, Stats, create_key, process, service_env, throwaway_postgres, wrk

from app.devdb.cluster import free_port

PROBE_TIMEOUT = 5  # the header and body timeouts given to the candidates that have them
HOLD_CAP = 12.0  # a trickle still open after this long counts as held
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Candidate:
    name: str
    port: int
    args: list[str]
    env: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def candidates(env: dict[str, str]) -> list[Candidate]:
    """Every candidate this machine has, each on a free port; the uvicorn ones differ only in
    their HTTP protocol (they are started by this script's `--serve`)."""
    here = [str(BIN / "python"), __file__, "--serve"]
    guarded_env = env | {
        "HTTP_HEADER_TIMEOUT_SECONDS": str(PROBE_TIMEOUT),
        "HTTP_BODY_TIMEOUT_SECONDS": str(PROBE_TIMEOUT),
    }
    found = []
    for name, its_env in (("httptools", env), ("guarded", guarded_env), ("h11", env)):
        port = free_port()
        found.append(Candidate(name, port, [*here, name, "--port", str(port)], its_env))
    if importlib.util.find_spec("granian") is not None:
        port = free_port()
        granian = [
            str(BIN / "granian"),
            "--interface",
            "asgi",
            "--factory",
            "app.main:create_app",
            "--port",
            str(port),
            "--http",
            "1",
            "--log-level",
            "warning",
            "--http1-header-read-timeout",
            str(PROBE_TIMEOUT * 1000),
        ]
        found.append(Candidate("granian", port, granian, env))
    return found


def serve_uvicorn(name: str, port: int) -> None:
    """The app under uvicorn with the named protocol, as `agent-service serve` runs it otherwise."""
    import uvicorn

    from app import transport

    protocol: dict[str, Any] = {
        "httptools": {"http": "httptools"},
        "guarded": {"http": transport.GuardedHttpToolsProtocol, "log_config": transport.logging_config()},
        "h11": {"http": "h11", "h11_max_incomplete_event_size": 65_536},
    }[name]
    uvicorn.run(
        "app.main:create_app", factory=True, port=port, ws="none", log_level="warning", access_log=False, **protocol
    )


# -- the process tree: CPU and memory ------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (granian's workers are child processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def cpu_seconds(pid: int) -> float:
    total = 0
    for each in _tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_mib(pid: int) -> float:
    total = 0
    for each in _tree(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        if match := re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE):
            total += int(match.group(1))
    return total / 1024


# -- the limits ----------------------------------------------------------------------------------


def _exchange(port: int, request: bytes, timeout: float = 30) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = sock.recv(200)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return match.group(1).decode() if match else "closed"


def _head(headers: list[bytes], target: bytes = b"/healthz") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(headers) + b"Connection: close\r\n\r\n"


def _trickle(port: int, first: bytes, piece: Callable[[int], bytes]) -> str:
    """Seconds until the server ends a connection sending `piece(i)` every 0.5 s (or 'held')."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        started = time.monotonic()
        sock.sendall(first)
        i = 0
        while time.monotonic() - started < HOLD_CAP:
            try:
                sock.sendall(piece(i))
                sock.recv(200)  # an answer, or b"" for a close: the server ended it
                return f"{time.monotonic() - started:.1f} s"
            except TimeoutError:
                i += 1
            except (BrokenPipeError, ConnectionResetError):
                return f"{time.monotonic() - started:.1f} s"
    return f"held {HOLD_CAP:g} s"


def _memory(candidate: Candidate, pid: int, connections: int = 20, megabytes: int = 4) -> str:
    before = rss_mib(pid)
    chunk = b"X-Fill: " + b"a" * 65_536

    def attack(held: list[socket.socket]) -> None:
        sock = socket.create_connection(("127.0.0.1", candidate.port), timeout=5)
        held.append(sock)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for _ in range(megabytes * 16):
                sock.sendall(chunk)
        except OSError:
            pass

    held: list[socket.socket] = []
    threads = [threading.Thread(target=attack, args=(held,)) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.5)
    peak = rss_mib(pid)
    for sock in held:
        sock.close()
    return f"+{peak - before:.0f} MiB"


def limits(candidate: Candidate, pid: int) -> dict[str, str]:
    port = candidate.port
    found = {
        "8 MB header": _exchange(port, _head([b"X-Big: " + b"a" * 8 * 1024 * 1024 + b"\r\n"])),
        "50,000 headers": _exchange(port, _head([b"X-H%d: v\r\n" % i for i in range(50_000)])),
        "1 MB target": _exchange(port, _head([], target=b"/healthz?q=" + b"a" * 1024 * 1024)),
    }
    trickles: dict[str, str] = {}
    body_head = (
        b"POST /tools/run_agent_task HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    probes = {
        "header trickle": lambda: _trickle(port, b"GET /healthz HTTP/1.1\r\n", lambda i: b"X-Slow-%d: a\r\n" % i),
        "body trickle": lambda: _trickle(port, body_head, lambda i: b"a" * 10),
    }
    threads = [threading.Thread(target=lambda k=k, f=f: trickles.__setitem__(k, f())) for k, f in probes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found |= trickles
    found["memory, 20 x 4 MB unfinished headers"] = _memory(candidate, pid)
    return found


# -- the speed -----------------------------------------------------------------------------------


def median_stats(runs: list[Stats]) -> Stats:
    """The run with the median throughput (its latencies belong to it)."""
    return sorted(runs, key=lambda s: s.rps)[len(runs) // 2]


def measure(name: str, pid: int, run: Callable[[], Stats]) -> tuple[Stats, float]:
    """A wrk run and the server's CPU milliseconds per request during it."""
    before = cpu_seconds(pid)
    stats = run()
    spent = cpu_seconds(pid) - before
    return stats, (spent * 1000 / stats.requests if stats.requests else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench_servers.json"))
    parser.add_argument("--serve", choices=["httptools", "guarded", "h11"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_uvicorn(args.serve, args.port)
        return

    with throwaway_postgres() as url, ExitStack() as stack:
        env = service_env(url)
        key = create_key(env)
        auth = {"Authorization": f"Bearer {key}"}
        found = candidates(env)
        pids = {}
        for candidate in found:
            proc = stack.enter_context(process(candidate.args, candidate.env, f"{candidate.base}/healthz"))
            pids[candidate.name] = proc.pid
        task = httpx.post(f"{found[0].base}/tools/run_agent_task", json={"prompt": "hi"}, headers=auth, timeout=10)
        read_path = f"/resources/get_agent_result/{task.json()['task_id']}"

        report: dict[str, Any] = {"limits": {}, "speed": {}, "ratios": {}}
        for candidate in found:
            report["limits"][candidate.name] = limits(candidate, pids[candidate.name])
            print(candidate.name, report["limits"][candidate.name], flush=True)

        cases: dict[str, Callable[[Candidate], Stats]] = {
            "healthz": lambda c: wrk(
                f"{c.name} healthz", f"{c.base}/healthz", connections=args.concurrency, seconds=args.seconds
            ),
            "read": lambda c: wrk(
                f"{c.name} read",
                f"{c.base}{read_path}",
                connections=args.concurrency,
                seconds=args.seconds,
                headers=auth,
            ),
        }
        runs: dict[tuple[str, str], list[tuple[Stats, float]]] = {}
        for candidate in found:  # warm-up
            wrk("warm-up", f"{candidate.base}{read_path}", connections=args.concurrency, seconds=2, headers=auth)
        for _ in range(args.repeat):
            for case, run in cases.items():
                for candidate in found:
                    result = measure(candidate.name, pids[candidate.name], lambda c=candidate, r=run: r(c))
                    runs.setdefault((candidate.name, case), []).append(result)
        _report_speed(report, runs, [c.name for c in found], list(cases))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.out}")


def _report_speed(
    report: dict[str, Any], runs: dict[tuple[str, str], list[tuple[Stats, float]]], names: list[str], cases: list[str]
) -> None:
    print(f"\n{'':20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} {'errors':>7}")
    for case in cases:
        for name in names:
            stats = median_stats([s for s, _ in runs[(name, case)]])
            cpu = sorted(c for _, c in runs[(name, case)])[len(runs[(name, case)]) // 2]
            report["speed"][f"{name} {case}"] = stats.as_dict() | {"cpu_ms_per_request": round(cpu, 3)}
            print(
                f"{name + ' ' + case:20} {stats.rps:9.1f} {stats.p50_ms:8.2f} {stats.p99_ms:8.2f} {cpu:11.3f} "
                f"{stats.errors:7d}"
            )
    print("\nratios against httptools (same run): req/s, CPU per request")
    for case in cases:
        base = report["speed"][f"httptools {case}"]
        for name in names[1:]:
            mine = report["speed"][f"{name} {case}"]
            ratios = {
                "rps": round(mine["rps"] / base["rps"], 3) if base["rps"] else None,
                "cpu_per_request": round(mine["cpu_ms_per_request"] / base["cpu_ms_per_request"], 3)
                if base["cpu_ms_per_request"]
                else None,
            }
            report["ratios"][f"{name}/httptools {case}"] = ratios
            print(f"  {name}/httptools {case:8} {ratios['rps']!s:>7} {ratios['cpu_per_request']!s:>7}")


if __name__ == "__main__":
    main()
