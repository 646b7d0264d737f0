"""The console's sessions: one row per signed-in browser, found by the SHA-256 of its token.

Every lookup is one statement that joins the key and refreshes the idle clock: a session of a
revoked key, one past its absolute end, or one idle too long is simply not found.
"""

from __future__ import annotations

import uuid

import asyncpg

from app.domain import ApiKeyRecord
from app.storage.sql import Statement, column_list

# A new session, and the sweep of those that have ended (the expiry index finds the absolute ones).
CREATE_SESSION = Statement(
    "create_console_session",
    """
WITH swept AS (
    DELETE FROM console_session
    WHERE expires_at <= now() OR last_seen_at <= now() - make_interval(secs => :idle_seconds)
)
INSERT INTO console_session (id, key_id, expires_at)
VALUES (:session_id, :key_id, now() + make_interval(secs => :lifetime_seconds))
""",
)

TOUCH_SESSION = Statement(
    "touch_console_session",
    f"""
UPDATE console_session AS session SET last_seen_at = now()
FROM api_key
WHERE session.id = :session_id AND api_key.id = session.key_id AND api_key.revoked_at IS NULL
  AND session.expires_at > now() AND session.last_seen_at > now() - make_interval(secs => :idle_seconds)
RETURNING {column_list(ApiKeyRecord, "api_key.")}
""",
)

DELETE_SESSION = Statement("delete_console_session", "DELETE FROM console_session WHERE id = :session_id")


async def create_session(
    conn: asyncpg.Connection, session_id: str, key_id: uuid.UUID, *, lifetime_seconds: float, idle_seconds: float
) -> None:
    await CREATE_SESSION.execute(
        conn,
        session_id=session_id,
        key_id=key_id,
        lifetime_seconds=float(lifetime_seconds),
        idle_seconds=float(idle_seconds),
    )


async def touch_session(conn: asyncpg.Connection, session_id: str, *, idle_seconds: float) -> ApiKeyRecord | None:
    """The active key of a session that is still live, its idle clock restarted; None otherwise."""
    row = await TOUCH_SESSION.fetchrow(conn, session_id=session_id, idle_seconds=float(idle_seconds))
    return None if row is None else ApiKeyRecord.from_row(row)


async def delete_session(conn: asyncpg.Connection, session_id: str) -> None:
    await DELETE_SESSION.execute(conn, session_id=session_id)


DELETE_KEY_SESSIONS = Statement("delete_key_console_sessions", "DELETE FROM console_session WHERE key_id = :key_id")


async def delete_key_sessions(conn: asyncpg.Connection, key_id: uuid.UUID) -> int:
    """End every console session of a key (its revocation): the rows go, not only their use."""
    status = await DELETE_KEY_SESSIONS.execute(conn, key_id=key_id)
    return int(str(status).rsplit(" ", 1)[-1])
