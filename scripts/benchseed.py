"""The rows the benchmarks read: tasks seeded as the schema stores them (sealed at rest since
issue 13, plain before it, so one script seeds both the service and a baseline checkout), ids
sampled from them, and the table grown to millions of rows."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from benchlib import RESULT_KEYS

from app.access.encryption import ResultCipher, ResultVault, StaticKeyProvider, parse_keys

SEED_CHUNK = 200_000
GROW_CHUNK = 500_000

# Before issue 13: results stored plain.
_SEED_ROWS = """
INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, context,
                        output, prompt_tokens, completion_tokens, total_tokens,
                        created_at, completed_at, expires_at)
SELECT gen_random_uuid(), $1, 'succeeded', 'offline:echo', md5(random()::text) || md5(random()::text),
       'bench', '{"source": "bench"}'::jsonb, repeat('answer ', 30), 10, 30, 40,
       now() - random() * interval '1 day', now(), now() + interval '30 days'
FROM generate_series(1, $2)
"""


ANSWER = "answer " * 30
_COLUMNS = [
    "id", "owner_id", "status", "model", "prompt_hash", "prompt_hash_key_id", "context", "output",
    "prompt_tokens", "completion_tokens", "total_tokens", "created_at", "completed_at", "expires_at",
]  # fmt: skip


async def sealed_at_rest(conn: asyncpg.Connection) -> bool:
    """Whether this schema stores results sealed (bytea), or plain (before issue 13)."""
    kind = await conn.fetchval(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'agent_task' AND column_name = 'output'"
    )
    return kind == "bytea"


def _sealed_rows(owner: uuid.UUID, count: int) -> list[tuple[Any, ...]]:
    """`count` finished tasks as the service writes them: output and context sealed for their row."""
    vault = ResultVault(ResultCipher(StaticKeyProvider(parse_keys(RESULT_KEYS))))
    now = datetime.now(UTC)
    rows = []
    for _ in range(count):
        task_id = uuid.uuid4()
        rows.append((
            task_id, owner, "succeeded", "offline:echo", secrets.token_hex(32), "bench",
            vault.seal_context(task_id, owner, {"source": "bench"}), vault.seal_output(task_id, owner, ANSWER),
            10, 30, 40, now - timedelta(days=random.random()), now, now + timedelta(days=30),
        ))  # fmt: skip
    return rows


# Growing a sealed table to millions of rows: each row gets one seeded row's ciphertexts, which
# open only in that row (bound to its id). A read of a grown row then does the same AES-GCM work
# and answers `result_unreadable`: the size phase measures the lookup, not the answer.
_GROW_SEALED = """
INSERT INTO agent_task (id, owner_id, status, model, prompt_hash, prompt_hash_key_id, context,
                        output, prompt_tokens, completion_tokens, total_tokens,
                        created_at, completed_at, expires_at)
SELECT gen_random_uuid(), $1, 'succeeded', 'offline:echo', md5(random()::text) || md5(random()::text),
       'bench', s.context, s.output, 10, 30, 40,
       now() - random() * interval '1 day', now(), now() + interval '30 days'
FROM generate_series(1, $2), (SELECT context, output FROM agent_task WHERE output IS NOT NULL LIMIT 1) AS s
"""


async def seed(url: str, owner: uuid.UUID, rows: int) -> list[uuid.UUID]:
    """ROWS finished tasks of `owner`, sealed or plain as the schema stores them; some of their ids."""
    conn = await asyncpg.connect(url)
    try:
        sealed = await sealed_at_rest(conn)
        for start in range(0, rows, SEED_CHUNK):
            size = min(SEED_CHUNK, rows - start)
            if sealed:
                await conn.copy_records_to_table("agent_task", records=_sealed_rows(owner, size), columns=_COLUMNS)
            else:
                await conn.execute(_SEED_ROWS, owner, size)
        await conn.execute("VACUUM ANALYZE agent_task")
        rows_ = await conn.fetch("SELECT id FROM agent_task TABLESAMPLE SYSTEM (1) LIMIT 2000")
        if len(rows_) < 100:
            rows_ = await conn.fetch("SELECT id FROM agent_task LIMIT 2000")
        return [r["id"] for r in rows_]
    finally:
        await conn.close()


async def sample_ids(url: str, count: int) -> list[uuid.UUID]:
    """`count` task ids drawn uniformly from the whole table (row sampling, not block sampling)."""
    conn = await asyncpg.connect(url)
    try:
        total = await conn.fetchval("SELECT reltuples::bigint FROM pg_class WHERE relname = 'agent_task'")
        percent = min(100.0, 100.0 * 3 * count / max(int(total), 1))
        rows = await conn.fetch(f"SELECT id FROM agent_task TABLESAMPLE BERNOULLI ({percent:.6f})")
        ids = [r["id"] for r in rows]
        return random.sample(ids, min(count, len(ids)))
    finally:
        await conn.close()


async def grow(url: str, owner: uuid.UUID, target_rows: int) -> dict[str, Any]:
    """Grow agent_task to `target_rows` rows the fast way: drop its indexes and keys, bulk insert
    from two connections, rebuild them (sorted, so the rebuilt indexes are compact), VACUUM
    ANALYZE, CHECKPOINT. A throwaway cluster: its WAL limit is raised so no checkpoint storms."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER SYSTEM SET max_wal_size = '32GB'")
        await conn.execute("ALTER SYSTEM SET checkpoint_timeout = '1h'")
        await conn.execute("SELECT pg_reload_conf()")
        have = int(await conn.fetchval("SELECT count(*) FROM agent_task"))
        constraints = await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS def, contype FROM pg_constraint "
            "WHERE conrelid = 'agent_task'::regclass AND contype IN ('p', 'u', 'f')"
        )
        indexes = await conn.fetch(
            "SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def FROM pg_index "
            "WHERE indrelid = 'agent_task'::regclass AND indexrelid NOT IN "
            "(SELECT conindid FROM pg_constraint WHERE conrelid = 'agent_task'::regclass)"
        )
        for index in indexes:
            await conn.execute(f"DROP INDEX {index['name']}")
        for constraint in constraints:
            await conn.execute(f"ALTER TABLE agent_task DROP CONSTRAINT {constraint['conname']}")
    finally:
        await conn.close()

    missing = max(0, target_rows - have)
    chunks = [min(GROW_CHUNK, missing - start) for start in range(0, missing, GROW_CHUNK)]

    async def inserter(mine: list[int]) -> None:
        worker = await asyncpg.connect(url)
        try:
            await worker.execute("SET synchronous_commit = off")
            statement = _GROW_SEALED if await sealed_at_rest(worker) else _SEED_ROWS
            for size in mine:
                await worker.execute(statement, owner, size)
        finally:
            await worker.close()

    await asyncio.gather(inserter(chunks[0::2]), inserter(chunks[1::2]))
    inserted_at = time.perf_counter()

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET maintenance_work_mem = '1GB'")
        for constraint in sorted(constraints, key=lambda c: c["contype"] == "f"):  # keys first, references last
            await conn.execute(f"ALTER TABLE agent_task ADD CONSTRAINT {constraint['conname']} {constraint['def']}")
        for index in indexes:
            await conn.execute(index["def"])
        indexed_at = time.perf_counter()
        await conn.execute("VACUUM ANALYZE agent_task")
        await conn.execute("CHECKPOINT")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('agent_task'))")
        rows = int(await conn.fetchval("SELECT count(*) FROM agent_task"))
    finally:
        await conn.close()
    done = time.perf_counter()
    return {
        "rows": rows,
        "table_size": size,
        "insert_s": round(inserted_at - started, 1),
        "index_s": round(indexed_at - inserted_at, 1),
        "vacuum_analyze_checkpoint_s": round(done - indexed_at, 1),
        "total_s": round(done - started, 1),
    }


_REFERENCE_TABLES = """
DROP TABLE IF EXISTS ref_task, ref_audit;
CREATE TABLE ref_task (id uuid PRIMARY KEY, owner_id uuid NOT NULL, status text NOT NULL, model text NOT NULL,
                       output text, created_at timestamptz NOT NULL);
CREATE TABLE ref_audit (task_id uuid NOT NULL, actor_id uuid NOT NULL, at timestamptz NOT NULL DEFAULT now());
INSERT INTO ref_task SELECT id, owner_id, status, model, repeat('answer ', 30), created_at FROM agent_task;
VACUUM ANALYZE ref_task;
"""


async def seed_reference(url: str) -> None:
    """The reference's two tables (scripts/reference_app.py), with a row for every task."""
    conn = await asyncpg.connect(url)
    try:
        for statement in _REFERENCE_TABLES.split(";"):
            if statement.strip():
                await conn.execute(statement)
    finally:
        await conn.close()
