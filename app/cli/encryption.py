"""`agent-service encryption`: the keys that seal results at rest, and moving rows to the active one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import typer

from app.access.encryption import new_key_entry, valid_key_id
from app.cli.common import fail, on_database, result_vault
from app.service.encryption import DEFAULT_BATCH_ROWS, ResultKeys
from app.settings import Settings
from app.settings.secrets import RESULT_KEY_ID_RULE
from app.storage.database import Database

encryption_app = typer.Typer(
    help="Results sealed at rest: which keys seal how many rows, re-encryption to the active key, new keys.",
    no_args_is_help=True,
)


def _with_keys[T](act: Callable[[ResultKeys], Awaitable[T]]) -> tuple[T, str, tuple[str, ...]]:
    """Run `act` on the configured (or embedded) database; also the active and configured key ids."""
    rings: list[tuple[str, tuple[str, ...]]] = []

    def keys_on(db: Database, settings: Settings) -> Awaitable[T]:
        vault = result_vault(settings)
        rings.append((vault.key_id, vault.cipher.key_ids))
        return act(ResultKeys(db, vault))

    done = on_database(keys_on)
    return done, *rings[0]


@encryption_app.command("status")
def encryption_status() -> None:
    """Per key id: how many rows it still seals, and the latest expires_at among them."""
    uses, active, configured = _with_keys(lambda keys: keys.status())
    typer.echo(f"{'key id':32}  {'rows':>10}  {'live':>10}  {'latest expires_at':25}  state")
    for use in uses:
        state = "active" if use.key_id == active else ("configured" if use.key_id in configured else "retired")
        latest = f"{use.latest_expiry:%Y-%m-%d %H:%M:%S%z}" if use.latest_expiry else "-"
        typer.echo(f"{use.key_id:32}  {use.rows:>10}  {use.live_rows:>10}  {latest:25}  {state}")
    used = {use.key_id for use in uses}
    for key_id in (key_id for key_id in configured if key_id not in used):
        state = "active" if key_id == active else "seals nothing: can be retired"
        typer.echo(f"{key_id:32}  {0:>10}  {0:>10}  {'-':25}  {state}")


@encryption_app.command("reencrypt")
def encryption_reencrypt(
    batch_rows: Annotated[int, typer.Option(min=1, max=10_000, help="rows per short transaction")] = DEFAULT_BATCH_ROWS,
    pause_ms: Annotated[int, typer.Option(min=0, help="pause between batches, to spare a busy database")] = 0,
) -> None:
    """Seal every row that needs an older key with the active one (the first of RESULT_ENCRYPTION_KEYS), online."""
    report, active, _ = _with_keys(lambda keys: keys.reencrypt(batch_rows=batch_rows, pause_seconds=pause_ms / 1000))
    typer.echo(
        f"Re-encrypted {report.resealed} rows to key {active!r} ({report.batches} batches, {report.passes} passes)."
    )
    if report.unreadable:
        typer.echo(
            f"{report.unreadable} rows could not be opened (their key is not configured, or they were altered) "
            "and were left as they are."
        )


@encryption_app.command("new-key")
def encryption_new_key(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help=f"the new key's id: {RESULT_KEY_ID_RULE}")],
) -> None:
    """Print a fresh `id:base64` entry, to put first in RESULT_ENCRYPTION_KEYS (then restart, then reencrypt)."""
    if not valid_key_id(key_id):
        raise fail(f"A key id is {RESULT_KEY_ID_RULE}.")
    typer.echo(new_key_entry(key_id))
