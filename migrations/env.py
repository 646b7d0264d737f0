"""Alembic environment: async, reading the same settings as the service."""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import app.storage.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from app.devdb.embedded import embedded_database
from app.settings import get_settings
from app.storage.database import sqlalchemy_url
from app.storage.partitions import PREFIX as PARTITION_PREFIX

config = context.config

# Called from `alembic` on the command line: log like Alembic does. Called from the
# service (`app.storage.migrations`), leave the service's logging alone.
if config.config_file_name is not None and not config.attributes.get("quiet"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """`alembic check` compares the tables of the models: the partitions of audit_event (made by the
    service, one a day) are not among them."""
    return not (type_ == "table" and name is not None and name.startswith(PARTITION_PREFIX))


def run_migrations_offline() -> None:
    """Emit SQL for a reviewer or DBA instead of running it (`alembic upgrade head --sql`)."""
    url = config.attributes.get("database_url") or get_settings().database_url or "postgresql://"
    context.configure(
        url=sqlalchemy_url(url),
        target_metadata=target_metadata,
        include_name=include_name,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_server_default=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    engine = create_async_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    url = config.attributes.get("database_url") or get_settings().database_url
    if url is not None:
        asyncio.run(run_async_migrations(url))
        return
    # No DATABASE_URL: the same embedded development database `agent-service serve` uses.
    with embedded_database(get_settings().data_dir) as url:
        asyncio.run(run_async_migrations(url))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
