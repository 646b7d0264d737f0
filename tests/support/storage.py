"""Rows written through the storage layer directly: keys, new tasks, actors; the audit outcomes
recorded; and every named statement of the storage layer."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from app.access.hashing import hash_api_key
from app.domain import Actor, Channel, NewTask, Role, TaskStatus
from app.storage import audit, holds, key_events, keys, limits, migrations, retention, search, sessions, tasks
from app.storage.sql import Statement

STATEMENTS = [
    value
    for module in (tasks, audit, holds, search, keys, key_events, sessions, limits, retention, migrations)
    for value in vars(module).values()
    if isinstance(value, Statement)
]


async def make_key(db: asyncpg.Connection, role: Role = Role.CLIENT) -> uuid.UUID:
    key = await keys.insert_api_key(
        db, name=f"k-{uuid.uuid4().hex[:6]}", role=role, key_hash=hash_api_key(uuid.uuid4().hex), key_prefix="ask_x"
    )
    return key.id


def new_task(owner: uuid.UUID, retention_seconds: float = 3600, **overrides: Any) -> NewTask:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "owner_id": owner,
        "status": TaskStatus.RUNNING,
        "model": "offline:echo",
        "template": None,
        "prompt_hash": "ab" * 32,
        "prompt_hash_key_id": "k1",
        "context": b"sealed context",  # storage keeps what the service sealed
        "params": {},
        "retention_seconds": retention_seconds,
    }
    values.update(overrides)
    return NewTask(**values)


def actor(key_id: uuid.UUID, role: Role = Role.CLIENT) -> Actor:
    return Actor(key_id, role, Channel.REST, "req-1")


async def outcomes(db: asyncpg.Connection, action: str) -> list[str]:
    rows = await db.fetch("SELECT outcome FROM audit_event WHERE action = $1 ORDER BY id", action)
    return [r["outcome"] for r in rows]
