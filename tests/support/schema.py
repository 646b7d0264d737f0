"""What a migration test looks at: the tables, the revision, a table's columns."""

from __future__ import annotations

import uuid

import asyncpg


async def table_names(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(  # tables, not the partitions of audit_event
            "SELECT relname AS tablename FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind IN ('r', 'p') AND NOT relispartition"
        )
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def revision_of(url: str) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version")  # type: ignore[no-any-return]
    finally:
        await conn.close()


async def columns_of(url: str, table: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = $1", table)
        return {r["column_name"] for r in rows}
    finally:
        await conn.close()


async def a_key(conn: asyncpg.Connection, role: str = "client") -> uuid.UUID:
    """An API key row in plain SQL, with the columns every migration has had: its id."""
    key = uuid.uuid4()
    await conn.execute(
        "INSERT INTO api_key (id, name, role, key_hash, key_prefix) VALUES ($1, 'k', $2, $3, 'ask_x')",
        key,
        role,
        uuid.uuid4().hex * 2,
    )
    return key
