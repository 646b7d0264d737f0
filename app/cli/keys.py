"""`agent-service keys`: API keys, stored hashed; the plain key is shown once."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from app.cli.common import database_settings, fail, key_store, require_head
from app.domain import ApiKeyRecord, NotFound, Role

keys_app = typer.Typer(help="Manage API keys (stored hashed; the plain key is shown once).", no_args_is_help=True)

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
        raise fail("NAME must be 1 to 200 characters")
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        with key_store(settings) as (keys, runner):
            record, plain = runner.run(
                keys.create(name.strip(), role, rate_limit_per_minute=rate_limit, max_running_tasks=max_running)
            )
    typer.echo(f"id:   {record.id}\nname: {record.name}\nrole: {record.role}\nkey:  {plain}")
    typer.echo(f"limits: {_limits(record)}")
    typer.echo("Store the key now: it cannot be shown again.", err=True)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never the keys themselves)."""
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        with key_store(settings) as (keys, runner):
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
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        with key_store(settings) as (keys, runner):
            try:
                record = runner.run(
                    keys.set_limits(key_id, rate_limit_per_minute=rate_limit, max_running_tasks=max_running)
                )
            except NotFound:
                raise fail(f"No API key has id {key_id}.") from None
    typer.echo(f"{record.id} ({record.name}): {_limits(record)}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[uuid.UUID, typer.Argument(metavar="ID", help="the key's id (keys list)")]) -> None:
    """Revoke an API key: every running service refuses it within a second (AUTH_CACHE_SECONDS at worst)."""
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        with key_store(settings) as (keys, runner):
            try:
                record = runner.run(keys.revoke(key_id))
            except NotFound:
                raise fail(f"No API key has id {key_id}.") from None
    typer.echo(f"Revoked {record.id} ({record.name}).")
