"""Logging that keeps payloads out, with the request id on every line.

No prompt, message, request body, tool argument or SQL parameter is ever put in a log record, and
no traceback reaches a log, from us, the HTTP server (uvicorn, granian) or FastMCP: a traceback's
exception message (a database error quoting a value, pydantic's `input_value=…`) and a rich
traceback's local variables can carry the very arguments the rest of this module keeps out. A
record keeps only its exception's type name: `Exception in ASGI application (ValueError)`.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from typing import Any

import logfire

# Libraries that log request payloads at DEBUG: FastMCP logs tool arguments, the MCP
# SDK logs raw JSON-RPC messages, the OpenAI SDK logs request options (the messages).
# The native providers' SDKs do the same (Anthropic's and Groq's request options, botocore's request
# bodies, google-genai's and Mistral's and Cohere's debugging), and pydantic-ai may.
# They never go below INFO, whatever LOG_LEVEL says; the privacy tests prove it.
PAYLOAD_LOGGERS = (
    "fastmcp",
    "mcp",
    "openai",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "sse_starlette",
    *("anthropic", "groq", "mistralai", "cohere", "google_genai", "google.genai", "botocore", "boto3"),
    *("urllib3", "pydantic_ai"),
)
# Libraries whose INFO lines are routine: APScheduler logs two for every job run ("Running job",
# "executed successfully"), and the lease heartbeat runs every 10 s. Held at WARNING: a job that
# raises still shows (at ERROR). The service logs what its jobs did that matters itself.
# FastMCP's auth middleware logs each refused request at INFO: a flood of wrong keys would flood
# the log; the access log shows each 401 already.
ROUTINE_LOGGERS = ("apscheduler", "fastmcp.server.auth")

# The current request's id (set by the API's middleware), for log records and audit rows.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def keep_payloads_out_of_logs() -> None:
    """Hold the payload loggers at INFO and the routine ones at WARNING, and keep tracebacks out of
    every handler installed so far. Run at every app build: the HTTP server installs its own
    handlers before it builds the app, and a library may have been turned up since."""
    for names, floor in ((PAYLOAD_LOGGERS, logging.INFO), (ROUTINE_LOGGERS, logging.WARNING)):
        for name in names:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET or logger.level < floor:
                logger.setLevel(floor)
    keep_tracebacks_out_of_logs()


class TracebackFilter(logging.Filter):
    """Keeps a record's exception to its type name: drops `exc_info`, `exc_text` and `stack_info`,
    and puts ` (TypeName)` after the message. An exception given as the message or as one of its
    arguments (`log.error("failed: %s", exc)`) is replaced by its type name too.

    The other arguments stay: they are the libraries' own figures (addresses, ports, names), and
    the loggers that log payloads in them are held at INFO (PAYLOAD_LOGGERS)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0] if record.exc_info else None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        if isinstance(record.msg, BaseException):
            record.msg = _type_name(record.msg)
        if record.args:
            record.args = _without_exceptions(record.args)
        if exc_type is not None:
            record.msg = f"{str(record.msg).rstrip()} ({exc_type.__name__})"
        return True


def _type_name(value: object) -> object:
    return type(value).__name__ if isinstance(value, BaseException) else value


def _without_exceptions(args: tuple[object, ...] | Mapping[str, object]) -> Any:
    if isinstance(args, Mapping):
        return {key: _type_name(value) for key, value in args.items()}
    return tuple(_type_name(value) for value in args)


_TRACEBACK_FILTER = TracebackFilter()


def keep_tracebacks_out_of_logs(*logger_names: str) -> None:
    """Put the TracebackFilter on every handler there is so far: the root logger's, those of every
    logger created yet (uvicorn's, granian's, FastMCP's own RichHandlers, which do not propagate),
    of `logger_names`, and logging's last resort. Idempotent.

    App builds call it (`keep_payloads_out_of_logs`); a serve command that installs handlers after
    the app is built calls it again, naming the server's loggers."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logger_names)]
    loggers += [
        logger for logger in list(logging.Logger.manager.loggerDict.values()) if isinstance(logger, logging.Logger)
    ]
    handlers = {handler for logger in loggers for handler in logger.handlers}
    if logging.lastResort is not None:
        handlers.add(logging.lastResort)
    for handler in handlers:
        handler.addFilter(_TRACEBACK_FILTER)  # once: addFilter skips a filter it already has


class RequestIdFilter(logging.Filter):
    """Puts the request id on every log record, so log lines, spans and audit rows line up."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler, logfire.LogfireLoggingHandler()]
    root.setLevel(level)
    keep_payloads_out_of_logs()
