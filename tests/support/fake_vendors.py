"""One loopback server that speaks each native vendor's wire format: tests stand in for Anthropic,
Gemini, Groq, Mistral, Cohere and Bedrock at the HTTP level (their SDKs, pydantic-ai and our code run
unchanged against it).

| vendor | route | stream |
| --- | --- | --- |
| anthropic | `POST /v1/messages` | server-sent events (`"stream": true`) |
| google | `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse` | server-sent events |
| groq | `POST /openai/v1/chat/completions` | server-sent chunks |
| mistral | `POST /v1/chat/completions` | server-sent chunks |
| cohere | `POST /v2/chat` | server-sent events (`"stream": true`) |
| bedrock | `POST /model/{id}/converse`, `/model/{id}/converse-stream` | AWS event stream (binary) |

For the Anthropic Messages API the `fakellm` package is the real peer (tests/support/fakellm.py);
this one adds what fakellm cannot: queued errors with headers, failures mid-stream, every vendor.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.devdb.cluster import free_port
from tests.support.threaded import serving_in_thread

VENDORS = ("anthropic", "google", "groq", "mistral", "cohere", "bedrock")
MODELS = {
    "anthropic": "claude-sonnet-4-5",
    "google": "gemini-2.5-flash",
    "groq": "llama-3.3-70b-versatile",
    "mistral": "mistral-large-latest",
    "cohere": "command-r-plus",
    "bedrock": "anthropic.claude-3-5-sonnet-20240620-v1:0",
}


def endpoint(kind: str, base_url: str) -> dict[str, Any]:
    """A `PROVIDER_ENDPOINTS` entry named after its kind with a `-test` suffix."""
    entry: dict[str, Any] = {"name": f"{kind}-test", "kind": kind, "base_url": base_url}
    if kind == "bedrock":
        entry["region"] = "us-east-1"
    else:
        entry["api_key_env"] = "NATIVE_TEST_KEY"
    return entry


# The gRPC status names the Gemini API puts into its errors, by HTTP status.
GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass
class VendorReply:
    """One answer: a success (`pieces` of text, in order) or an error (`status` >= 400)."""

    status: int = 200
    pieces: list[str] = field(default_factory=lambda: ["Paris", "."])
    prompt_tokens: int = 7
    completion_tokens: int = 2
    code: str | None = None  # the vendor's error code / type
    message: str = "refused"
    headers: dict[str, str] = field(default_factory=dict)
    break_after: int | None = None  # a stream: drop the connection after this many pieces
    piece_delay: float = 0.0  # a stream: seconds before each piece


def _sse(payload: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


def _event_stream_message(event_type: str, payload: dict[str, Any]) -> bytes:
    """One message of the AWS event stream encoding (prelude, string headers, payload, CRCs)."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")):
        encoded = value.encode()
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(encoded)) + encoded
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


class FakeVendors:
    """Answers every vendor's route from one queue of replies (a normal answer when it is empty)."""

    def __init__(self) -> None:
        self.replies: deque[VendorReply] = deque()
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (vendor, JSON body)
        self.headers: list[dict[str, str]] = []
        self.hang_ups = 0  # streams whose client went away before their end
        self.port = free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        return len(self.requests)

    def enqueue(self, *replies: VendorReply) -> None:
        self.replies.extend(replies)

    # -- routes -------------------------------------------------------------------------------

    async def _handle(self, request: Request, vendor: str, model: str, stream: bool) -> Response:
        body = await request.json()
        self.requests.append((vendor, body))
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        reply = self.replies.popleft() if self.replies else VendorReply()
        if reply.status >= 400:
            return self._error(vendor, reply)
        if stream or body.get("stream"):
            media = "application/vnd.amazon.eventstream" if vendor == "bedrock" else "text/event-stream"
            return StreamingResponse(self._watched(self._stream(vendor, model, reply)), media_type=media)
        return JSONResponse(self._whole(vendor, model, reply))

    async def _anthropic(self, request: Request) -> Response:
        return await self._handle(request, "anthropic", "", False)

    async def _google(self, request: Request) -> Response:
        model, _, method = request.path_params["rest"].partition(":")
        return await self._handle(request, "google", model, method == "streamGenerateContent")

    async def _groq(self, request: Request) -> Response:
        return await self._handle(request, "groq", "", False)

    async def _mistral(self, request: Request) -> Response:
        return await self._handle(request, "mistral", "", False)

    async def _cohere(self, request: Request) -> Response:
        return await self._handle(request, "cohere", "", False)

    async def _bedrock(self, request: Request) -> Response:
        return await self._handle(
            request, "bedrock", request.path_params["model"], request.url.path.endswith("-stream")
        )

    # -- answers ------------------------------------------------------------------------------

    def _error(self, vendor: str, reply: VendorReply) -> Response:
        code, message = reply.code, reply.message
        headers = dict(reply.headers)
        body: dict[str, Any]
        if vendor == "anthropic":
            body = {"type": "error", "error": {"type": code or "api_error", "message": message}}
        elif vendor == "google":
            error: dict[str, Any] = {"code": reply.status, "message": message}
            if (status := code or GOOGLE_STATUSES.get(reply.status)) is not None:
                error["status"] = status
            body = {"error": error}
        elif vendor == "mistral":
            body = {"object": "error", "message": message, "type": code or "api_error", "param": None, "code": code}
        elif vendor == "cohere":
            body = {"message": message}
        elif vendor == "bedrock":
            headers["x-amzn-ErrorType"] = code or "InternalServerException"
            body = {"message": message}
        else:
            body = {"error": {"message": message, "type": code or "api_error", "code": code}}
        return JSONResponse(body, status_code=reply.status, headers=headers)

    def _whole(self, vendor: str, model: str, reply: VendorReply) -> dict[str, Any]:
        text, p, c = "".join(reply.pieces), reply.prompt_tokens, reply.completion_tokens
        if vendor == "anthropic":
            return {
                "id": "msg_test",
                "type": "message",
                "role": "assistant",
                "model": "claude-test",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": p, "output_tokens": c},
            }
        if vendor == "google":
            return {
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c},
                "modelVersion": model,
            }
        if vendor == "cohere":
            return {
                "id": "co-test",
                "finish_reason": "COMPLETE",
                "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
                "usage": {
                    "billed_units": {"input_tokens": p, "output_tokens": c},
                    "tokens": {"input_tokens": p, "output_tokens": c},
                },
            }
        if vendor == "bedrock":
            return {
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": p, "outputTokens": c, "totalTokens": p + c},
                "metrics": {"latencyMs": 1},
            }
        return {  # groq and mistral: the chat completion shape
            "id": "chat-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "chat-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        }

    async def _watched(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The stream's bytes; a client that hangs up before the end is counted."""
        try:
            async for data in events:
                yield data
        except (asyncio.CancelledError, GeneratorExit):
            self.hang_ups += 1
            raise

    async def _stream(self, vendor: str, model: str, reply: VendorReply) -> AsyncIterator[bytes]:
        p, c = reply.prompt_tokens, reply.completion_tokens
        if vendor == "anthropic":
            start = {"id": "msg_test", "type": "message", "role": "assistant", "model": "claude-test", "content": []}
            start |= {"stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": p, "output_tokens": 0}}
            yield _sse({"type": "message_start", "message": start}, "message_start")
            block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            yield _sse(block, "content_block_start")
        elif vendor == "bedrock":
            yield _event_stream_message("messageStart", {"role": "assistant"})
        elif vendor == "cohere":
            yield _sse({"type": "message-start", "id": "co-test", "delta": {"message": {"role": "assistant"}}})
            yield _sse({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text"}}}})
        for sent, piece in enumerate(reply.pieces):
            if reply.break_after is not None and sent >= reply.break_after:
                raise ConnectionError("the fake vendor drops the connection mid-answer")
            if reply.piece_delay:
                await asyncio.sleep(reply.piece_delay)
            yield self._piece(vendor, model, piece)
        if vendor == "anthropic":
            yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            end = {"stop_reason": "end_turn", "stop_sequence": None}
            yield _sse({"type": "message_delta", "delta": end, "usage": {"output_tokens": c}}, "message_delta")
            yield _sse({"type": "message_stop"}, "message_stop")
        elif vendor == "google":
            usage = {"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c}
            last = {"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}
            yield _sse({"candidates": [last], "usageMetadata": usage, "modelVersion": model})
        elif vendor == "cohere":
            yield _sse({"type": "content-end", "index": 0})
            usage = {"billed_units": {"input_tokens": p, "output_tokens": c}, "tokens": {"input_tokens": p}}
            usage["tokens"]["output_tokens"] = c
            yield _sse({"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": usage}})
        elif vendor == "bedrock":
            yield _event_stream_message("contentBlockStop", {"contentBlockIndex": 0})
            yield _event_stream_message("messageStop", {"stopReason": "end_turn"})
            usage = {"inputTokens": p, "outputTokens": c, "totalTokens": p + c}
            yield _event_stream_message("metadata", {"usage": usage, "metrics": {"latencyMs": 1}})
        else:  # groq, mistral
            last = {"id": "chat-test", "object": "chat.completion.chunk", "created": 0, "model": "chat-test"}
            last["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
            usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
            yield _sse(last | {"usage": usage, "x_groq": {"id": "x", "usage": usage}})
            yield _sse("[DONE]")

    def _piece(self, vendor: str, model: str, piece: str) -> bytes:
        if vendor == "anthropic":
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
            return _sse(delta, "content_block_delta")
        if vendor == "google":
            return _sse(
                {"candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}}], "modelVersion": model}
            )
        if vendor == "cohere":
            return _sse({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": piece}}}})
        if vendor == "bedrock":
            return _event_stream_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
        chunk = {"id": "chat-test", "object": "chat.completion.chunk", "created": 0, "model": "chat-test"}
        chunk["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}]
        return _sse(chunk)

    @contextmanager
    def running(self) -> Iterator[FakeVendors]:
        routes = [
            Route("/v1/messages", self._anthropic, methods=["POST"]),
            Route("/v1beta/models/{rest:path}", self._google, methods=["POST"]),
            Route("/openai/v1/chat/completions", self._groq, methods=["POST"]),
            Route("/v1/chat/completions", self._mistral, methods=["POST"]),
            Route("/v2/chat", self._cohere, methods=["POST"]),
            Route("/model/{model}/converse", self._bedrock, methods=["POST"]),
            Route("/model/{model}/converse-stream", self._bedrock, methods=["POST"]),
        ]
        config = uvicorn.Config(
            Starlette(routes=routes),
            host="127.0.0.1",
            port=self.port,
            log_level="critical",  # a dropped stream (break_after) is logged as an error: on purpose here
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        with serving_in_thread(config, "fake vendor server"):
            yield self
