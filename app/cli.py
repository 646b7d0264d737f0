"""The `agent-service` command: serve, migrate, and manage API keys."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import SecretStr, ValidationError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from app.access.keys import KeyStore
from app.devdb.cluster import DevDatabaseError, LocalPostgres
from app.devdb.embedded import DATABASE_NAME, development_hash_key, embedded_database
from app.domain import ApiKeyRecord, Channel, DatabaseUnavailable, NotFound, Role
from app.service.retention import Purger, PurgeReport
from app.settings import Settings, get_settings
from app.storage import migrations
from app.storage.database import Database
from app.storage.migrations import SchemaState
from app.telemetry.logs import configure_logging

app = typer.Typer(
    help="LLM Agent Service: run LLM tasks over REST and MCP, read results back, audited.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Manage API keys (stored hashed; the plain key is shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
devdb_app = typer.Typer(
    help="The embedded development database (used while DATABASE_URL is unset).", no_args_is_help=True
)
app.add_typer(devdb_app, name="devdb")

STARTUP_WAIT_SECONDS = 30


def _fail(message: str) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


def _load_settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise _fail(f"Invalid configuration:\n{problems}") from None


@contextmanager
def _database_settings() -> Iterator[tuple[Settings, bool]]:
    """The configured database, or (DATABASE_URL unset) the embedded one, started and migrated.

    Yields the settings to use and whether the database is the embedded one.
    """
    settings = _load_settings()
    if settings.database_url is not None:
        yield settings, False
        return
    try:
        with embedded_database(settings.data_dir) as url:
            key = settings.prompt_hash_key or SecretStr(development_hash_key(settings.data_dir))
            resolved = settings.model_copy(update={"database_url": url, "prompt_hash_key": key})
            migrations.upgrade(url)
            yield resolved, True
    except DevDatabaseError as exc:
        raise _fail(str(exc)) from None


def _command_database(settings: Settings, *, connections: int) -> Database:
    """A small pool for a one-off command."""
    return Database(settings.model_copy(update={"db_pool_min_size": 1, "db_pool_max_size": connections}))


@retry(
    retry=retry_if_exception_type(DatabaseUnavailable),
    stop=stop_after_delay(STARTUP_WAIT_SECONDS),
    wait=wait_exponential(multiplier=0.2, max=3),
    reraise=True,
)
async def _schema_state(settings: Settings) -> SchemaState:
    db = _command_database(settings, connections=1)
    await db.open()
    try:
        async with db.connection() as conn:
            return await migrations.schema_state(conn)
    finally:
        await db.close()


def _require_head(settings: Settings) -> None:
    try:
        schema = asyncio.run(_schema_state(settings))
    except DatabaseUnavailable:
        raise _fail(f"The database at DATABASE_URL did not answer within {STARTUP_WAIT_SECONDS} s.") from None
    if not schema.at_head:
        raise _fail(f"The database is not at the head migration: it is {schema.describe()}.")


@contextmanager
def _key_store(settings: Settings) -> Iterator[tuple[KeyStore, asyncio.Runner]]:
    with asyncio.Runner() as runner:
        db = _command_database(settings, connections=2)
        try:
            runner.run(db.open())
        except DatabaseUnavailable:
            raise _fail("The database is not reachable.") from None
        try:
            yield KeyStore(db, cache_seconds=0), runner
        finally:
            runner.run(db.close())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Run the API (REST, MCP at /mcp). Without DATABASE_URL: an embedded PostgreSQL under ./.data."""
    from app import transport  # uvicorn and its protocols only for the command that serves

    # uvicorn re-raises SIGTERM after its graceful shutdown; make that (or a SIGTERM during
    # start-up) unwind this block, stopping the embedded database, instead of ending the process.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with _database_settings() as (settings, embedded):
        if embedded:
            _announce_embedded(settings)
        else:
            _require_head(settings)
        assert settings.database_url is not None
        assert settings.prompt_hash_key is not None
        # Workers are separate processes: they read the resolved settings from the environment.
        os.environ["DATABASE_URL"] = settings.database_url
        os.environ["PROMPT_HASH_KEY"] = settings.prompt_hash_key.get_secret_value()
        get_settings.cache_clear()
        configure_logging(settings.log_level)
        transport.run(
            "app.main:create_app", host=host, port=port, workers=workers, log_level=settings.log_level.lower()
        )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)  # a requested stop, done cleanly


def _announce_embedded(settings: Settings) -> None:
    assert settings.database_url is not None
    # The superuser's password stays off the terminal and out of captured logs (issue 12).
    typer.echo(
        f"Embedded PostgreSQL (development): {masked_password(settings.database_url)} "
        "(the full URL: agent-service devdb url)"
    )
    with _key_store(settings) as (keys, runner):
        if runner.run(keys.count()) == 0:
            record, plain = runner.run(keys.create("development", Role.ADMIN))
            typer.secho(
                f"Created a development API key (role admin, id {record.id}). It is shown only this once:\n\n"
                f"    {plain}\n\n"
                f"Use it as: Authorization: Bearer {plain}\n"
                "Make more with: uv run agent-service keys create NAME --role client",
                fg=typer.colors.GREEN,
            )


def masked_password(url: str) -> str:
    """`url` with its password, if any, as `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


@devdb_app.command("url")
def devdb_url() -> None:
    """Print the running embedded database's URL, password included (for psql and other tools)."""
    settings = _load_settings()
    if settings.database_url is not None:
        raise _fail("DATABASE_URL is set: the commands use that database, not an embedded one.")
    try:
        cluster = LocalPostgres(settings.data_dir.absolute() / "pg")
    except DevDatabaseError as exc:
        raise _fail(str(exc)) from None
    if not cluster.password_file.exists():
        raise _fail(f"There is no embedded database under {settings.data_dir} yet: `agent-service serve` makes one.")
    port = cluster.running_port()
    if port is None:
        raise _fail(
            f"The embedded database under {settings.data_dir} is not running: start `agent-service serve` "
            f"(its superuser's password is in {cluster.password_file})."
        )
    typer.echo(cluster.url(port, DATABASE_NAME))


@app.command()
def migrate() -> None:
    """Bring the configured database to the latest schema (alembic upgrade head)."""
    with _database_settings() as (settings, _):
        assert settings.database_url is not None
        try:
            migrations.upgrade(settings.database_url)
        except OSError as exc:
            raise _fail(f"Could not reach the database: {type(exc).__name__}") from None
        typer.echo(f"Database is at revision {migrations.head_revision()} (head).")


@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be deleted; delete nothing")] = False,
) -> None:
    """Run one retention purge now and print what it deleted (for cron jobs)."""
    with _database_settings() as (settings, embedded):
        if not embedded:
            _require_head(settings)
        report = asyncio.run(_purge(settings, dry_run))
    if report.skipped:
        typer.echo("Another process is purging right now; nothing done.")
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"Purge {verb}: {report.deleted['agent_task']} expired tasks, "
        f"{report.deleted['audit_event']} audit events older than {settings.audit_retention_days:g} days "
        f"({report.batches} batches, {report.seconds:.2f} s)."
    )


async def _purge(settings: Settings, dry_run: bool) -> PurgeReport:
    db = _command_database(settings, connections=2)
    await db.open()
    try:
        return await Purger(db, settings).run(dry_run=dry_run, channel=Channel.CLI)
    except DatabaseUnavailable:
        raise _fail("The database is not reachable.") from None
    finally:
        await db.close()


RateLimitOption = Annotated[
    int | None,
    typer.Option(min=0, help="requests a minute for this key (0: none); default RATE_LIMIT_PER_MINUTE"),
]
MaxRunningOption = Annotated[
    int | None,
    typer.Option(min=0, help="unfinished tasks this key may have at once (0: none); default MAX_RUNNING_TASKS"),
]


def _limits(record: ApiKeyRecord) -> str:
    def show(value: int | None) -> str:
        return "default" if value is None else ("none" if value == 0 else str(value))

    return f"rate/min={show(record.rate_limit_per_minute)} running={show(record.max_running_tasks)}"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who the key is for")],
    role: Annotated[
        Role, typer.Option(help="client: own tasks; auditor: reads all, audit log; admin: all")
    ] = Role.CLIENT,
    rate_limit: RateLimitOption = None,
    max_running: MaxRunningOption = None,
) -> None:
    """Create an API key and print it (the only time it is shown)."""
    if not name.strip() or len(name) > 200:
        raise _fail("NAME must be 1 to 200 characters")
    with _database_settings() as (settings, embedded):
        if not embedded:
            _require_head(settings)
        with _key_store(settings) as (keys, runner):
            record, plain = runner.run(
                keys.create(name.strip(), role, rate_limit_per_minute=rate_limit, max_running_tasks=max_running)
            )
    typer.echo(f"id:   {record.id}\nname: {record.name}\nrole: {record.role}\nkey:  {plain}")
    typer.echo(f"limits: {_limits(record)}")
    typer.echo("Store the key now: it cannot be shown again.", err=True)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never the keys themselves)."""
    with _database_settings() as (settings, embedded):
        if not embedded:
            _require_head(settings)
        with _key_store(settings) as (keys, runner):
            records = runner.run(keys.list())
    typer.echo(f"{'id':36}  {'role':7}  {'prefix':10}  {'created':20}  {'revoked':20}  {'limits':28}  name")
    for r in records:
        revoked = r.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if r.revoked_at else "-"
        typer.echo(
            f"{r.id!s:36}  {r.role:7}  {r.key_prefix:10}  {r.created_at:%Y-%m-%d %H:%M:%S}  {revoked:20}  "
            f"{_limits(r):28}  {r.name}"
        )


@keys_app.command("limits")
def keys_limits(
    key_id: Annotated[uuid.UUID, typer.Argument(metavar="ID", help="the key's id (keys list)")],
    rate_limit: RateLimitOption = None,
    max_running: MaxRunningOption = None,
) -> None:
    """Set a key's own limits; an option left out goes back to the server's default."""
    with _database_settings() as (settings, embedded):
        if not embedded:
            _require_head(settings)
        with _key_store(settings) as (keys, runner):
            try:
                record = runner.run(
                    keys.set_limits(key_id, rate_limit_per_minute=rate_limit, max_running_tasks=max_running)
                )
            except NotFound:
                raise _fail(f"No API key has id {key_id}.") from None
    typer.echo(f"{record.id} ({record.name}): {_limits(record)}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[uuid.UUID, typer.Argument(metavar="ID", help="the key's id (keys list)")]) -> None:
    """Revoke an API key: every running service refuses it within a second (AUTH_CACHE_SECONDS at worst)."""
    with _database_settings() as (settings, embedded):
        if not embedded:
            _require_head(settings)
        with _key_store(settings) as (keys, runner):
            try:
                record = runner.run(keys.revoke(key_id))
            except NotFound:
                raise _fail(f"No API key has id {key_id}.") from None
    typer.echo(f"Revoked {record.id} ({record.name}).")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
