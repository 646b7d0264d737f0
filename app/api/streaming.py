"""A task's answer as server-sent events (`POST /tools/run_agent_task?stream=true`).

Events, numbered from 1 (`id:`), each `data:` one line of JSON:

- `task`: the task as it starts (`AgentResult`: its `task_id`, `status: running`);
- `delta`: `{"text": ...}`, a piece of the answer as the provider sent it; the pieces joined
  are exactly the stored `output`;
- `result`: the whole `AgentResult`, as the answer without `stream` would be: the last event;
- `error`: `{"code", "message"}`, the failed or cancelled task's error: the last event instead.

A comment (`: keep-alive`) goes out every `STREAM_KEEPALIVE_SECONDS` so that proxies keep a
quiet connection open; `X-Accel-Buffering: no` asks nginx not to buffer the answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from itertools import count
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent

from app.service.streaming import Delta, Done, Failed, TaskStream

MEDIA_TYPE = "text/event-stream"
KEEPALIVE_COMMENT = "keep-alive"


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "properties": {
            "event": {"const": name},
            "data": {"contentMediaType": "application/json", "contentSchema": data},
        }
    }


# One event of the stream, for the OpenAPI document (before 3.2, `schema` describes each event).
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "description": "1, 2, 3, ... in order"},
        "event": {"type": "string", "enum": ["task", "delta", "result", "error"]},
        "data": {"type": "string", "description": "one line of JSON"},
    },
    "oneOf": [
        _event("task", {"$ref": "#/components/schemas/AgentResult"}),
        _event(
            "delta",
            {
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"type": "string"}},
                "additionalProperties": False,
            },
        ),
        _event("result", {"$ref": "#/components/schemas/AgentResult"}),
        _event("error", {"$ref": "#/components/schemas/TaskError"}),
    ],
}


def _keepalive() -> ServerSentEvent:
    return ServerSentEvent(comment=KEEPALIVE_COMMENT)


async def _events(stream: TaskStream) -> AsyncIterator[ServerSentEvent]:
    ids = count(1)
    yield ServerSentEvent(data=stream.task.model_dump_json(), event="task", id=str(next(ids)))
    async for item in stream.events:
        match item:
            case Delta(text=text):
                data = json.dumps({"text": text}, ensure_ascii=False)
                yield ServerSentEvent(data=data, event="delta", id=str(next(ids)))
            case Done(result=result):
                yield ServerSentEvent(data=result.model_dump_json(), event="result", id=str(next(ids)))
            case Failed(code=code, message=message):
                data = json.dumps({"code": code, "message": message}, ensure_ascii=False)
                yield ServerSentEvent(data=data, event="error", id=str(next(ids)))


def event_stream(stream: TaskStream) -> EventSourceResponse:
    """The SSE answer. The caller going away ends only this response: the task runs on and is stored."""
    headers = {"X-Accel-Buffering": "no", "Cache-Control": "no-store"}
    if stream.replayed:
        headers["Idempotent-Replayed"] = "true"
    return EventSourceResponse(
        _events(stream),
        headers=headers,
        ping=stream.keepalive_seconds,
        ping_message_factory=_keepalive,
        sep="\n",
    )
