"""The oversight operations: the audit log, prompt search, the sealed trail and legal holds.

They are the auditors' and admins' half of `AgentService`, kept in their own module so the
task operations stay readable. `AgentService` inherits them; REST and MCP call them the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

from app.domain import Actor, Channel, Forbidden, Principal
from app.domain.audit import AuditFilters
from app.schemas import (
    AuditEvent,
    AuditEventPage,
    AuditSealPage,
    HoldCreate,
    LegalHold,
    LegalHoldPage,
    PromptMatch,
    PromptMatchPage,
    PromptSearch,
)
from app.service.holds import LegalHolds, require_hold_role
from app.service.pagination import (
    DEFAULT_PAGE_SIZE,
    decode_int_cursor,
    decode_task_cursor,
    encode_task_cursor,
    page_size,
)
from app.service.submission import Planner
from app.service.trail import AuditTrail
from app.storage import audit, search
from app.storage.database import Database


class OversightOperations:
    """What auditors and admins do besides reading tasks. Set up by `AgentService.__init__`."""

    _db: Database
    _planner: Planner
    _holds: LegalHolds
    _trail: AuditTrail

    # -- the audit log ----------------------------------------------------------------------

    async def list_audit_events(
        self,
        principal: Principal,
        *,
        task_id: uuid.UUID | None,
        cursor: str | None,
        limit: int = DEFAULT_PAGE_SIZE,
        channel: Channel,
        request_id: str | None = None,
        filters: AuditFilters | None = None,
    ) -> AuditEventPage:
        """The audit log, newest first, for auditors and admins; reading it is audited too.
        `filters` narrow it (the console's audit-log page); `channel` is the reader's own."""
        if not principal.sees_every_task:
            raise Forbidden("the audit log is for the auditor and admin roles")
        limit = page_size(limit)
        before_id = decode_int_cursor(cursor)
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        async with self._db.connection() as conn:
            rows = await audit.list_audit_events_audited(
                conn, task_id=task_id, before_id=before_id, limit=limit + 1, actor=actor, filters=filters
            )
        page = rows[:limit]
        next_cursor = str(page[-1].id) if len(rows) > limit else None
        return AuditEventPage(items=[AuditEvent.from_record(r) for r in page], next_cursor=next_cursor)

    async def search_by_prompt(
        self,
        principal: Principal,
        prompt_search: PromptSearch,
        *,
        cursor: str | None,
        limit: int = DEFAULT_PAGE_SIZE,
        channel: Channel,
        request_id: str | None = None,
    ) -> PromptMatchPage:
        """The live tasks that carried a prompt, whoever sent them (auditors and admins).

        Hashes are bound to their owner, so the prompt is hashed here for every owner there is
        (and once the old global way, for rows from before that binding). The search, and each
        task it returns, is audited; the prompt is never stored.
        """
        if not principal.sees_every_task:
            raise Forbidden("searching by prompt is for the auditor and admin roles")
        limit = page_size(limit)
        before = decode_task_cursor(cursor)
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        async with self._db.connection() as conn:
            owners = await search.owner_ids(conn)
            hashes = self._planner.prompt_hashes(
                prompt_search.prompt, prompt_search.template, prompt_search.context, owners
            )
            rows = await search.search_tasks_audited(conn, hashes, before=before, limit=limit, actor=actor)
        page = rows[:limit]
        next_cursor = encode_task_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return PromptMatchPage(items=[PromptMatch.from_record(r) for r in page], next_cursor=next_cursor)

    # -- the sealed trail -------------------------------------------------------------------

    def audit_public_key(self, principal: Principal) -> str:
        """The audit key's public half as PEM: what checks every seal and export (auditors and admins)."""
        _require_audit_role(principal)
        return self._trail.public_key_pem

    async def list_audit_seals(
        self, principal: Principal, *, cursor: str | None, limit: int = DEFAULT_PAGE_SIZE
    ) -> AuditSealPage:
        """The seals of the audit trail, newest first (auditors and admins)."""
        _require_audit_role(principal)
        return await self._trail.list_seals(cursor=cursor, limit=limit)

    async def export_audit(
        self,
        principal: Principal,
        *,
        since: datetime,
        until: datetime,
        channel: Channel,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        """A verifiable export of the audit trail as JSON Lines, streamed (auditors and admins; audited)."""
        _require_audit_role(principal)
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        return await self._trail.export(actor, since=since, until=until)

    # -- legal holds ------------------------------------------------------------------------

    async def place_hold(
        self, principal: Principal, hold: HoldCreate, *, channel: Channel, request_id: str | None = None
    ) -> LegalHold:
        """Place a legal hold on a task or on every task of an API key (auditors and admins; audited)."""
        require_hold_role(principal)
        return await self._holds.place(Actor(principal.key_id, principal.role, channel, request_id), hold)

    async def list_holds(
        self, principal: Principal, *, cursor: str | None, limit: int = DEFAULT_PAGE_SIZE
    ) -> LegalHoldPage:
        """The legal holds in force, newest first (auditors and admins)."""
        require_hold_role(principal)
        return await self._holds.list(cursor=cursor, limit=limit)

    async def release_hold(
        self, principal: Principal, hold_id: uuid.UUID, *, channel: Channel, request_id: str | None = None
    ) -> None:
        """Release a legal hold in force (auditors and admins; audited)."""
        require_hold_role(principal)
        await self._holds.release(Actor(principal.key_id, principal.role, channel, request_id), hold_id)


def _require_audit_role(principal: Principal) -> None:
    if not principal.sees_every_task:
        raise Forbidden("the audit trail is for the auditor and admin roles")
