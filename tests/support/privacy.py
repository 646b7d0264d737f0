"""What the privacy tests look through for the marker: every stored row, every span, and a key
that may scrape /metrics."""

from __future__ import annotations

import asyncpg

from app.domain import Role


async def everything_stored(conn: asyncpg.Connection) -> str:
    """Every row of every table in the database, as text."""
    tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    dumps = []
    for table in tables:
        rows = await conn.fetch(f'SELECT t::text AS row FROM "{table["tablename"]}" t')
        dumps += [r["row"] for r in rows]
    return "\n".join(dumps)


async def scraper_headers(service) -> dict[str, str]:
    """A key that may read /metrics (auditor or admin only)."""
    _, plain, _ = await service.keys.create("scraper", Role.AUDITOR)
    return {"Authorization": f"Bearer {plain}"}


def span_text(spans) -> str:
    """Every span and logfire log: names, attributes, events, status messages."""
    parts = []
    for span in spans.get_finished_spans():
        parts += [span.name, repr(dict(span.attributes or {})), repr(span.status.description)]
        parts += [f"{event.name} {dict(event.attributes or {})!r}" for event in span.events]
    return "\n".join(parts)
