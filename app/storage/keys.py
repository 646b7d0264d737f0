"""API keys: only their SHA-256 is stored; the plain key is shown once, at creation.

Every change to a key is announced on the channel `api_key_changed` by the statement that makes
it (`pg_notify` in the same statement, so in the same transaction): whoever changes a key (the
CLI, a replica, a future admin endpoint) tells every process, and nobody is told of a change
that was rolled back. PostgreSQL delivers the notification when the transaction commits.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

import asyncpg

from app.domain import ApiKeyRecord, Role, StoreOutput
from app.storage.sql import Statement, column_list

KEY_COLUMNS = column_list(ApiKeyRecord)
KEY_EVENTS_CHANNEL = "api_key_changed"


class KeyEventKind(StrEnum):
    CREATED = "created"
    REVOKED = "revoked"
    LIMITS = "limits"


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One notification: which key (its id, and its hash, which is what caches are keyed by) and what happened.

    The hash is what the table holds, of a random key: it tells a listener nothing it could use."""

    kind: KeyEventKind
    key_id: uuid.UUID
    key_hash: str

    @classmethod
    def parse(cls, payload: str) -> KeyEvent | None:
        """The event a payload carries; None for one this version does not know (a newer replica's)."""
        try:
            data = json.loads(payload)
            return cls(KeyEventKind(data["event"]), uuid.UUID(data["id"]), str(data["key_hash"]))
        except (ValueError, KeyError, TypeError):
            return None


def _announcing(kind: KeyEventKind, changed: str) -> str:
    """`changed` (a data-modifying statement returning the key's row), announced as `kind`.

    The notification is a function in FROM, joined to each changed row: it is sent exactly when
    a row changed, and the statement still returns the row."""
    payload = f"json_build_object('event', '{kind}', 'id', changed.id, 'key_hash', changed.key_hash)::text"
    return f"""
WITH changed AS ({changed} RETURNING {KEY_COLUMNS})
SELECT {column_list(ApiKeyRecord, "changed.")}
FROM changed CROSS JOIN LATERAL pg_notify('{KEY_EVENTS_CHANNEL}', {payload}) AS notified
"""


INSERT_API_KEY = Statement(
    "insert_api_key",
    _announcing(
        KeyEventKind.CREATED,
        """
INSERT INTO api_key (id, name, role, key_hash, key_prefix, rate_limit_per_minute, max_running_tasks,
                     store_output, max_retention_days, webhook_secret, webhook_secret_at,
                     monthly_token_budget, monthly_usd_budget)
VALUES (:id, :name, :role, :key_hash, :key_prefix, :rate_limit_per_minute, :max_running_tasks,
        :store_output, :max_retention_days, :webhook_secret,
        CASE WHEN :webhook_secret::bytea IS NOT NULL THEN now() END, :monthly_token_budget, :monthly_usd_budget)""",
    ),
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
    store_output: StoreOutput = StoreOutput.ALLOWED,
    max_retention_days: float | None = None,
    key_id: uuid.UUID | None = None,
    webhook_secret: bytes | None = None,
    monthly_token_budget: int | None = None,
    monthly_usd_budget: Decimal | None = None,
) -> ApiKeyRecord:
    """A new key (`webhook_secret`: its signing secret, sealed for `key_id`)."""
    row = await INSERT_API_KEY.fetchrow(
        conn,
        id=key_id or uuid.uuid4(),
        webhook_secret=webhook_secret,
        name=name,
        role=role.value,
        key_hash=key_hash,
        key_prefix=key_prefix,
        rate_limit_per_minute=rate_limit_per_minute,
        max_running_tasks=max_running_tasks,
        store_output=store_output.value,
        max_retention_days=max_retention_days,
        monthly_token_budget=monthly_token_budget,
        monthly_usd_budget=monthly_usd_budget,
    )
    assert row is not None
    return ApiKeyRecord.from_row(row)


SET_KEY_LIMITS = Statement(
    "set_key_limits",
    _announcing(
        KeyEventKind.LIMITS,
        """
UPDATE api_key SET rate_limit_per_minute = :rate_limit_per_minute, max_running_tasks = :max_running_tasks,
                   store_output = :store_output, max_retention_days = :max_retention_days,
                   monthly_token_budget = :monthly_token_budget, monthly_usd_budget = :monthly_usd_budget
WHERE id = :key_id""",
    ),
)


async def set_key_limits(
    conn: asyncpg.Connection,
    key_id: uuid.UUID,
    *,
    rate_limit_per_minute: int | None,
    max_running_tasks: int | None,
    store_output: StoreOutput = StoreOutput.ALLOWED,
    max_retention_days: float | None = None,
    monthly_token_budget: int | None = None,
    monthly_usd_budget: Decimal | None = None,
) -> ApiKeyRecord | None:
    """Replace a key's own limits, data policy and budgets (None: the server default, or no
    budget); None when no key has that id."""
    row = await SET_KEY_LIMITS.fetchrow(
        conn,
        key_id=key_id,
        rate_limit_per_minute=rate_limit_per_minute,
        max_running_tasks=max_running_tasks,
        store_output=store_output.value,
        max_retention_days=max_retention_days,
        monthly_token_budget=monthly_token_budget,
        monthly_usd_budget=monthly_usd_budget,
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
    _announcing(KeyEventKind.REVOKED, "UPDATE api_key SET revoked_at = coalesce(revoked_at, now()) WHERE id = :key_id"),
)


async def revoke_api_key(conn: asyncpg.Connection, key_id: uuid.UUID) -> ApiKeyRecord | None:
    """Revoke a key (idempotent, announced again each time); None when no key has that id."""
    row = await REVOKE_API_KEY.fetchrow(conn, key_id=key_id)
    return None if row is None else ApiKeyRecord.from_row(row)


LIST_ACTIVE_KEY_HASHES = Statement(
    "list_active_key_hashes",
    "SELECT key_hash, id FROM api_key WHERE revoked_at IS NULL ORDER BY created_at DESC, id LIMIT :limit",
)


async def list_active_key_hashes(conn: asyncpg.Connection, *, limit: int) -> dict[str, uuid.UUID]:
    """The newest `limit` active keys: their hashes and ids."""
    return {row[0]: row[1] for row in await LIST_ACTIVE_KEY_HASHES.fetch(conn, limit=limit)}


# A new webhook signing secret; the one it replaces keeps signing until `previous_until` (NULL:
# not at all), so receivers can move over. Announced like a change of limits: every process
# forgets the key's cached principal, which says whether it signs webhooks.
SET_WEBHOOK_SECRET = Statement(
    "set_webhook_secret",
    _announcing(
        KeyEventKind.LIMITS,
        """
UPDATE api_key SET webhook_secret_previous = CASE WHEN :grace_seconds::float8 > 0 THEN webhook_secret END,
                   webhook_secret_previous_until = CASE WHEN :grace_seconds::float8 > 0 AND webhook_secret IS NOT NULL
                                                        THEN now() + make_interval(secs => :grace_seconds::float8) END,
                   webhook_secret = :secret, webhook_secret_at = now()
WHERE id = :key_id AND revoked_at IS NULL""",
    ),
)


async def set_webhook_secret(
    conn: asyncpg.Connection, key_id: uuid.UUID, secret: bytes, *, grace_seconds: float
) -> ApiKeyRecord | None:
    """None when no active key has that id."""
    row = await SET_WEBHOOK_SECRET.fetchrow(conn, key_id=key_id, secret=secret, grace_seconds=grace_seconds)
    return None if row is None else ApiKeyRecord.from_row(row)


COUNT_API_KEYS = Statement("count_api_keys", "SELECT count(*) FROM api_key")


async def count_api_keys(conn: asyncpg.Connection) -> int:
    return int(await COUNT_API_KEYS.fetchval(conn))
