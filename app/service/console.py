"""The console's operations: signing in and out, and browsing tasks as the API's roles allow.

The console (`app.console`) is a third face, beside REST and MCP: it calls these and the shared
operations (`get_result`, `list_audit_events`, `place_hold`, ...) with channel `console`, so its
reads are audited like every other. `AgentService` inherits this class.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.access.encryption import ResultVault
from app.access.sessions import ConsoleSessions, SignedIn, csrf_token
from app.domain import Actor, Channel, Forbidden, Principal, Unauthenticated
from app.domain.tasks import TaskFilters
from app.schemas import AgentResultPage, AgentResultSummary, LegalHold
from app.service.dashboard import FigureTable, metric_tables
from app.service.health import Health
from app.service.holds import require_hold_role
from app.service.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_task_cursor, encode_task_cursor, page_size
from app.service.seals import ChainReport
from app.service.trail import AuditTrail
from app.storage import audit
from app.storage import holds as hold_storage
from app.storage import tasks as task_storage
from app.storage.database import Database


@dataclass(frozen=True, slots=True)
class HealthOverview:
    """The health page: the readiness checks (every key), and for auditors and admins the live
    tasks by status (every replica's, from the database) and this process's metrics."""

    ready: bool
    checks: dict[str, str]
    live_tasks: dict[str, int] | None
    metrics: list[FigureTable] | None


SESSION_EXPIRED = "your console session has ended (signed out, expired, or its API key was revoked): sign in again"


class ConsoleOperations:
    """Set up by `AgentService.__init__`."""

    _db: Database
    _sessions: ConsoleSessions
    _vault: ResultVault
    _trail: AuditTrail
    _health: Health

    # -- sessions ---------------------------------------------------------------------------

    async def sign_in(self, api_key: str | None, *, client: str | None, request_id: str | None = None) -> SignedIn:
        """A console session for an API key; failures are throttled per address like the API's.
        Audited: `sign_in` ok, or `denied` with no actor (never the key presented)."""
        return await self._sessions.sign_in(api_key, client=client, request_id=request_id)

    async def session_principal(self, token: str | None) -> Principal:
        """Who a console session acts as; `Unauthenticated` once it has ended for any reason."""
        principal = await self._sessions.resolve(token)
        if principal is None:
            raise Unauthenticated(SESSION_EXPIRED)
        return principal

    def session_csrf(self, token: str) -> str:
        """The CSRF token every form of this session must carry."""
        return csrf_token(token)

    async def sign_out(self, token: str, principal: Principal, *, request_id: str | None = None) -> None:
        """End a session (audited: `sign_out`)."""
        await self._sessions.sign_out(token, principal, request_id=request_id)

    @property
    def session_lifetime_seconds(self) -> float:
        return self._sessions.lifetime_seconds

    # -- browsing ---------------------------------------------------------------------------

    async def browse_tasks(
        self,
        principal: Principal,
        *,
        filters: TaskFilters | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        channel: Channel,
        request_id: str | None = None,
    ) -> AgentResultPage:
        """Live tasks, newest first, without outputs: a client's own, an auditor's or admin's of
        every owner (as a read by id allows them); narrowed by `filters`; audited (`list`)."""
        limit = page_size(limit)
        actor = Actor(principal.key_id, principal.role, channel, request_id)
        async with self._db.connection() as conn:
            rows = await audit.browse_tasks_audited(
                conn,
                principal.owner_filter,
                filters=filters or TaskFilters(),
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

    # -- health and the seal chain ----------------------------------------------------------

    async def health_overview(self, principal: Principal) -> HealthOverview:
        """What the health page shows the caller: the readiness checks to every key (as the
        unauthenticated /ready does); the figures, which count every client's tasks, to auditors
        and admins only (as /metrics)."""
        report = await self._health.readiness()
        live = metrics = None
        if principal.sees_every_task:
            async with self._db.connection() as conn:
                live = await task_storage.count_live_tasks_by_status(conn)
            metrics = metric_tables()
        return HealthOverview(report.status == "ok", dict(report.checks), live, metrics)

    async def verify_audit_chain(self, principal: Principal) -> ChainReport:
        """Recompute the seal chain now, as `agent-service audit verify` does (auditors and admins)."""
        if not principal.sees_every_task:
            raise Forbidden("the audit trail is for the auditor and admin roles")
        return await self._trail.verify()
