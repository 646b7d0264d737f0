"""Logging that keeps payloads out, with the request id on every line.

No prompt, message, request body, tool argument or SQL parameter is ever put in a log record.
"""

from __future__ import annotations

import contextvars
import logging

import logfire

# Libraries that log request payloads at DEBUG: FastMCP logs tool arguments, the MCP
# SDK logs raw JSON-RPC messages, the OpenAI SDK logs request options (the messages).
# They never go below INFO, whatever LOG_LEVEL says; the privacy tests prove it.
PAYLOAD_LOGGERS = ("fastmcp", "mcp", "openai", "httpx", "httpx2", "httpcore", "httpcore2", "sse_starlette")

# The current request's id (set by the API's middleware), for log records and audit rows.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def keep_payloads_out_of_logs() -> None:
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


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
