"""A zero-latency OpenAI-compatible server for benchmarks: answers every chat completion at once.

uv run python scripts/fake_llm_server.py --port 9100
"""

from __future__ import annotations

import argparse
import json
import time

import uvicorn

_BODY_TEMPLATE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "model": "bench",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "A short, fixed answer."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    """Pure ASGI: the least work per request, so the server is never the bottleneck."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = json.dumps(_BODY_TEMPLATE | {"created": int(time.time())}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
