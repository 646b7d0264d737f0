"""A local webhook receiver: a real HTTP server that records what it is sent and checks signatures
with the `standardwebhooks` library, as a user's receiver would."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.devdb.cluster import free_port
from tests.support.threaded import serving_in_thread


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    def verify(self, secret: str) -> dict[str, Any]:
        """The event, if the signature checks out with `secret` (else WebhookVerificationError)."""
        payload: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return payload

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


class Receiver:
    """POST /hook: answers each request with the next of `statuses` (then 204), records it."""

    def __init__(self, statuses: tuple[int, ...] = (), port: int | None = None) -> None:
        self.port = port or free_port()
        self._statuses = list(statuses)
        self._lock = threading.Lock()
        self.received: list[Received] = []
        self.redirect_to: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.received.append(Received(dict(request.headers), body))
            status = self._statuses.pop(0) if self._statuses else 204
        if self.redirect_to is not None:
            return Response(status_code=307, headers={"location": self.redirect_to})
        return Response(status_code=status)

    async def wait_for(self, count: int, timeout: float = 15) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} webhooks arrived"
            await asyncio.sleep(0.02)
        return list(self.received)

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        app = Starlette(
            routes=[Route("/hook", self._hook, methods=["POST"]), Route("/other", self._hook, methods=["POST"])]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        with serving_in_thread(config, "webhook receiver"):
            yield self
