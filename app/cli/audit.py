"""`agent-service audit`: check the sealed audit trail, export it, and check an export offline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from app.access.signing import AuditSigner, AuditVerifier, InvalidPublicKey
from app.cli.common import command_database, database_settings, fail, require_head
from app.domain import Actor, Channel, DatabaseUnavailable, InvalidInput
from app.service.export import verify_export
from app.service.seals import ChainReport
from app.service.trail import AuditTrail, export_window

audit_app = typer.Typer(
    help="The tamper-evident audit trail: verify its seals, export it, verify an export.", no_args_is_help=True
)

_CLI = Actor(None, None, Channel.CLI)  # the command line acts as no API key


def _iso(value: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{option} is not an ISO 8601 time: {value!r}") from None


def _with_trail[T](act: Callable[[AuditTrail], Awaitable[T]]) -> T:
    """Run `act` on the configured (or embedded) database at the head migration, with the signing key."""
    with database_settings() as (settings, embedded):
        if not embedded:
            require_head(settings)
        assert settings.audit_signing_key is not None  # required with DATABASE_URL; made for the embedded one
        signing_key = settings.audit_signing_key.get_secret_value()

        async def run() -> T:
            db = command_database(settings, connections=2)
            try:
                await db.open()
                return await act(AuditTrail(db, AuditSigner(signing_key)))
            except DatabaseUnavailable:
                raise fail("The database is not reachable.") from None
            finally:
                await db.close()

        return asyncio.run(run())


def _summary(report: ChainReport) -> str:
    if not report.seals:
        return f"No seals to check ({report.start}); {report.unsealed} events await the first seal."
    return (
        f"{report.seals} seals ({report.first_seal}..{report.last_seal}) over {report.events} events, "
        f"from {report.start}; {report.unsealed} events await the next seal."
    )


@audit_app.command("seal")
def audit_seal() -> None:
    """Seal now what the schedule would seal next (every event committed since the last seal)."""
    run = _with_trail(lambda trail: trail.seal())
    if run.skipped:
        typer.echo("Another process is sealing right now; nothing done.")
        return
    typer.echo(f"Sealed {run.events} audit events in {run.seals} seals.")


@audit_app.command("verify")
def audit_verify(
    since: Annotated[
        str | None, typer.Option(metavar="ISO", help="check only the seals with an event at or after this time")
    ] = None,
) -> None:
    """Recompute the seal chain and every sealed event's digest; exit 1 naming the first seal and event that differ."""
    start = None if since is None else _iso(since, "--since")
    report = _with_trail(lambda trail: trail.verify(since=start))
    if report.problem is not None:
        typer.echo(f"{report.seals} seals checked in full before the first difference (from {report.start}).")
        raise fail(f"Audit trail verification FAILED at {report.problem.describe()}.")
    typer.echo(f"Audit trail verified: {_summary(report)}")


@audit_app.command("export")
def audit_export(
    since: Annotated[str, typer.Option(metavar="ISO", help="the window's start (inclusive)")],
    until: Annotated[str, typer.Option(metavar="ISO", help="the window's end (exclusive)")],
    output: Annotated[Path, typer.Option(help="the JSON Lines file to write")],
) -> None:
    """Write a verifiable export of the audit trail: header, events, their seals, a signed manifest (audited)."""
    try:
        window = export_window(_iso(since, "--since"), _iso(until, "--until"))
    except InvalidInput as exc:
        raise fail(f"Not exported: {exc.message}.") from None

    async def write(trail: AuditTrail) -> int:
        count = 0
        with output.open("wb") as file:
            async for line in await trail.export(_CLI, since=window[0], until=window[1]):
                file.write(line)
                count += 1
        return count

    lines = _with_trail(write)
    typer.echo(
        f"Wrote {lines} lines to {output}. Check it with: agent-service audit verify-export {output} --public-key PEM"
    )


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the public key (PEM) that checks the seals and exports, for `verify-export --public-key`."""
    with database_settings() as (settings, _):
        assert settings.audit_signing_key is not None
        typer.echo(AuditSigner(settings.audit_signing_key.get_secret_value()).public_pem(), nl=False)


@audit_app.command("verify-export")
def audit_verify_export(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="an export (audit export, GET /audit/export)")],
    public_key: Annotated[Path, typer.Option(metavar="PEM", help="the public key's PEM file (GET /audit/public-key)")],
) -> None:
    """Check an export with the public key alone (no database); exit 1 naming the first line that differs."""
    try:
        verifier = AuditVerifier.from_pem(public_key.read_bytes())
    except OSError as exc:
        raise fail(f"Cannot read the public key: {exc.strerror}.") from None
    except InvalidPublicKey as exc:
        raise fail(f"{public_key} is {exc}.") from None
    try:
        with file.open("rb") as lines:
            check = verify_export(lines, verifier)
    except OSError as exc:
        raise fail(f"Cannot read the export: {exc.strerror}.") from None
    if not check.ok:
        raise fail(f"Export verification FAILED at line {check.line}: {check.reason}.")
    typer.echo(f"Export verified: {check.events} events in {check.seals} seals, signed by key {verifier.key_id[:16]}.")
