"""Named SQL statements with named parameters, for asyncpg.

asyncpg speaks PostgreSQL's positional `$1, $2, ...` only. A statement here is written with
`:name` parameters, compiled once at import to `$n`, and called with keywords, so every
argument is bound by name and no number means two things. (`::type` casts are left alone.)

Why not aiosql, which does this from `.sql` files: its asyncpg adapter looks the connection's
attributes up with `dir()` on every call and exposes untyped methods, and our statements share
fragments (the verdict of an audited lookup, copying an answer into a new task) that plain
`.sql` files would repeat. This is the one part of it we need.
"""

from __future__ import annotations

import re
from dataclasses import fields
from enum import StrEnum
from typing import Any

import asyncpg

# `:name`, but not the second colon of a `::type` cast nor a colon inside a cast's name.
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


class Statement:
    """One statement: its name (for errors and traces), its compiled text and its parameters in `$n` order."""

    __slots__ = ("_names", "name", "params", "sql")

    def __init__(self, name: str, sql: str) -> None:
        params: list[str] = []

        def number(match: re.Match[str]) -> str:
            param = match.group(1)
            if param not in params:
                params.append(param)
            return f"${params.index(param) + 1}"

        self.name = name
        self.sql = _PARAMETER.sub(number, sql)
        self.params = tuple(params)
        self._names = frozenset(params)

    def args(self, values: dict[str, Any]) -> tuple[Any, ...]:
        """The values in `$n` order; every parameter must be given, and nothing else."""
        if values.keys() != self._names:
            missing = sorted(self._names - values.keys())
            extra = sorted(values.keys() - self._names)
            raise TypeError(f"statement {self.name}: missing {missing}, unexpected {extra}")
        return tuple(values[name] for name in self.params)

    async def fetch(self, conn: asyncpg.Connection, **values: Any) -> list[asyncpg.Record]:
        return await conn.fetch(self.sql, *self.args(values))  # type: ignore[no-any-return]

    async def fetchrow(self, conn: asyncpg.Connection, **values: Any) -> asyncpg.Record | None:
        return await conn.fetchrow(self.sql, *self.args(values))

    async def fetchval(self, conn: asyncpg.Connection, **values: Any) -> Any:
        return await conn.fetchval(self.sql, *self.args(values))

    async def execute(self, conn: asyncpg.Connection, **values: Any) -> str:
        return await conn.execute(self.sql, *self.args(values))  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Statement({self.name!r}, params={self.params})"


def sql_values(values: tuple[StrEnum, ...]) -> str:
    """`'a', 'b'`: enum values as SQL literals, for `IN (...)` lists written once."""
    return ", ".join(f"'{value}'" for value in values)


def column_list(record: type[Any], prefix: str = "") -> str:
    """`a, b, c` in the dataclass's field order, so `Record.from_row(row)` lines up."""
    return ", ".join(f"{prefix}{f.name}" for f in fields(record))
