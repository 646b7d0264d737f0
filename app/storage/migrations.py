"""Alembic, driven from the service: upgrade, downgrade, the head revision, and where a database stands.

The migration scripts live in the checkout's top-level `migrations/` (where `alembic` finds
them through `alembic.ini`); a built wheel carries the same folder inside the package, as
`app/_migrations`, so an installed service migrates without a checkout.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.storage.sql import Statement

_PACKAGE = Path(__file__).resolve().parent.parent
_PACKAGED_SCRIPTS = _PACKAGE / "_migrations"  # in a wheel (see [tool.hatch.build] in pyproject.toml)
_CHECKOUT_SCRIPTS = _PACKAGE.parent / "migrations"


def script_location() -> Path:
    """The folder of Alembic scripts: the installed package's copy, else the checkout's."""
    for folder in (_PACKAGED_SCRIPTS, _CHECKOUT_SCRIPTS):
        if (folder / "env.py").is_file():
            return folder
    raise RuntimeError(f"no Alembic migrations found (looked in {_PACKAGED_SCRIPTS} and {_CHECKOUT_SCRIPTS})")


def alembic_config(database_url: str | None = None, result_keys: str | None = None) -> Config:
    """Alembic's configuration, built here rather than read from alembic.ini (an install has none).

    `result_keys` (RESULT_ENCRYPTION_KEYS) is for the migrations that seal or open stored results.
    """
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["quiet"] = True
    if database_url is not None:
        config.attributes["database_url"] = database_url
    if result_keys is not None:
        config.attributes["result_encryption_keys"] = result_keys
    return config


def upgrade(database_url: str, revision: str = "head", *, result_keys: str | None = None) -> None:
    """Bring the database to `revision` (blocking; call it off the event loop)."""
    command.upgrade(alembic_config(database_url, result_keys), revision)


def downgrade(database_url: str, revision: str = "base", *, result_keys: str | None = None) -> None:
    command.downgrade(alembic_config(database_url, result_keys), revision)


@functools.cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no Alembic revisions found")
    return head


SCHEMA_REVISION = Statement("schema_revision", "SELECT version_num FROM alembic_version")


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a database's schema stands against the migrations this code ships."""

    revision: str | None  # None before the first migration
    head: str

    @property
    def at_head(self) -> bool:
        return self.revision == self.head

    def describe(self) -> str:
        return f"at {self.revision or 'no revision'}, head is {self.head}; run `agent-service migrate`"


async def schema_state(conn: asyncpg.Connection) -> SchemaState:
    """The Alembic revision the database is at, against the head."""
    try:
        revision = await SCHEMA_REVISION.fetchval(conn)
    except asyncpg.UndefinedTableError:
        revision = None
    return SchemaState(revision, head_revision())
