"""The framework's limit, for scripts/bench.py: a bare FastAPI endpoint running our audited-read SQL.

No authentication, no validation, no service layer: the same statement through an asyncpg pool.
    DATABASE_URL=... OWNER_ID=... uv run uvicorn bare_app:app --app-dir scripts --port 9200
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from benchlib import audited_read_args
from fastapi import FastAPI, Response

from app.storage.audit import READ_TASK_AUDITED
from app.storage.database import init_connection

pool: asyncpg.Pool | None = None
OWNER = uuid.UUID(os.environ["OWNER_ID"])


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"], min_size=4, max_size=int(os.environ.get("POOL_SIZE", "20")), init=init_connection
    )
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/read/{task_id}")
async def read(task_id: uuid.UUID) -> Response:
    assert pool is not None
    async with pool.acquire() as conn:
        row = await conn.fetchrow(READ_TASK_AUDITED.sql, *audited_read_args(task_id, OWNER))
    return Response(json.dumps(dict(row), default=str), media_type="application/json")
