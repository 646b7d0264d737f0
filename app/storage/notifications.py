"""One connection per process that LISTENs for PostgreSQL notifications, and comes back by itself.

Why a connection of its own: a LISTEN belongs to a session, and pooled connections are handed
to whichever request asks next (and skip the reset that would UNLISTEN: `ServiceConnection`).
It is named `LISTENER_NAME` in `pg_stat_activity`. It needs a real session, so behind
PgBouncer in transaction pooling mode notifications never arrive; point the service at
PostgreSQL itself (or a session pool) for them, else what listens must have a fallback.

The connection can be lost at any time (a restart, a failover, an idle timeout in a proxy), and
notifications sent meanwhile are lost with it: PostgreSQL keeps none for an absent listener.
So after every (re)connection, each subscriber's `on_connect` runs *after* the LISTEN, to catch
up on whatever it may have missed. A ping every `ping_seconds` finds a connection that died
without a word (a half-open TCP connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from app.domain import DatabaseUnavailable
from app.storage.database import Database
from app.storage.sql import Statement

log = logging.getLogger(__name__)

LISTENER_NAME = "agent-service listener"
FIRST_RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 5.0

NAME_SESSION = Statement("name_listener_session", "SELECT set_config('application_name', :name, false)")
PING = Statement("ping_listener", "SELECT 1")

OnMessage = Callable[[str], None]
OnConnect = Callable[[asyncpg.Connection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Subscription:
    on_message: OnMessage
    on_connect: OnConnect | None


class Listener:
    """Delivers each notification's payload to its channel's subscriber, for as long as it runs."""

    def __init__(self, db: Database, *, ping_seconds: float = 10.0) -> None:
        self._db = db
        self._ping_seconds = ping_seconds
        self._subscriptions: dict[str, _Subscription] = {}
        self._task: asyncio.Task[None] | None = None
        self._tried = asyncio.Event()
        self.listening = False

    def subscribe(self, channel: str, on_message: OnMessage, on_connect: OnConnect | None = None) -> None:
        """Before `start`: `on_message(payload)` for each notification on `channel`, and
        `on_connect(connection)` after each (re)connection, once the LISTEN is in place."""
        self._subscriptions[channel] = _Subscription(on_message, on_connect)

    async def start(self, wait_seconds: float) -> None:
        """Start listening; wait (at most `wait_seconds`) for the first attempt to connect, so that
        a service that answers requests already hears of changes. A database that is down does not
        hold the start up: the listener keeps trying in the background."""
        if self._task is None and self._subscriptions:
            self._task = asyncio.create_task(self._run(), name="listener")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tried.wait(), wait_seconds)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        delay, lost_at_least_once = FIRST_RETRY_SECONDS, False
        while True:
            try:
                async with self._db.dedicated() as conn:
                    await self._listen(conn, reconnected=lost_at_least_once)
            except DatabaseUnavailable:
                pass
            except Exception as exc:  # never end: without a listener, every change waits for the fallback
                log.warning("the listener failed (%s); reconnecting", type(exc).__name__)
            finally:
                self._tried.set()
            if self.listening:
                self.listening, lost_at_least_once, delay = False, True, FIRST_RETRY_SECONDS
                log.warning("the listener lost its database connection; reconnecting")
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _listen(self, conn: asyncpg.Connection, *, reconnected: bool) -> None:
        """Listen on `conn` until it is lost."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        await NAME_SESSION.fetchval(conn, name=LISTENER_NAME)
        for channel, subscription in self._subscriptions.items():
            await conn.add_listener(channel, _deliverer(channel, subscription.on_message))
        for subscription in self._subscriptions.values():
            if subscription.on_connect is not None:
                await subscription.on_connect(conn)
        self.listening = True
        self._tried.set()
        if reconnected:
            log.info("the listener is connected again")
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), self._ping_seconds)
            except TimeoutError:
                await PING.fetchval(conn)


def _deliverer(channel: str, on_message: OnMessage) -> Callable[..., None]:
    def deliver(_conn: asyncpg.Connection, _pid: int, _channel: str, payload: str) -> None:
        try:
            on_message(payload)
        except Exception as exc:  # one bad notification must not stop the others
            log.warning("a notification on %s could not be handled (%s)", channel, type(exc).__name__)

    return deliver
