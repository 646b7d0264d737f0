"""A small OpenAI-compatible server on loopback: tests stand in for the provider at the HTTP level."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.devdb.cluster import free_port
from tests.support.threaded import serving_in_thread


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # None: a normal completion
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None  # sent as is (malformed answers)
    drop: bool = False  # start a 200 answer, then close the connection halfway through it
    # A request with `"stream": true` is answered as server-sent chat.completion.chunk events: these
    # pieces of text (None: the completion's text, in one piece), then a usage chunk when asked
    # (`stream_options.include_usage`), then `[DONE]`.
    chunks: list[str] | None = None
    chunk_delay: float = 0.0  # seconds before each piece
    break_after: int | None = None  # drop the connection after this many pieces (no usage, no [DONE])


def completion(
    text: str = "Paris.", model: str = "gpt-test", prompt_tokens: int = 7, completion_tokens: int = 2
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error_reply(
    status: int,
    code: object = None,
    *,
    type: object = None,
    message: str = "refused",
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> Reply:
    """An OpenAI-style error answer: `{"error": {"message", "type", "code"}}` (None fields left out)."""
    error: dict[str, object] = {"message": message}
    if type is not None:
        error["type"] = type
    if code is not None:
        error["code"] = code
    return Reply(status, {"error": error}, headers=dict(headers or {}), delay=delay)


class _Dropped(Response):
    """Promises 1000 bytes, sends a few, and ends: the server closes the connection mid-answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})


def chunk(text: str | None, *, model: str = "gpt-test", finish: str | None = None) -> dict[str, Any]:
    """One chat.completion.chunk: a piece of text (None: an empty delta, e.g. the last one)."""
    delta: dict[str, Any] = {} if text is None else {"content": text}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage_chunk(prompt_tokens: int, completion_tokens: int, model: str = "gpt-test") -> dict[str, Any]:
    """The last chunk of a stream asked for with `include_usage`: no choices, the usage."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class _Streamed(Response):
    """A 200 answer as server-sent events, piece by piece; with `break_after`, the connection is
    dropped after that many pieces. A client that goes away is recorded as a hang-up."""

    def __init__(self, server: FakeOpenAI, pieces: list[str], reply: Reply, include_usage: bool) -> None:
        super().__init__()
        self.server, self.pieces, self.reply, self.include_usage = server, pieces, reply, include_usage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def event(payload: object) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})

        for sent, piece in enumerate(self.pieces):
            if self.reply.break_after is not None and sent >= self.reply.break_after:
                return  # ends without completing the response: the server drops the connection
            deadline = time.monotonic() + self.reply.chunk_delay
            while time.monotonic() < deadline and not self.server._stopping:
                await asyncio.sleep(min(0.02, max(deadline - time.monotonic(), 0)))
                if await request.is_disconnected():
                    self.server.hang_ups.append(time.monotonic())
                    return
            await event(chunk(piece, model="gpt-test"))
        if self.reply.break_after is not None and len(self.pieces) >= self.reply.break_after:
            return
        await event(chunk(None, finish="stop"))
        if self.include_usage:
            await event(usage_chunk(7, len(self.pieces)))
        await event("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _QuietAboutDrops(logging.Filter):
    """uvicorn logs a dropped answer (`Reply(drop=True)`) at ERROR; here it is on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


# Chooses a reply from the request's JSON body (e.g. by its model or prompt); None: a normal completion.
Responder = Callable[[dict[str, Any]], Reply | None]


class FakeOpenAI:
    """Answers /v1/chat/completions from a queue of replies; when it is empty, from `responder`
    (when set), else with a normal completion."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.replies: deque[Reply] = deque()
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each request's headers (lower-case names)
        self.arrivals: list[float] = []  # each request's time.monotonic() on arrival
        self.hang_ups: list[float] = []  # time.monotonic() of each client that went away mid-reply
        self.port = free_port()
        self._stopping = False

    @property
    def count(self) -> int:
        """How many requests arrived."""
        return len(self.requests)

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests (the waits between attempts)."""
        return [later - earlier for earlier, later in zip(self.arrivals, self.arrivals[1:], strict=False)]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def _chat(self, request: Request) -> Response:
        self.arrivals.append(time.monotonic())
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        body = await request.json()
        self.requests.append(body)
        reply = self.replies.popleft() if self.replies else None
        if reply is None and self.responder is not None:
            reply = self.responder(body)
        reply = reply or Reply()
        deadline = time.monotonic() + reply.delay
        while time.monotonic() < deadline and not self._stopping:  # a hanging reply ends with the server
            await asyncio.sleep(min(0.02, deadline - time.monotonic()))
            if await request.is_disconnected():  # the caller gave up (or was cancelled)
                self.hang_ups.append(time.monotonic())
                return Response(status_code=499)
        if reply.drop:
            return _Dropped()
        if reply.raw is not None:
            return Response(reply.raw, status_code=reply.status, media_type="application/json", headers=reply.headers)
        if body.get("stream") and reply.status == 200:
            pieces = reply.chunks if reply.chunks is not None else [_text_of(reply.body)]
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return _Streamed(self, pieces, reply, include_usage)
        default = completion("".join(reply.chunks)) if reply.chunks is not None else completion()
        return JSONResponse(
            reply.body if reply.body is not None else default, status_code=reply.status, headers=reply.headers
        )

    @contextmanager
    def running(self) -> Iterator[FakeOpenAI]:
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        config = uvicorn.Config(
            # Hanging replies must not hold up the shutdown for their whole delay.
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        quiet = _QuietAboutDrops()
        logging.getLogger("uvicorn.error").addFilter(quiet)
        try:
            with serving_in_thread(config, "fake OpenAI server"):
                try:
                    yield self
                finally:
                    self._stopping = True
        finally:
            logging.getLogger("uvicorn.error").removeFilter(quiet)


def _text_of(body: Any) -> str:
    """The text of a completion body (a reply's `body`, or the default completion)."""
    answer = body if body is not None else completion()
    return str(answer["choices"][0]["message"]["content"])


class TcpFault:
    """A provider endpoint that fails below HTTP, on loopback.

    - `hang`: accepts the connection, reads the request, never answers;
    - `reset`: reads the request, then resets the connection (TCP RST);
    - `garbage`: reads the request, answers bytes that are not HTTP, and closes.
    """

    MODES = ("hang", "reset", "garbage")

    def __init__(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        self.mode = mode
        self.connections = 0  # how many connections were accepted
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> None:
        """Up to the end of the headers (the body does not matter), or 2 s."""
        seen = b""
        deadline = time.monotonic() + 2
        while b"\r\n\r\n" not in seen and time.monotonic() < deadline and not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            seen += chunk

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            try:
                self._read_request(conn)
                if self.mode == "garbage":
                    conn.sendall(b"\x00\x01\x02 this is not HTTP at all \xff\xfe\r\n\r\n")
                elif self.mode == "reset":
                    # Linger on, zero seconds: close() sends RST instead of FIN.
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:  # hang: hold the connection open, silent, until the client gives up or we stop
                    while not self._stop.is_set():
                        try:
                            if not conn.recv(65536):
                                return
                        except TimeoutError:
                            continue
            except OSError:
                return

    @contextmanager
    def running(self) -> Iterator[TcpFault]:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=5)
            self._listener.close()
