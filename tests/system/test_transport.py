"""The HTTP transport of a real `agent-service serve`, spoken to over raw sockets where a client
library would refuse to misbehave: oversized and too many headers, an endless request line,
header and body trickles, fifty slow connections that never finish their headers, and a
prompt in the query string, which never reaches the access log.

One server for the whole module, with short limits and timeouts so that each case takes
seconds; every bound below is generous, the exact speed is scripts/bench_servers.py's business.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastmcp import Client

from tests.support.postgres import admin_execute, run_sync, url_for
from tests.support.service_process import ServiceProcess, cli, environment, serving
from tests.support.settings import TEST_HASH_KEY, TEST_SIGNING_KEY

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 2.0
MAX_HEADER_BYTES = 16_384
MAX_HEADERS = 60
MAX_REQUEST_LINE = 4_096
KEY = re.compile(r"ask_[A-Za-z0-9_\-]{43}")


@dataclass
class Served:
    service: ServiceProcess
    key: str

    @property
    def port(self) -> int:
        return self.service.port


@pytest.fixture(scope="module")
def served(pg_server: str, template_database: str) -> Iterator[Served]:
    """One `agent-service serve` on a database of its own, with a client key."""
    name = f"agent_transport_{uuid.uuid4().hex[:12]}"
    run_sync(admin_execute(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    env = environment(
        DATABASE_URL=url_for(pg_server, name),
        PROMPT_HASH_KEY=TEST_HASH_KEY,
        AUDIT_SIGNING_KEY=TEST_SIGNING_KEY,
        AUTH_CACHE_SECONDS="0",
        HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        HTTP_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        HTTP_MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
        HTTP_MAX_HEADERS=str(MAX_HEADERS),
        HTTP_MAX_REQUEST_LINE_BYTES=str(MAX_REQUEST_LINE),
    )
    try:
        key = KEY.search(cli("keys", "create", "transport", env=env).stdout).group(0)  # type: ignore[union-attr]
        with serving(env) as service:
            yield Served(service, key)
    finally:
        run_sync(admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- raw HTTP ---------------------------------------------------------------------------------


def _connect(port: int, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    return sock


def _status(answer: bytes) -> int | None:
    """The status of the first answer in `answer`; None when the server closed without one."""
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(match.group(1)) if match else None


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (or stays silent for the socket's timeout)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def exchange(port: int, request: bytes) -> int | None:
    """Send `request` whole (as far as the server lets us) and return the status it answered."""
    with _connect(port) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end: what it answered is still readable
        return _status(_read_all(sock))


def _request(path: str = "/healthz", headers: list[str] | None = None, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(headers or []), "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


def _trickle(sock: socket.socket, pieces: Iterator[bytes], every: float, give_up_after: float) -> tuple[float, bytes]:
    """Send one piece every `every` s until the server closes or answers; (seconds, its answer)."""
    sock.settimeout(every)
    started = time.monotonic()
    while time.monotonic() - started < give_up_after:
        try:
            sock.sendall(next(pieces))
            answer = sock.recv(65536)
        except TimeoutError:
            continue  # nothing from the server yet: send the next piece
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started, b""
        return time.monotonic() - started, answer  # an answer, or b"" for a close
    return time.monotonic() - started, b"(still open)"


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]


# -- limits -----------------------------------------------------------------------------------


def test_an_oversized_header_is_refused_and_a_large_one_under_the_limit_is_served(served):
    assert exchange(served.port, _request(headers=[f"X-Big: {'a' * 8 * 1024 * 1024}"])) in (431, None)
    assert exchange(served.port, _request(headers=[f"X-Big: {'a' * (MAX_HEADER_BYTES + 1)}"])) in (431, None)

    assert exchange(served.port, _request(headers=[f"X-Big: {'a' * (MAX_HEADER_BYTES // 2)}"])) == 200


def test_too_many_headers_are_refused_and_a_few_dozen_are_served(served):
    many = [f"X-H{i}: v" for i in range(50_000)]
    assert exchange(served.port, _request(headers=many)) in (431, None)
    assert exchange(served.port, _request(headers=many[: MAX_HEADERS + 1])) in (431, None)

    assert exchange(served.port, _request(headers=many[: MAX_HEADERS - 10])) == 200


def test_a_request_line_over_the_limit_is_refused(served):
    assert exchange(served.port, _request(path=f"/healthz?q={'a' * 1024 * 1024}")) in (414, 431, None)
    assert exchange(served.port, _request(path=f"/healthz/{'a' * MAX_REQUEST_LINE}")) in (414, 431, None)

    assert exchange(served.port, _request(path=f"/no-such-page/{'a' * (MAX_REQUEST_LINE // 2)}")) == 404


# -- timeouts ---------------------------------------------------------------------------------


def test_a_connection_trickling_header_lines_is_closed_within_the_header_timeout(served):
    def lines() -> Iterator[bytes]:
        yield b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for i in range(10_000):
            yield f"X-Slow-{i}: a\r\n".encode()

    with _connect(served.port) as sock:
        seconds, answer = _trickle(sock, lines(), every=0.3, give_up_after=20)

    assert _status(answer) in (408, None), answer[:200]
    assert seconds < HEADER_TIMEOUT + 3


def test_a_connection_that_sends_nothing_is_closed_within_the_header_timeout(served):
    with _connect(served.port) as sock:
        started = time.monotonic()
        answer = _read_all(sock)
        seconds = time.monotonic() - started

    assert _status(answer) in (408, None), answer[:200]
    assert seconds < HEADER_TIMEOUT + 3


def test_a_body_trickle_is_cut_within_the_body_timeout_even_without_a_key(served):
    head = (
        b"POST /tools/run_agent_task HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )

    def body() -> Iterator[bytes]:
        yield head
        while True:
            yield b"a" * 10

    with _connect(served.port) as sock:
        seconds, answer = _trickle(sock, body(), every=0.5, give_up_after=30)

    assert _status(answer) in (408, None), answer[:200]
    assert seconds < BODY_TIMEOUT + 4


def test_fifty_slow_unauthenticated_connections_keep_the_servers_memory_bounded(served):
    """Each of 50 connections tries to send 4 MB of headers that never end, then holds on."""
    pid = served.service.process.pid  # type: ignore[union-attr]
    before = _rss_kib(pid)
    chunk = b"X-Fill: " + b"a" * 65_536  # no line end: one header that never finishes
    peak = before

    def attack() -> socket.socket:
        sock = _connect(served.port, timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for _ in range(64):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server gave up on it: what we want
        return sock

    with ThreadPoolExecutor(50) as pool:
        sockets = list(pool.map(lambda _: attack(), range(50)))
    try:
        for _ in range(5):
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.1)
        assert httpx.get(f"{served.service.base}/healthz", timeout=5).status_code == 200
    finally:
        for sock in sockets:
            sock.close()

    assert peak - before < 40 * 1024, f"RSS grew from {before} KiB to {peak} KiB"


# -- what still works -------------------------------------------------------------------------


async def test_normal_requests_and_mcp_still_work_under_the_limits(served):
    auth = {"Authorization": f"Bearer {served.key}"}
    async with httpx.AsyncClient(base_url=served.service.base, timeout=10) as http:
        for _ in range(3):  # one kept-alive connection, several requests
            ran = await http.post("/tools/run_agent_task", json={"prompt": "hello"}, headers=auth)
            assert ran.status_code == 200
        large = await http.post("/tools/run_agent_task", json={"prompt": "x" * 30_000}, headers=auth)
        assert large.status_code == 200
        assert (await http.get("/resources/agent_results", headers=auth)).status_code == 200

    async with Client(f"{served.service.base}/mcp", auth=served.key) as mcp:
        result = await mcp.call_tool("run_agent_task", {"prompt": "hello"})
        assert result.structured_content["status"] == "succeeded"


# -- privacy ----------------------------------------------------------------------------------


async def test_a_prompt_in_the_query_string_never_reaches_the_access_log(served):
    marker = f"QUERYMARK{uuid.uuid4().hex}"
    auth = {"Authorization": f"Bearer {served.key}"}
    async with httpx.AsyncClient(base_url=served.service.base, timeout=10) as http:
        answers = [
            await http.post(f"/tools/run_agent_task?prompt={marker}", json={"prompt": "hi"}, headers=auth),
            await http.get(f"/resources/agent_results?limit=5&{marker}=1", headers=auth),
            await http.get(f"/healthz?{marker}"),
            await http.post(f"/mcp?prompt={marker}", json={}, headers=auth),
            await http.get(f"/no-such-page?prompt={marker}"),
        ]
    assert [a.status_code for a in answers] == [422, 422, 422, 400, 404]  # unknown query parameters; {} is no JSON-RPC

    output = served.service.output()
    assert marker not in output
    assert '"POST /tools/run_agent_task HTTP/1.1" 422' in output
    assert '"GET /resources/agent_results HTTP/1.1" 422' in output
    assert '"GET /no-such-page HTTP/1.1" 404' in output
    assert '"POST /mcp HTTP/1.1"' in output
