"""Legal holds: placing, listing and releasing them, for REST (auditors and admins) and the CLI.

A hold keeps a task, or every task of an API key, past its retention: the purge passes it over,
an erasure is refused (`UnderLegalHold`, 409), and auditors and admins can still read it once it
has expired. What a hold does is written in the SQL (`app.storage.holds.held`); this module only
decides who may act and shapes the answers. Every placement and release is audited, with ids only.
"""

from __future__ import annotations

import uuid

from app.domain import Actor, Forbidden, NotFound, Principal
from app.schemas import HoldCreate, LegalHold, LegalHoldPage
from app.service.pagination import DEFAULT_PAGE_SIZE, decode_task_cursor, encode_task_cursor, page_size
from app.storage import holds as storage
from app.storage.database import Database


def require_hold_role(principal: Principal) -> None:
    """Holds are for auditors and admins: the roles that answer to a legal matter."""
    if not principal.sees_every_task:
        raise Forbidden("legal holds are for the auditor and admin roles")


class LegalHolds:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def place(self, actor: Actor, hold: HoldCreate) -> LegalHold:
        """Place a hold on a task or on every task of an API key; `NotFound` when there is no such one."""
        async with self._db.connection() as conn:
            record = await storage.place_hold(
                conn,
                hold_id=uuid.uuid4(),
                reference=hold.reference,
                task_id=hold.task_id,
                owner_key_id=hold.owner_key_id,
                actor=actor,
            )
        if record is None:
            raise NotFound("no such task" if hold.task_id is not None else "no such API key")
        return LegalHold.from_record(record)

    async def list(self, *, cursor: str | None, limit: int = DEFAULT_PAGE_SIZE) -> LegalHoldPage:
        """The holds in force, newest first."""
        limit = page_size(limit)
        async with self._db.connection() as conn:
            rows = await storage.list_holds(conn, before=decode_task_cursor(cursor), limit=limit + 1)
        page = rows[:limit]
        next_cursor = encode_task_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return LegalHoldPage(items=[LegalHold.from_record(r) for r in page], next_cursor=next_cursor)

    async def release(self, actor: Actor, hold_id: uuid.UUID) -> None:
        """Release a hold in force (its row stays, as history); `NotFound` when there is none."""
        async with self._db.connection() as conn:
            released = await storage.release_hold(conn, hold_id, actor)
        if not released:
            raise NotFound("no such legal hold in force")
