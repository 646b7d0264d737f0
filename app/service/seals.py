"""Sealing the audit trail into a signed chain, and checking the chain against the events.

The sealer runs every AUDIT_SEAL_SECONDS (app.service.schedule), one replica at a time (an
advisory lock on its own connection: nothing on the read path waits for it). In one
REPEATABLE READ snapshot it takes the events whose transactions ended before the snapshot's
xmin and that no seal covers yet, in id order, and signs a seal over their digests and the
previous seal's digest. An event whose transaction is still open (a lower id committing after
a higher one) is simply left for a later seal: no sealed range can ever gain an event.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.access.signing import AuditSigner, AuditVerifier
from app.domain import AuditEventRecord
from app.domain.seals import GENESIS_DIGEST, SealRecord, event_content, event_digest, seal_over
from app.storage import seals as storage
from app.storage.database import Database
from app.telemetry import metrics

log = logging.getLogger(__name__)

# A seal stays a modest row: past this many events, one run writes several seals.
MAX_EVENTS_PER_SEAL = 5_000
# Digests are ~13 us an event: 300 of them hold the event loop about 4 ms (sealing must not stall reads).
DIGEST_SLICE = 300


@dataclass(frozen=True, slots=True)
class SealRun:
    seals: int = 0
    events: int = 0
    skipped: bool = False  # another process was sealing


class Sealer:
    def __init__(self, db: Database, signer: AuditSigner, *, max_events: int = MAX_EVENTS_PER_SEAL) -> None:
        self._db = db
        self._signer = signer
        self._max_events = max_events

    async def seal(self) -> SealRun:
        """Seal every event committed for everyone since the last seal; no events, no seal."""
        seals = events = 0
        async with self._db.dedicated() as conn:
            if not await storage.try_seal_lock(conn):
                return SealRun(skipped=True)
            try:
                while True:
                    async with conn.transaction(isolation="repeatable_read"):
                        sealed, more = await self._seal_one(conn)
                    if sealed:
                        seals, events = seals + 1, events + sealed
                    if not more:
                        break
            finally:
                await storage.release_seal_lock(conn)
        if seals:
            metrics.AUDIT_SEALS.add(seals)
            log.debug("sealed %d audit events in %d seals", events, seals)
        return SealRun(seals, events)

    async def _seal_one(self, conn: asyncpg.Connection) -> tuple[int, bool]:
        now, xmin, last_digest, floor = await storage.seal_start(conn)
        upper, more = xmin, False
        cut = await storage.seal_cut(conn, from_xact=floor, to_xact=xmin, cap=self._max_events)
        if cut is not None:  # too many for one seal: stop at a transaction boundary, seal the rest next
            upper, more = max(cut, floor + 1), True
        events = await storage.events_to_seal(conn, from_xact=floor, to_xact=upper)
        if not events:
            return 0, more
        content, ids, digests = seal_over(
            events,
            seal_id=await storage.next_seal_id(conn),
            sealed_at=now,
            xact_watermark=upper,
            previous_digest=last_digest or GENESIS_DIGEST,
            key_id=self._signer.key_id,
            digests=await _digests_in_slices(events),
        )
        signature = self._signer.sign(content.signed_bytes())
        await storage.insert_seal(conn, SealRecord(content, content.digest, signature, ids, digests))
        return len(ids), more


async def _digests_in_slices(events: list[AuditEventRecord]) -> list[str]:
    """Every event's digest, computed DIGEST_SLICE at a time with the event loop let go in
    between: the loop that serves reads waits a few milliseconds at most. (A worker thread did
    worse: under the GIL, each read then waited for the thread's switch interval.)"""
    digests: list[str] = []
    for start in range(0, len(events), DIGEST_SLICE):
        digests.extend(event_digest(event_content(event)) for event in events[start : start + DIGEST_SLICE])
        await asyncio.sleep(0)
    return digests


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing that does not match: a seal, and an event in it when one is to blame."""

    seal_id: int | None  # None: after the last seal
    event_id: int | None
    kind: str  # modified, inserted, deleted (an event); seal_modified, seal_missing (a seal)
    reason: str

    def describe(self) -> str:
        where = f"seal {self.seal_id}" if self.seal_id is not None else "after the last seal"
        what = f"event {self.event_id} was {self.kind}" if self.event_id is not None else self.kind.replace("_", " ")
        return f"{where}: {what} ({self.reason})"


@dataclass(frozen=True, slots=True)
class ChainReport:
    seals: int
    events: int
    first_seal: int | None
    last_seal: int | None
    start: str  # how the chain's first seal is vouched for
    unsealed: int  # events awaiting the next seal (not a failure)
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


class ChainVerifier:
    """Recomputes the chain from the database: signatures, links, and every event's digest."""

    def __init__(self, db: Database, verifier: AuditVerifier) -> None:
        self._db = db
        self._verifier = verifier

    async def verify(self, *, since: datetime | None = None) -> ChainReport:
        async with self._db.dedicated() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            after, floor, start = 0, 0, "genesis"
            if since is not None:
                first = await storage.first_seal_since(conn, since)
                if first is None:
                    count, _ = await storage.unsealed(conn, from_xact=0)
                    return ChainReport(0, 0, None, None, f"no seal since {since.isoformat()}", count, None)
                after, floor = first - 1, await storage.xact_floor(conn, first)
            previous: str | None = None
            seals = events = 0
            first_id = last_id = None
            while page := await storage.seals_after(conn, after_id=after):
                for seal in page:
                    if previous is None:
                        start, problem = await self._start(conn, seal, since)
                    else:
                        problem = None
                    problem = problem or self._check_seal(seal, previous) or await self._check_events(conn, seal, floor)
                    if problem is not None:
                        return ChainReport(seals, events, first_id, last_id, start, 0, problem)
                    first_id = first_id or seal.id
                    last_id, previous, floor = seal.id, seal.digest, seal.content.xact_watermark
                    seals, events = seals + 1, events + seal.content.event_count
                after = page[-1].id
            pending, forged = await storage.unsealed(conn, from_xact=floor)
            problem = None
            if forged is not None:
                problem = Problem(None, forged, "inserted", "its transaction id lies in the future")
            return ChainReport(seals, events, first_id, last_id, start, pending, problem)

    async def _start(
        self, conn: asyncpg.Connection, seal: SealRecord, since: datetime | None
    ) -> tuple[str, Problem | None]:
        """Where the chain begins: at the genesis, at `--since`, or after a recorded purge."""
        if seal.content.previous_digest == GENESIS_DIGEST:
            return "genesis", None
        if since is not None:
            return f"seal {seal.id} (--since; its predecessor taken as given)", None
        purge = await storage.purge_recorded(conn, seal.content.previous_digest)
        if purge is None:
            reason = "the seals before it are gone and no purge event records removing them"
            return f"seal {seal.id}", Problem(seal.id, None, "seal_missing", reason)
        return f"seal {seal.id}, after the purge recorded in event {purge}", None

    def _check_seal(self, seal: SealRecord, previous: str | None) -> Problem | None:
        c = seal.content
        if not self._verifier.verify(seal.signature, c.signed_bytes()):
            return Problem(seal.id, None, "seal_modified", "its signature does not match its content")
        if seal.digest != c.digest:
            return Problem(seal.id, None, "seal_modified", "its stored digest is not its content's")
        if not seal.lists_match():
            return Problem(seal.id, None, "seal_modified", "its event list is not the one it signed")
        if previous is not None and c.previous_digest != previous:
            return Problem(seal.id, None, "seal_missing", "it does not follow the seal before it")
        return None

    async def _check_events(self, conn: asyncpg.Connection, seal: SealRecord, floor: int) -> Problem | None:
        stored = {e.id: e for e in await storage.events_by_id(conn, seal)}
        found: list[tuple[int, str, str]] = []
        for event_id, digest in zip(seal.event_ids, seal.event_digests, strict=True):
            event = stored.get(event_id)
            if event is None:
                found.append((event_id, "deleted", "the seal lists it, the table has no such row"))
                break
            if event_digest(event_content(event)) != digest:
                found.append((event_id, "modified", "its content no longer matches its sealed digest"))
                break
        inserted = await storage.first_unlisted(
            conn, from_xact=floor, to_xact=seal.content.xact_watermark, ids=seal.event_ids
        )
        if inserted is not None:
            found.append((inserted, "inserted", "its transaction falls in this seal's range, which does not list it"))
        if not found:
            return None
        event_id, kind, reason = min(found)
        return Problem(seal.id, event_id, kind, reason)
