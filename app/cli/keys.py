"""`agent-service keys`: API keys, stored hashed; the plain key is shown once.

Creating, changing and revoking go through `app.service.key_admin`, the rules the console's keys
page follows too, and each is recorded in the audit log (channel `cli`, no actor key)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

import typer

from app.cli.common import database_settings, fail, key_store, require_head
from app.domain import Actor, ApiKeyRecord, Channel, InvalidInput, NotFound, Role, StoreOutput
from app.service.key_admin import KeySettings, create_key, set_key_limits

# Who a key-management act from the command line is recorded as: no key, channel `cli`.
CLI_ACTOR = Actor(None, None, Channel.CLI)

keys_app = typer.Typer(help="Manage API keys (stored hashed; the plain key is shown once).", no_args_is_help=True)

RateLimitOption = Annotated[
    int | None,
    typer.Option(min=0, help="requests a minute for this key (0: none); default RATE_LIMIT_PER_MINUTE"),
]
MaxRunningOption = Annotated[
    int | None,
    typer.Option(min=0, help="unfinished tasks this key may have at once (0: none); default MAX_RUNNING_TASKS"),
]

StoreOutputOption = Annotated[
    StoreOutput,
    typer.Option(help="never: no answer of this key is ever written (every task acts as store: false)"),
]
MaxRetentionOption = Annotated[
    float | None,
    typer.Option(help="this key's retention ceiling in days (> 0), below RESULT_RETENTION_DAYS; default none"),
]


MonthlyTokensOption = Annotated[
    int | None,
    typer.Option(min=0, help="tokens this key may spend a calendar month (UTC); keys limits: 0 removes it"),
]
MonthlyUsdOption = Annotated[
    float | None,
    typer.Option(min=0, help="US dollars this key may spend a calendar month (UTC); keys limits: 0 removes it"),
]


def _usd(value: float | None) -> Decimal | None:
    """A dollar budget as the exact decimal typed (0: none); its bounds are the key rules' own
    (`app.service.key_admin.KeySettings`)."""
    return None if value is None or value == 0 else Decimal(str(value))


def _budgets(record: ApiKeyRecord) -> str:
    tokens = "none" if record.monthly_token_budget is None else str(record.monthly_token_budget)
    usd = "none" if record.monthly_usd_budget is None else f"{record.monthly_usd_budget.normalize():f}"
    return f"monthly tokens={tokens} usd={usd}"


def _limits(record: ApiKeyRecord) -> str:
    def show(value: int | None) -> str:
        return "default" if value is None else ("none" if value == 0 else str(value))

    return f"rate/min={show(record.rate_limit_per_minute)} running={show(record.max_running_tasks)}"


def _policy(record: ApiKeyRecord) -> str:
    days = "default" if record.max_retention_days is None else f"{record.max_retention_days:g}"
    return f"store={record.store_output} retention-days={days}"


def _check_retention(days: float | None) -> None:
    # Not `min=`: typer's bounds are inclusive, and 0 days would keep nothing for a moment.
    if days is not None and not days > 0:
        raise fail("--max-retention-days must be greater than 0")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who the key is for")],
    role: Annotated[
        Role, typer.Option(help="client: own tasks; auditor: reads all, audit log; admin: all")
    ] = Role.CLIENT,
    rate_limit: RateLimitOption = None,
    max_running: MaxRunningOption = None,
    store_output: StoreOutputOption = StoreOutput.ALLOWED,
    max_retention_days: MaxRetentionOption = None,
    monthly_tokens: MonthlyTokensOption = None,
    monthly_usd: MonthlyUsdOption = None,
) -> None:
    """Create an API key and print it (the only time it is shown)."""
    if not name.strip() or len(name) > 200:
        raise fail("NAME must be 1 to 200 characters")
    _check_retention(max_retention_days)
    usd_budget = _usd(monthly_usd)
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        with key_store(settings) as (keys, runner):
            try:
                record, plain, webhook_secret = runner.run(
                    create_key(
                        keys,
                        CLI_ACTOR,
                        name,
                        role,
                        KeySettings(
                            rate_limit,
                            max_running,
                            store_output,
                            max_retention_days,
                            monthly_tokens or None,
                            usd_budget,
                        ),
                    )
                )
            except InvalidInput as refused:
                raise fail(refused.message) from None
    typer.echo(f"id:   {record.id}\nname: {record.name}\nrole: {record.role}\nkey:  {plain}")
    typer.echo(f"limits: {_limits(record)}")
    typer.echo(f"policy: {_policy(record)}")
    typer.echo(f"budget: {_budgets(record)}")
    typer.echo(f"webhook secret: {webhook_secret}")
    typer.echo("Store the key and its webhook secret now: they cannot be shown again.", err=True)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never the keys themselves)."""
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        with key_store(settings) as (keys, runner):
            records = runner.run(keys.list())
    typer.echo(
        f"{'id':36}  {'role':7}  {'prefix':10}  {'created':20}  {'revoked':20}  {'limits':32}  {'policy':34}  "
        f"{'budget':36}  name"
    )
    for r in records:
        revoked = r.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if r.revoked_at else "-"
        typer.echo(
            f"{r.id!s:36}  {r.role:7}  {r.key_prefix:10}  {r.created_at:%Y-%m-%d %H:%M:%S}  {revoked:20}  "
            f"{_limits(r):32}  {_policy(r):34}  {_budgets(r):36}  {r.name}"
        )


@keys_app.command("limits")
def keys_limits(
    key_id: Annotated[uuid.UUID, typer.Argument(metavar="ID", help="the key's id (keys list)")],
    rate_limit: RateLimitOption = None,
    max_running: MaxRunningOption = None,
    store_output: Annotated[
        StoreOutput | None,
        typer.Option(help="never: no answer of this key is ever written; left out: unchanged"),
    ] = None,
    max_retention_days: Annotated[
        float | None,
        typer.Option(help="this key's retention ceiling in days; 0 removes it; left out: unchanged"),
    ] = None,
    monthly_tokens: MonthlyTokensOption = None,
    monthly_usd: MonthlyUsdOption = None,
) -> None:
    """Set a key's own limits, data policy and budgets. A limit left out goes back to the server's
    default; the data policy (--store-output, --max-retention-days) and the budgets
    (--monthly-tokens, --monthly-usd) left out stay as they are: a privacy setting or a spending
    cap is never loosened by a command that did not name it."""
    if max_retention_days is not None and max_retention_days < 0:
        raise fail("--max-retention-days must be 0 (no ceiling) or greater")
    usd_budget = _usd(monthly_usd)
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        with key_store(settings) as (keys, runner):
            try:
                record = runner.run(
                    set_key_limits(
                        keys,
                        CLI_ACTOR,
                        key_id,
                        rate_limit_per_minute=rate_limit,
                        max_running_tasks=max_running,
                        store_output=store_output,
                        max_retention_days=max_retention_days,
                        monthly_token_budget=monthly_tokens,  # None: unchanged; 0: removed
                        monthly_usd_budget=None if monthly_usd is None else (usd_budget or Decimal(0)),
                    )
                )
            except NotFound:
                raise fail(f"No API key has id {key_id}.") from None
            except InvalidInput as refused:
                raise fail(refused.message) from None
    typer.echo(f"{record.id} ({record.name}): {_limits(record)} {_policy(record)} {_budgets(record)}")


@keys_app.command("webhook-secret")
def keys_webhook_secret(
    key_id: Annotated[uuid.UUID, typer.Argument(metavar="ID", help="the key's id (keys list)")],
    grace_hours: Annotated[
        float,
        typer.Option(min=0, max=168, help="hours the old secret keeps signing too (both signatures are sent); 0: none"),
    ] = 24.0,
) -> None:
    """Give a key a new webhook signing secret and print it (the only time it is shown)."""
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        with key_store(settings) as (keys, runner):
            try:
                record, secret = runner.run(keys.rotate_webhook_secret(key_id, grace_seconds=grace_hours * 3600))
            except NotFound:
                raise fail(f"No active API key has id {key_id}.") from None
    typer.echo(f"id:             {record.id}\nwebhook secret: {secret}")
    if grace_hours > 0:
        typer.echo(f"The previous secret, if any, keeps signing for {grace_hours:g} hours.", err=True)
    typer.echo("Store the secret now: it cannot be shown again.", err=True)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[uuid.UUID, typer.Argument(metavar="ID", help="the key's id (keys list)")]) -> None:
    """Revoke an API key: every running service refuses it within a second (AUTH_CACHE_SECONDS at worst)."""
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        with key_store(settings) as (keys, runner):
            try:
                record = runner.run(keys.revoke(key_id, actor=CLI_ACTOR))
            except NotFound:
                raise fail(f"No API key has id {key_id}.") from None
    typer.echo(f"Revoked {record.id} ({record.name}).")
