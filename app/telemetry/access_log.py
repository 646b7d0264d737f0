"""Access log lines carry the path, never the query string.

A caller may put anything in a query string, a prompt included (issue 12: `POST
/tools/run_agent_task?prompt=…` reached the access log whole). The API answers an unknown
query parameter with a 422, but the server writes its access line either way, so the query
is taken out of the line itself, before any handler formats it.
"""

from __future__ import annotations

import logging
from typing import TypeIs


def without_query(target: str) -> str:
    """`/path?query` as `/path` (a target without a query is returned as it is)."""
    return target.partition("?")[0]


class DropQueryString(logging.Filter):
    """Rewrites every request target among a record's arguments to its path.

    uvicorn's access records are `'%s - "%s %s HTTP/%s" %d'` with (client, method, path and
    query, HTTP version, status); any argument that is a request target (it starts with
    `/`) loses its query, whatever the record's shape. A logger filter, named in the
    server's logging configuration, so that every worker process installs it when it
    configures its logging.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_is_target_with_query(arg) for arg in args):
            record.args = tuple(without_query(arg) if _is_target_with_query(arg) else arg for arg in args)
        return True


def _is_target_with_query(arg: object) -> TypeIs[str]:
    return isinstance(arg, str) and arg.startswith("/") and "?" in arg
