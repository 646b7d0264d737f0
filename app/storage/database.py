"""The connection pool, outage mapping, and the one transaction scope that commits at the boundary.

The service talks to PostgreSQL through an asyncpg pool: the hot path (an audited read) is
one prepared statement, and the ORM's per-row bookkeeping costs more than the query itself.
SQLModel stays the schema's source (`app.storage.tables`, Alembic); the other modules of
`app.storage` hold every statement.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.domain import DatabaseUnavailable
from app.settings import Settings
from app.telemetry.tracing import trace_statement

log = logging.getLogger(__name__)

_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg", "postgresql+psycopg2"}

# Errors that mean "the database is not there right now", as opposed to a bug in a statement.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # includes "connection does not exist"
    asyncpg.OperatorInterventionError,  # shutdown, crash, "cannot connect now"
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,  # statement timeout
)

# What a statement meets on a connection the server has just ended (shutdown, crash), before
# asyncpg has noticed: "connection is closed", or a protocol still consuming the server's last
# words. An outage only when the connection is in fact gone (else a bug, and it stays one).
_CLOSED_UNDERFOOT: tuple[type[BaseException], ...] = (asyncpg.InterfaceError, asyncpg.InternalClientError)


def _is_closed(conn: asyncpg.Connection) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # a pooled connection that closed has gone back to the pool already
        return True


def _split(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    return parts.scheme, urlunsplit(parts._replace(scheme="postgresql"))


def asyncpg_dsn(url: str) -> str:
    """A plain `postgresql://` DSN for asyncpg, whatever driver the URL names."""
    return _split(url)[1]


def sqlalchemy_url(url: str) -> str:
    """The same database for SQLAlchemy (Alembic), always through asyncpg."""
    return "postgresql+asyncpg://" + _split(url)[1].removeprefix("postgresql://")


class ServiceConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection that skips asyncpg's reset query on release.

    The reset (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) is one more
    round trip per request. The service never leaves session state behind: no LISTEN, no
    cursors, no SET, and the purge's session lock lives on a dedicated connection. Open
    transactions are still rolled back by asyncpg on release.
    """

    def get_reset_query(self) -> str:
        return ""


async def init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def init_traced_connection(conn: asyncpg.Connection) -> None:
    await init_connection(conn)
    conn.add_query_logger(trace_statement)


class Database:
    """Owns the pool; hands out connections and transactions, mapping outages to `DatabaseUnavailable`."""

    def __init__(self, settings: Settings) -> None:
        if settings.database_url is None:
            raise ValueError("DATABASE_URL is not set")
        self._dsn = asyncpg_dsn(settings.database_url)
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Create the pool. If the database is down, start anyway: the pool is made on first use."""
        try:
            await self._ensure_pool()
        except DatabaseUnavailable:
            log.warning("database unreachable at start-up; requests answer 503 until it returns")

    async def _ensure_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                s = self._settings
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=s.db_pool_min_size,
                        max_size=s.db_pool_max_size,
                        timeout=s.db_connect_timeout_seconds,
                        command_timeout=s.db_command_timeout_seconds,
                        statement_cache_size=s.db_statement_cache_size,
                        init=init_traced_connection if s.tracing_sql else init_connection,
                        connection_class=ServiceConnection,
                        server_settings={"application_name": "agent-service"},
                    )
                except OUTAGE_ERRORS as exc:
                    raise DatabaseUnavailable from exc
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool_in_use(self) -> int:
        pool = self._pool
        return 0 if pool is None else pool.get_size() - pool.get_idle_size()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection in autocommit mode: each statement is its own transaction."""
        try:
            pool = self._pool or await self._ensure_pool()
            async with pool.acquire(timeout=self._settings.db_connect_timeout_seconds) as conn:
                try:
                    yield conn
                except _CLOSED_UNDERFOOT as exc:
                    if _is_closed(conn):
                        raise DatabaseUnavailable from exc
                    raise
        except OUTAGE_ERRORS as exc:
            raise DatabaseUnavailable from exc

    @asynccontextmanager
    async def dedicated(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of its own, outside the pool, closed afterwards: for session state (locks)."""
        s = self._settings
        try:
            conn = await asyncpg.connect(
                self._dsn,
                timeout=s.db_connect_timeout_seconds,
                command_timeout=s.db_command_timeout_seconds,
                statement_cache_size=s.db_statement_cache_size,  # 0 behind a transaction pooler, as the pool
                server_settings={"application_name": "agent-service"},
            )
        except OUTAGE_ERRORS as exc:
            raise DatabaseUnavailable from exc
        try:
            await init_connection(conn)
            yield conn
        except OUTAGE_ERRORS as exc:
            raise DatabaseUnavailable from exc
        except _CLOSED_UNDERFOOT as exc:
            if _is_closed(conn):
                raise DatabaseUnavailable from exc
            raise
        finally:
            await conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """The unit of work: commits when the block ends, rolls back when it raises."""
        async with self.connection() as conn, conn.transaction():
            yield conn
