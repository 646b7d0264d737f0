"""Key rotation for results sealed at rest: what each key still seals, and re-encryption.

Rotation is online. Put a new key first in RESULT_ENCRYPTION_KEYS and restart: new rows are
sealed with it and old rows still open under theirs. Re-encryption then moves old rows to the
active key in short transactions (a batch of rows locked, opened, sealed again, written), so
reads never wait (PostgreSQL readers do not block on row locks) and a runner finishing one of
the rows waits one batch at most. Once `status` shows that a key seals no row, removing it
makes every backup and replica copy of the rows it sealed unreadable.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from app.access.encryption import KeyRetired, ResultVault, SealBroken
from app.access.keys import WEBHOOK_SECRET_FIELD
from app.storage import encryption as storage
from app.storage.database import Database
from app.storage.encryption import KeyUse

DEFAULT_BATCH_ROWS = 500
# A pass skips rows another transaction holds (a runner finishing them): the next pass meets them.
MAX_PASSES = 5


@dataclass(slots=True)
class ReencryptReport:
    active_key_id: str
    resealed: int = 0
    unreadable: int = 0  # rows whose key is gone, or whose ciphertext does not open: left as they are
    batches: int = 0
    passes: int = 0


class ResultKeys:
    def __init__(self, db: Database, vault: ResultVault) -> None:
        self._db = db
        self._vault = vault

    async def status(self) -> list[KeyUse]:
        """Per key id, the rows it seals and the latest `expires_at` among them."""
        async with self._db.connection() as conn:
            return await storage.key_status(conn)

    async def reencrypt(self, *, batch_rows: int = DEFAULT_BATCH_ROWS, pause_seconds: float = 0.0) -> ReencryptReport:
        """Seal every row that needs an older key with the active one, in short batches."""
        report = ReencryptReport(self._vault.key_id)
        unreadable: set[uuid.UUID] = set()
        while report.passes < MAX_PASSES:
            report.passes += 1
            resealed_before = report.resealed
            after = uuid.UUID(int=0)
            while True:
                async with self._db.connection() as conn, conn.transaction():
                    rows = await storage.lock_stale_batch(
                        conn, after=after, active=self._vault.key_id, limit=batch_rows
                    )
                    if not rows:
                        break
                    after = rows[-1].id
                    resealed = []
                    for row in rows:
                        try:
                            output, context = self._vault.reseal(row.id, row.owner_id, row.output, row.context)
                        except (KeyRetired, SealBroken):
                            unreadable.add(row.id)
                            continue
                        resealed.append(storage.SealedRow(row.id, row.owner_id, output, context))
                    if resealed:
                        await storage.reseal_batch(conn, resealed)
                report.resealed += len(resealed)
                report.batches += 1
                if pause_seconds:
                    await asyncio.sleep(pause_seconds)
            if report.resealed == resealed_before:
                break  # nothing left that this ring can move
        report.unreadable = len(unreadable)
        await self._reseal_webhook_secrets(report)
        return report

    async def _reseal_webhook_secrets(self, report: ReencryptReport) -> None:
        """API keys' webhook signing secrets, sealed under the same ring: moved to the active key too."""
        cipher = self._vault.cipher

        def again(key_id: uuid.UUID, sealed: bytes | None) -> bytes | None:
            if sealed is None or cipher.is_active(sealed):
                return sealed
            plain = cipher.open(sealed, task_id=key_id, owner_id=key_id, field=WEBHOOK_SECRET_FIELD)
            return cipher.seal(plain, task_id=key_id, owner_id=key_id, field=WEBHOOK_SECRET_FIELD)

        async with self._db.connection() as conn, conn.transaction():
            for key_id, secret, previous in await storage.lock_stale_secrets(conn, active=self._vault.key_id):
                try:
                    await storage.reseal_secret(conn, key_id, again(key_id, secret), again(key_id, previous))
                except (KeyRetired, SealBroken):
                    report.unreadable += 1
                    continue
                report.resealed += 1
