"""`agent-service devdb`: the embedded development database."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import typer

from app.cli.common import fail, load_settings
from app.devdb.cluster import DevDatabaseError, LocalPostgres
from app.devdb.embedded import DATABASE_NAME

devdb_app = typer.Typer(
    help="The embedded development database (used while DATABASE_URL is unset).", no_args_is_help=True
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
    settings = load_settings()
    if settings.database_url is not None:
        raise fail("DATABASE_URL is set: the commands use that database, not an embedded one.")
    try:
        cluster = LocalPostgres(settings.data_dir.absolute() / "pg")
    except DevDatabaseError as exc:
        raise fail(str(exc)) from None
    if not cluster.password_file.exists():
        raise fail(f"There is no embedded database under {settings.data_dir} yet: `agent-service serve` makes one.")
    port = cluster.running_port()
    if port is None:
        raise fail(
            f"The embedded database under {settings.data_dir} is not running: start `agent-service serve` "
            f"(its superuser's password is in {cluster.password_file})."
        )
    typer.echo(cluster.url(port, DATABASE_NAME))
