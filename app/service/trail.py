"""The sealed audit trail as its operations see it: the public key, the seals, an export, a check.

Built once (app.service.wiring) from the database and the signing key, and shared by the REST
routes, the schedule (sealing) and the `agent-service audit` commands.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from app.access.signing import AuditSigner
from app.domain import Actor, InvalidInput
from app.domain.seals import canonical_time
from app.schemas import AuditSeal, AuditSealPage
from app.service.export import export_lines
from app.service.pagination import DEFAULT_PAGE_SIZE, decode_int_cursor, page_size
from app.service.seals import ChainReport, ChainVerifier, Sealer, SealRun
from app.storage import audit
from app.storage import seals as storage
from app.storage.database import Database


def export_window(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """The window as UTC instants; a time without a zone is UTC. `until` must come after `since`."""
    since, until = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (since, until))
    if until <= since:
        raise InvalidInput("until must be later than since")
    return since, until


class AuditTrail:
    def __init__(self, db: Database, signer: AuditSigner) -> None:
        self._db = db
        self._signer = signer
        self.sealer = Sealer(db, signer)
        self.verifier = ChainVerifier(db, signer)

    @property
    def public_key_pem(self) -> str:
        return self._signer.public_pem()

    async def seal(self) -> SealRun:
        return await self.sealer.seal()

    async def verify(self, *, since: datetime | None = None) -> ChainReport:
        return await self.verifier.verify(since=since)

    async def list_seals(self, *, cursor: str | None, limit: int = DEFAULT_PAGE_SIZE) -> AuditSealPage:
        limit = page_size(limit)
        async with self._db.connection() as conn:
            rows = await storage.list_seals(conn, before_id=decode_int_cursor(cursor), limit=limit + 1)
        page = rows[:limit]
        next_cursor = str(page[-1].id) if len(rows) > limit else None
        return AuditSealPage(items=[AuditSeal.from_record(r) for r in page], next_cursor=next_cursor)

    async def export(self, actor: Actor, *, since: datetime, until: datetime) -> AsyncIterator[bytes]:
        """Record the export (an audit event of its own), then stream it from one snapshot.

        The checks and the audit event happen here, before the first line, so a caller who may
        not export gets an error answer rather than a broken stream.
        """
        since, until = export_window(since, until)
        async with self._db.connection() as conn:
            await audit.record_export(conn, actor, {"since": canonical_time(since), "until": canonical_time(until)})
        return self._stream(since, until)

    async def _stream(self, since: datetime, until: datetime) -> AsyncIterator[bytes]:
        async with self._db.dedicated() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            async for line in export_lines(conn, self._signer, since=since, until=until):
                yield line
