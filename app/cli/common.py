"""What the commands share: settings, the database (configured or embedded), failing plainly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import typer
from pydantic import SecretStr, ValidationError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from app.access.encryption import KeyProviderError, ResultVault, build_vault
from app.access.keys import KeyStore
from app.devdb.cluster import DevDatabaseError
from app.devdb.embedded import (
    development_hash_key,
    development_result_keys,
    development_signing_key,
    embedded_database,
)
from app.domain import DatabaseUnavailable
from app.settings import Settings, get_settings
from app.storage import migrations
from app.storage.database import Database
from app.storage.migrations import SchemaState

STARTUP_WAIT_SECONDS = 30


def fail(message: str) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


def load_settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise fail(f"Invalid configuration:\n{problems}") from None


@contextmanager
def database_settings() -> Iterator[tuple[Settings, bool]]:
    """The configured database, or (DATABASE_URL unset) the embedded one, started and migrated.

    Yields the settings to use and whether the database is the embedded one.
    """
    settings = load_settings()
    if settings.database_url is not None:
        yield settings, False
        return
    try:
        with embedded_database(settings.data_dir) as url:
            key = settings.prompt_hash_key or SecretStr(development_hash_key(settings.data_dir))
            result_keys = settings.result_encryption_keys or SecretStr(development_result_keys(settings.data_dir))
            signing_key = settings.audit_signing_key or SecretStr(development_signing_key(settings.data_dir))
            resolved = settings.model_copy(
                update={
                    "database_url": url,
                    "prompt_hash_key": key,
                    "result_encryption_keys": result_keys,
                    "audit_signing_key": signing_key,
                }
            )
            migrations.upgrade(url, result_keys=result_keys.get_secret_value())
            yield resolved, True
    except DevDatabaseError as exc:
        raise fail(str(exc)) from None


def result_vault(settings: Settings) -> ResultVault:
    """The result keys the settings give, or a one-line error (naming the rule, never a key)."""
    try:
        return build_vault(settings)
    except KeyProviderError as exc:
        raise fail(f"The result encryption keys cannot be loaded: {exc}.") from None


def command_database(settings: Settings, *, connections: int) -> Database:
    """A small pool for a one-off command."""
    return Database(settings.model_copy(update={"db_pool_min_size": 1, "db_pool_max_size": connections}))


def on_database[T](act: Callable[[Database, Settings], Awaitable[T]]) -> T:
    """Run `act` on the configured (or embedded) database at the head migration, on a small pool."""
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)

        async def run() -> T:
            db = command_database(settings, connections=1)
            try:
                await db.open()
            except DatabaseUnavailable:
                raise fail("The database is not reachable.") from None
            try:
                return await act(db, settings)
            finally:
                await db.close()

        return asyncio.run(run())


@retry(
    retry=retry_if_exception_type(DatabaseUnavailable),
    stop=stop_after_delay(STARTUP_WAIT_SECONDS),
    wait=wait_exponential(multiplier=0.2, max=3),
    reraise=True,
)
async def _schema_state(settings: Settings) -> SchemaState:
    db = command_database(settings, connections=1)
    await db.open()
    try:
        async with db.connection() as conn:
            return await migrations.schema_state(conn)
    finally:
        await db.close()


def require_head(settings: Settings) -> None:
    try:
        schema = asyncio.run(_schema_state(settings))
    except DatabaseUnavailable:
        raise fail(f"The database at DATABASE_URL did not answer within {STARTUP_WAIT_SECONDS} s.") from None
    if not schema.at_head:
        raise fail(f"The database is not at the head migration: it is {schema.describe()}.")


@contextmanager
def key_store(settings: Settings) -> Iterator[tuple[KeyStore, asyncio.Runner]]:
    with asyncio.Runner() as runner:
        db = command_database(settings, connections=2)
        try:
            runner.run(db.open())
        except DatabaseUnavailable:
            raise fail("The database is not reachable.") from None
        try:
            yield KeyStore(db, cache_seconds=0, cipher=result_vault(settings).cipher), runner
        finally:
            runner.run(db.close())
