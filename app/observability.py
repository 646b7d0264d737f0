"""Logging set-up that keeps request payloads (prompts) out of every log."""

from __future__ import annotations

import logging

# Libraries that log request payloads at DEBUG: FastMCP logs tool arguments, the MCP
# SDK logs raw JSON-RPC messages, the OpenAI SDK logs request options (the messages).
# They never go below INFO, whatever LOG_LEVEL says; tests/test_privacy.py proves it.
PAYLOAD_LOGGERS = ("fastmcp", "mcp", "openai", "httpx", "httpx2", "httpcore", "httpcore2", "sse_starlette")


def keep_payloads_out_of_logs() -> None:
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    keep_payloads_out_of_logs()
