"""The `agent-service` command: serve, migrate, purge, and the command groups (keys, holds, audit, devdb)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Annotated

import typer

from app.cli.audit import audit_app
from app.cli.common import command_database, database_settings, fail, key_store, require_head, result_vault
from app.cli.devdb import devdb_app, masked_password
from app.cli.encryption import encryption_app
from app.cli.holds import holds_app
from app.cli.keys import keys_app
from app.domain import Channel, DatabaseUnavailable, Role
from app.service.retention import Purger, PurgeReport
from app.settings import Settings, get_settings
from app.storage import migrations
from app.telemetry.logs import configure_logging

app = typer.Typer(
    help="LLM Agent Service: run LLM tasks over REST and MCP, read results back, audited.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(keys_app, name="keys")
app.add_typer(holds_app, name="holds")
app.add_typer(encryption_app, name="encryption")
app.add_typer(audit_app, name="audit")
app.add_typer(devdb_app, name="devdb")


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
    with database_settings() as (settings, embedded):
        if embedded:
            _announce_embedded(settings)
        else:
            require_head(settings)
        assert settings.database_url is not None
        assert settings.prompt_hash_key is not None
        assert settings.audit_signing_key is not None
        # Workers are separate processes: they read the resolved settings from the environment.
        os.environ["DATABASE_URL"] = settings.database_url
        os.environ["PROMPT_HASH_KEY"] = settings.prompt_hash_key.get_secret_value()
        os.environ["AUDIT_SIGNING_KEY"] = settings.audit_signing_key.get_secret_value()
        if settings.result_encryption_keys is not None:
            os.environ["RESULT_ENCRYPTION_KEYS"] = settings.result_encryption_keys.get_secret_value()
        result_vault(settings)  # a key provider that cannot start is a plain error here, not a traceback
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
    with key_store(settings) as (keys, runner):
        if runner.run(keys.count()) == 0:
            record, plain, webhook_secret = runner.run(keys.create("development", Role.ADMIN))
            typer.secho(
                f"Created a development API key (role admin, id {record.id}). It is shown only this once:\n\n"
                f"    {plain}\n\n"
                f"Use it as: Authorization: Bearer {plain}\n"
                f"Its webhook signing secret (docs/webhooks.md): {webhook_secret}\n"
                "Make more with: uv run agent-service keys create NAME --role client",
                fg=typer.colors.GREEN,
            )


@app.command()
def migrate() -> None:
    """Bring the configured database to the latest schema (alembic upgrade head)."""
    with database_settings() as (settings, _):
        assert settings.database_url is not None
        try:
            keys = settings.result_encryption_keys
            migrations.upgrade(settings.database_url, result_keys=keys.get_secret_value() if keys else None)
        except OSError as exc:
            raise fail(f"Could not reach the database: {type(exc).__name__}") from None
        typer.echo(f"Database is at revision {migrations.head_revision()} (head).")


@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be deleted; delete nothing")] = False,
) -> None:
    """Run one retention purge now and print what it deleted (for cron jobs)."""
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        report = asyncio.run(_purge(settings, dry_run))
    if report.skipped:
        typer.echo("Another process is purging right now; nothing done.")
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"Purge {verb}: {report.deleted['agent_task']} expired tasks, "
        f"{report.deleted['audit_event']} audit events older than {settings.audit_retention_days:g} days "
        f"in {report.deleted['audit_seal']} whole seals "
        f"({report.batches} batches, {report.seconds:.2f} s)."
    )


async def _purge(settings: Settings, dry_run: bool) -> PurgeReport:
    db = command_database(settings, connections=2)
    await db.open()
    try:
        return await Purger(db, settings).run(dry_run=dry_run, channel=Channel.CLI)
    except DatabaseUnavailable:
        raise fail("The database is not reachable.") from None
    finally:
        await db.close()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
