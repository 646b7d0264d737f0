"""The app in process: its lifespan run in a task of its own, callers holding keys, rows counted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from app.domain import Role
from app.main import create_app
from tests.support.settings import make_settings


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    """Run the app's lifespan in one task of its own (anyio scopes must exit where they entered)."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises the start-up error
    try:
        yield app
    finally:
        stop.set()
        await task


@asynccontextmanager
async def replica(database_url: str, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """One service instance on the shared test database (two of them act as two replicas)."""
    async with running(create_app(make_settings(database_url, **overrides))) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as http:
            yield app, http


@dataclass(frozen=True)
class Caller:
    """An API key as a test holds it."""

    key_id: uuid.UUID
    key: str
    role: Role
    webhook_secret: str | None = None  # `whsec_...`, shown once when the key was made

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


MakeCaller = Callable[[Role], Awaitable[Caller]]


async def key(app: FastAPI, role: Role = Role.CLIENT, **limits: Any) -> Caller:
    """A new key of `role` (with these per-key limits and data policy, if any) on the running app."""
    record, plain, secret = await app.state.components.keys.create(f"k-{uuid.uuid4().hex[:6]}", role, **limits)
    return Caller(record.id, plain, role, secret)


async def count_rows(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
