"""`agent-service holds`: legal holds, placed and released from the command line (audited, channel `cli`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from pydantic import ValidationError

from app.cli.common import fail, on_database
from app.domain import Actor, Channel, NotFound
from app.schemas import HoldCreate, LegalHold
from app.service.holds import LegalHolds

holds_app = typer.Typer(
    help="Manage legal holds: tasks kept past retention, and refused erasure, for a legal matter.",
    no_args_is_help=True,
)

# The command line acts as no API key; its actions are audited as channel `cli`.
_CLI = Actor(None, None, Channel.CLI)


def _with_holds[T](act: Callable[[LegalHolds], Awaitable[T]]) -> T:
    """Run `act` on the configured (or embedded) database at the head migration."""
    return on_database(lambda db, _: act(LegalHolds(db)))


def _show(hold: LegalHold) -> str:
    target = f"task {hold.task_id}" if hold.task_id is not None else f"owner {hold.owner_key_id}"
    return f"{hold.hold_id!s:36}  {hold.created_at:%Y-%m-%d %H:%M:%S}  {target:42}  {hold.reference}"


@holds_app.command("add")
def holds_add(
    reference: Annotated[str, typer.Option(help="the matter: 1 to 100 of letters, digits and -_./:")],
    task: Annotated[uuid.UUID | None, typer.Option(metavar="ID", help="hold this task")] = None,
    owner: Annotated[
        uuid.UUID | None, typer.Option(metavar="KEY_ID", help="hold every task of this API key, made before or after")
    ] = None,
) -> None:
    """Place a legal hold on one task (--task) or on every task of an API key (--owner)."""
    try:
        hold = HoldCreate(reference=reference, task_id=task, owner_key_id=owner)
    except ValidationError as exc:
        rules = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'hold'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise fail(f"Invalid hold ({rules}): give --reference and exactly one of --task and --owner.") from None
    try:
        placed = _with_holds(lambda holds: holds.place(_CLI, hold))
    except NotFound as exc:
        raise fail(f"Not placed: {exc.message}.") from None
    typer.echo(f"Placed legal hold {placed.hold_id} ({'task' if task else 'owner'} {task or owner}).")


@holds_app.command("list")
def holds_list() -> None:
    """List the legal holds in force, newest first."""

    async def every(holds: LegalHolds) -> list[LegalHold]:
        found: list[LegalHold] = []
        cursor = None
        while True:
            page = await holds.list(cursor=cursor, limit=100)
            found.extend(page.items)
            if (cursor := page.next_cursor) is None:
                return found

    typer.echo(f"{'id':36}  {'placed':19}  {'target':42}  reference")
    for hold in _with_holds(every):
        typer.echo(_show(hold))


@holds_app.command("release")
def holds_release(
    hold_id: Annotated[uuid.UUID, typer.Argument(metavar="HOLD_ID", help="the hold's id (holds list)")],
) -> None:
    """Release a legal hold: its tasks are erasable again, and purged once expired. The hold stays as history."""
    try:
        _with_holds(lambda holds: holds.release(_CLI, hold_id))
    except NotFound:
        raise fail(f"No legal hold in force has id {hold_id}.") from None
    typer.echo(f"Released legal hold {hold_id}.")
