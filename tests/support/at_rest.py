"""Looking for a marker where an answer must not be: every table's bytes, and `pg_dump`.

The provider these tests stand in for is the worst one for privacy: its answer quotes the
prompt whole, so a marker in the prompt is a marker in the answer."""

from __future__ import annotations

import subprocess
from typing import Any

import asyncpg

from app.devdb.cluster import find_bin_dir
from tests.support.fake_openai import Reply, completion


def echo(body: dict[str, Any]) -> Reply:
    """A FakeOpenAI responder whose answer quotes the prompt."""
    return Reply(body=completion(text=f"You said: {body['messages'][-1]['content']}"))


def forms(marker: str) -> list[bytes]:
    """The marker as plain bytes and as the hex that bytea columns print."""
    return [marker.encode(), marker.encode().hex().encode()]


async def every_byte_stored(conn: asyncpg.Connection) -> bytes:
    """Every row of every table, as text, with each bytea column also decoded to raw bytes."""
    out: list[bytes] = []
    for table in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"):
        for row in await conn.fetch(f'SELECT * FROM "{table["tablename"]}"'):
            for value in row.values():
                out.append(bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode())
    return b"\n".join(out)


def pg_dump(database_url: str) -> bytes:
    return subprocess.run(
        [str(find_bin_dir() / "pg_dump"), "--data-only", "--inserts", database_url],
        capture_output=True,
        check=True,
    ).stdout
