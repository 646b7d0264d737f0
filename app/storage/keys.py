"""API keys: only their SHA-256 is stored; the plain key is shown once, at creation."""

from __future__ import annotations

import uuid

import asyncpg

from app.domain import ApiKeyRecord, Role
from app.storage.sql import Statement, column_list

KEY_COLUMNS = column_list(ApiKeyRecord)

INSERT_API_KEY = Statement(
    "insert_api_key",
    f"""
INSERT INTO api_key (id, name, role, key_hash, key_prefix, rate_limit_per_minute, max_running_tasks)
VALUES (:id, :name, :role, :key_hash, :key_prefix, :rate_limit_per_minute, :max_running_tasks)
RETURNING {KEY_COLUMNS}
""",
)


async def insert_api_key(
    conn: asyncpg.Connection,
    *,
    name: str,
    role: Role,
    key_hash: str,
    key_prefix: str,
    rate_limit_per_minute: int | None = None,
    max_running_tasks: int | None = None,
) -> ApiKeyRecord:
    row = await INSERT_API_KEY.fetchrow(
        conn,
        id=uuid.uuid4(),
        name=name,
        role=role.value,
        key_hash=key_hash,
        key_prefix=key_prefix,
        rate_limit_per_minute=rate_limit_per_minute,
        max_running_tasks=max_running_tasks,
    )
    assert row is not None
    return ApiKeyRecord.from_row(row)


SET_KEY_LIMITS = Statement(
    "set_key_limits",
    f"""
UPDATE api_key SET rate_limit_per_minute = :rate_limit_per_minute, max_running_tasks = :max_running_tasks
WHERE id = :key_id
RETURNING {KEY_COLUMNS}
""",
)


async def set_key_limits(
    conn: asyncpg.Connection, key_id: uuid.UUID, *, rate_limit_per_minute: int | None, max_running_tasks: int | None
) -> ApiKeyRecord | None:
    """Replace a key's own limits (None: the server default); None when no key has that id."""
    row = await SET_KEY_LIMITS.fetchrow(
        conn, key_id=key_id, rate_limit_per_minute=rate_limit_per_minute, max_running_tasks=max_running_tasks
    )
    return None if row is None else ApiKeyRecord.from_row(row)


FIND_ACTIVE_KEY = Statement(
    "find_active_key", f"SELECT {KEY_COLUMNS} FROM api_key WHERE key_hash = :key_hash AND revoked_at IS NULL"
)


async def find_active_key(conn: asyncpg.Connection, key_hash: str) -> ApiKeyRecord | None:
    row = await FIND_ACTIVE_KEY.fetchrow(conn, key_hash=key_hash)
    return None if row is None else ApiKeyRecord.from_row(row)


LIST_API_KEYS = Statement("list_api_keys", f"SELECT {KEY_COLUMNS} FROM api_key ORDER BY created_at, id")


async def list_api_keys(conn: asyncpg.Connection) -> list[ApiKeyRecord]:
    return [ApiKeyRecord.from_row(row) for row in await LIST_API_KEYS.fetch(conn)]


REVOKE_API_KEY = Statement(
    "revoke_api_key",
    f"UPDATE api_key SET revoked_at = coalesce(revoked_at, now()) WHERE id = :key_id RETURNING {KEY_COLUMNS}",
)


async def revoke_api_key(conn: asyncpg.Connection, key_id: uuid.UUID) -> ApiKeyRecord | None:
    """Revoke a key (idempotent); None when no key has that id."""
    row = await REVOKE_API_KEY.fetchrow(conn, key_id=key_id)
    return None if row is None else ApiKeyRecord.from_row(row)


COUNT_API_KEYS = Statement("count_api_keys", "SELECT count(*) FROM api_key")


async def count_api_keys(conn: asyncpg.Connection) -> int:
    return int(await COUNT_API_KEYS.fetchval(conn))
