"""The console's operations: signing in and out, and browsing tasks as the API's roles allow.

The console (`app.console`) is a third face, beside REST and MCP: it calls these and the shared
operations (`get_result`, `list_audit_events`, `place_hold`, ...) with channel `console`, so its
reads are audited like every other. `AgentService` inherits this class.
"""

from __future__ import annotations

import uuid

from app.access.encryption import ResultVault
from app.access.sessions import ConsoleSessions, SignedIn, csrf_token
from app.domain import Actor, Channel, Principal, TaskStatus, Unauthenticated
from app.schemas import AgentResultPage, AgentResultSummary, LegalHold
from app.service.holds import require_hold_role
from app.service.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_task_cursor, encode_task_cursor, page_size
from app.storage import audit
from app.storage import holds as hold_storage
from app.storage.database import Database

SESSION_EXPIRED = "your console session has ended (signed out, expired, or its API key was revoked): sign in again"


class ConsoleOperations:
    """Set up by `AgentService.__init__`."""

    _db: Database
    _sessions: ConsoleSessions
    _vault: ResultVault

    # -- sessions ---------------------------------------------------------------------------

    async def sign_in(self, api_key: str | None, *, client: str | None) -> SignedIn:
        """A console session for an API key; failures are throttled per address like the API's."""
        return await self._sessions.sign_in(api_key, client=client)

    async def session_principal(self, token: str | None) -> Principal:
        """Who a console session acts as; `Unauthenticated` once it has ended for any reason."""
        principal = await self._sessions.resolve(token)
        if principal is None:
            raise Unauthenticated(SESSION_EXPIRED)
        return principal

    def session_csrf(self, token: str) -> str:
        """The CSRF token every form of this session must carry."""
        return csrf_token(token)

    async def sign_out(self, token: str) -> None:
        await self._sessions.sign_out(token)

    @property
    def session_lifetime_seconds(self) -> float:
        return self._sessions.lifetime_seconds

    # -- browsing ---------------------------------------------------------------------------

    async def browse_tasks(
        self,
        principal: Principal,
        *,
        status: TaskStatus | None = None,
        task_id: uuid.UUID | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        channel: Channel,
        request_id: str | None = None,
    ) -> AgentResultPage:
        """Live tasks, newest first, without outputs: a client's own, an auditor's or admin's of
        every owner (as a read by id allows them); filtered by status and id; audited (`list`)."""
        limit = page_size(limit)
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        async with self._db.connection() as conn:
            rows = await audit.browse_tasks_audited(
                conn,
                principal.owner_filter,
                status=status,
                task_id=task_id,
                before=decode_task_cursor(cursor),
                limit=limit + 1,
                actor=actor,
            )
        page = rows[:limit]
        next_cursor = encode_task_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        items = [AgentResultSummary.from_record(r, self._vault.open(r)) for r in page]
        return AgentResultPage(items=items, next_cursor=next_cursor)

    async def task_holds(self, principal: Principal, task_id: uuid.UUID) -> list[LegalHold]:
        """The holds in force on a task, its own and its owner's (auditors and admins)."""
        require_hold_role(principal)
        async with self._db.connection() as conn:
            rows = await hold_storage.list_task_holds(conn, task_id, limit=MAX_PAGE_SIZE)
        return [LegalHold.from_record(r) for r in rows]
