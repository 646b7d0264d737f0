"""Delivering completion webhooks from the outbox: claimed by one replica, retried with backoff.

Every replica runs a `WebhookDispatcher`. It wakes when PostgreSQL announces a new delivery
(`webhook_ready`, sent by the outbox trigger when the ending transaction commits), after each
(re)connection of the listener, and every WEBHOOK_POLL_SECONDS (for retries that fall due, and
for any notification lost with a connection). Rows are claimed `FOR UPDATE SKIP LOCKED` under a
lease, so a delivery goes out from one replica at a time, and one that a dead replica held is
taken up again when its lease runs out: at least once, and in the normal case exactly once, with
the same `webhook-id` on every attempt so a receiver can drop a duplicate.

A failed attempt is retried after WEBHOOK_RETRY_SECONDS, doubling each time (capped at an hour,
with jitter so a receiver that comes back is not hit by every replica's backlog at once), until
WEBHOOK_RETRY_HOURS after the task ended; then the delivery is `failed`. Every attempt is kept
on the row, for the owner to see (GET .../webhook).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from datetime import UTC, datetime, timedelta

import asyncpg

from app.access.encryption import ResultCipher
from app.access.keys import WEBHOOK_SECRET_FIELD
from app.domain.webhooks import Attempt, DeliveryState, DueDelivery
from app.settings import Settings
from app.storage import webhooks as storage
from app.storage.database import Database
from app.telemetry import metrics
from app.webhooks.sender import WebhookSender
from app.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

BATCH = 16
MAX_BACKOFF_SECONDS = 3600.0


class WebhookDispatcher:
    """This replica's share of the outbox, sent in the background of the event loop."""

    def __init__(self, db: Database, cipher: ResultCipher, settings: Settings) -> None:
        self._db = db
        self._cipher = cipher
        self._settings = settings
        self._sender = WebhookSender(settings.webhook_allowed_hosts, settings.webhook_timeout_seconds)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # A claim outlives the slowest attempt by a margin: no other replica takes it meanwhile.
        self._lease_seconds = settings.webhook_timeout_seconds * 2 + 10

    # -- woken by the listener ---------------------------------------------------------------------

    def ready(self, payload: str) -> None:
        """A delivery was written (its task id is the payload; the claim finds it)."""
        self._wake.set()

    async def caught_up(self, conn: asyncpg.Connection) -> None:
        """After the listener (re)connects: whatever was announced meanwhile is looked for now."""
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Claim what a predecessor left due, then send it and the rest in the background. The
        claim is made here, once, before the service answers: start-up costs one statement,
        always the same, and a pass the listener's first connection asked for is already done."""
        if self._task is not None:
            return
        first: list[DueDelivery] = []
        try:
            first = await self._claim()
            self._wake.clear()
        except Exception as exc:  # the database is away: the loop tries at its first wake-up
            log.warning("webhook delivery pass failed: %s", type(exc).__name__)
            self._wake.set()
        self._task = asyncio.create_task(self._run(first), name="webhook-dispatcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._sender.aclose()

    async def _run(self, first: list[DueDelivery]) -> None:
        try:
            await self._send(first)
        except Exception as exc:  # a result not recorded: the claim runs out and the delivery is retried
            log.warning("webhook delivery pass failed: %s", type(exc).__name__)
        if len(first) == BATCH:
            self._wake.set()  # there may be more due at once
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.webhook_poll_seconds)
            self._wake.clear()
            try:
                while await self.deliver_due() == BATCH:
                    pass  # a full batch: there may be more due at once
            except Exception as exc:  # the database is away, say: the next wake-up tries again
                log.warning("webhook delivery pass failed: %s", type(exc).__name__)

    async def deliver_due(self) -> int:
        """Claim the deliveries due now and make one attempt at each; how many were claimed."""
        due = await self._claim()
        await self._send(due)
        return len(due)

    async def _claim(self) -> list[DueDelivery]:
        async with self._db.transaction() as conn:
            return await storage.claim_due(conn, limit=BATCH, lease_seconds=self._lease_seconds)

    async def _send(self, due: list[DueDelivery]) -> None:
        if due:
            await asyncio.gather(*(self._attempt(delivery) for delivery in due))

    async def _attempt(self, delivery: DueDelivery) -> None:
        body = _body(delivery)
        secrets = self._secrets(delivery)
        if secrets:
            headers = signed_headers(delivery.message_id, datetime.now(UTC), body, secrets)
            attempt = await self._sender.post(delivery.url, body, headers)
        else:
            attempt = Attempt(datetime.now(UTC), None, "secret_unavailable", 0.0)
        state, next_at = self._judge(delivery, attempt)
        async with self._db.transaction() as conn:
            recorded = await storage.record_attempt(conn, delivery, attempt, state, next_at)
        if recorded:
            metrics.WEBHOOK_ATTEMPTS.add(1, {"result": "delivered" if attempt.accepted else attempt.error or "error"})
            if state is DeliveryState.FAILED:
                metrics.WEBHOOKS_FAILED.add(1)
                log.warning(
                    "webhook for task %s given up after %d attempts", delivery.task_id, delivery.attempt_count + 1
                )

    def _judge(self, delivery: DueDelivery, attempt: Attempt) -> tuple[DeliveryState, datetime | None]:
        if attempt.accepted:
            return DeliveryState.DELIVERED, None
        backoff = min(MAX_BACKOFF_SECONDS, self._settings.webhook_retry_seconds * 2**delivery.attempt_count)
        next_at = attempt.at + timedelta(seconds=backoff * random.uniform(0.75, 1.0))  # jitter only  # nosec B311
        if next_at > delivery.created_at + timedelta(hours=self._settings.webhook_retry_hours):
            return DeliveryState.FAILED, None
        return DeliveryState.PENDING, next_at

    def _secrets(self, delivery: DueDelivery) -> list[str]:
        """The owner key's signing secrets, opened: the current one, and the previous one during a
        rotation's grace period. Empty when none opens (the key ring lost its key)."""
        sealed = [delivery.secret]
        if delivery.previous_until is not None and delivery.previous_until > datetime.now(UTC):
            sealed.append(delivery.previous_secret)
        opened = []
        for secret in sealed:
            if secret is None:
                continue
            try:
                plain = self._cipher.open(
                    secret, task_id=delivery.owner_id, owner_id=delivery.owner_id, field=WEBHOOK_SECRET_FIELD
                )
            except Exception as exc:  # a retired or broken key: this secret cannot sign
                log.warning("webhook secret of key %s does not open: %s", delivery.owner_id, type(exc).__name__)
                continue
            opened.append(plain.decode())
        return opened


def _body(delivery: DueDelivery) -> bytes:
    """The event, the same bytes on every attempt: ids and the final status only, never content."""
    event = {
        "type": delivery.event_type,
        "timestamp": delivery.created_at.astimezone(UTC).isoformat(),
        "data": {"task_id": str(delivery.task_id), "status": delivery.event_type.removeprefix("agent_task.")},
    }
    return json.dumps(event, separators=(",", ":")).encode()
