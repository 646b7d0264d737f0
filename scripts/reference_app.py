"""The independent reference for scripts/bench.py: the simplest thing that does the job of an
audited read, written as a user would write it, with none of this service's code.

A bare FastAPI endpoint, a 6-column table and a 3-column audit insert in one CTE, over an
asyncpg pool of 16 (the figure issue 17 measured against). The tables are made and filled by
`seed_reference` (scripts/benchseed.py) from the benchmark's own task ids, so both read the
same ids at the same table size.
    DATABASE_URL=... OWNER_ID=... uv run uvicorn reference_app:app --app-dir scripts --port 9201
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, HTTPException, Response

POOL_SIZE = 16
READ = """
WITH task AS (
    SELECT id, owner_id, status, model, output, created_at FROM ref_task WHERE id = $1 AND owner_id = $2
), audit AS (
    INSERT INTO ref_audit (task_id, actor_id) SELECT id, $2 FROM task
)
SELECT id, status, model, output, created_at FROM task
"""

pool: asyncpg.Pool | None = None
OWNER = uuid.UUID(os.environ["OWNER_ID"])


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=POOL_SIZE, max_size=POOL_SIZE)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/tasks/{task_id}")
async def read(task_id: uuid.UUID) -> Response:
    assert pool is not None
    async with pool.acquire() as conn:
        row = await conn.fetchrow(READ, task_id, OWNER)
    if row is None:
        raise HTTPException(404)
    return Response(json.dumps(dict(row), default=str), media_type="application/json")
