"""The HTTP server: uvicorn with httptools, bounded in what a request may send and how slowly.

uvicorn limits neither the size of a request's head nor the time it may take to arrive
(issue 12: an 8 MB header and 50,000 headers were served; one header line a second, or 10
bytes a second of body, held a connection as long as the client liked; five connections of
unfinished headers cost the process 94 MB). So each connection here is uvicorn's own
httptools protocol with four guards in front of its parser:

- the request target may be at most `HTTP_MAX_REQUEST_LINE_BYTES` (else 414), the header
  lines at most `HTTP_MAX_HEADER_BYTES` together and `HTTP_MAX_HEADERS` in number (else 431);
  the head is also counted as raw bytes as it arrives, so that a header that never ends is
  cut off at the limit instead of growing in the parser;
- the whole head must arrive within `HTTP_HEADER_TIMEOUT_SECONDS` of its first byte (or of
  the connection, for its first request), else 408 and the connection is closed;
- the whole body must arrive within `HTTP_BODY_TIMEOUT_SECONDS` of the end of the head, else
  408 (the app sees a disconnect) and the connection is closed.

Every answer here closes the connection, and none says more than the rule that was broken.
Why this over granian or uvicorn's h11, with the measurements: docs/operations.md.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

import httptools
import uvicorn
from uvicorn.config import LOGGING_CONFIG, Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.settings import Settings, get_settings
from app.telemetry.access_log import DropQueryString

# Bytes of a head that are neither the target nor a header's name or value: the method,
# the version and the line ends, at most this much for the request line and per header.
_REQUEST_LINE_OVERHEAD = 32
_HEADER_LINE_OVERHEAD = 4  # ": " and CRLF
GRACEFUL_SHUTDOWN_SECONDS = 10

logger = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class HttpLimits:
    """What one request may send, and how slowly."""

    max_request_line_bytes: int
    max_header_bytes: int
    max_headers: int
    header_timeout_seconds: float
    body_timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_request_line_bytes=settings.http_max_request_line_bytes,
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout_seconds=settings.http_header_timeout_seconds,
            body_timeout_seconds=settings.http_body_timeout_seconds,
        )

    @property
    def max_head_bytes(self) -> int:
        """The most raw bytes a head within every other limit can take."""
        return (
            self.max_request_line_bytes
            + _REQUEST_LINE_OVERHEAD
            + self.max_header_bytes
            + self.max_headers * _HEADER_LINE_OVERHEAD
            + 2
        )


@cache
def _limits() -> HttpLimits:
    """Read once per process: a worker builds its settings from the environment `serve` set."""
    return HttpLimits.from_settings(get_settings())


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request over a limit."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on a request's head and timeouts on its arrival."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = _limits()
        self._reading_head = True
        self._head_bytes = 0
        self._target_bytes = 0
        self._header_bytes = 0
        self._header_count = 0
        self._body_pending = False  # the head is in, the body's end is not
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # -- the connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is a slow head too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        if self._reading_head:
            # Counted after parsing: a chunk that also held the end of the head was checked
            # header by header; one that did not may not take the head past its limit.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(_headers_too_large())
        elif self._body_pending and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_seconds, self._body_timed_out)

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = self._target_bytes = self._header_bytes = self._header_count = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._target_bytes += len(url)
        if self._target_bytes > self.limits.max_request_line_bytes:
            raise _Refused(
                414, "uri_too_long", f"the request target is over {self.limits.max_request_line_bytes} bytes"
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > self.limits.max_headers or self._header_bytes > self.limits.max_header_bytes:
            raise _headers_too_large()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._body_pending = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_pending = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # -- timeouts and refusals ---------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_timed_out)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head trickles in behind an answer in progress: that answer ends
            # the connection when it is done.
            self.cycle.keep_alive = False
            return
        self._refuse(
            _Refused(408, "request_timeout", f"the request's head took over {self.limits.header_timeout_seconds:g} s")
        )

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or not self._body_pending:
            return
        if not cycle.response_started:
            self._write_refusal(
                _Refused(408, "request_timeout", f"the request's body took over {self.limits.body_timeout_seconds:g} s")
            )
        # The app stops waiting for the rest (it reads a disconnect) and its answer goes nowhere.
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()

    def _refuse(self, refusal: _Refused) -> None:
        """Answer `refusal` (unless another answer is on the wire) and close the connection."""
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self._write_refusal(refusal)
        self.transport.close()

    def _write_refusal(self, refusal: _Refused) -> None:
        client = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        self.logger.info("%sRefused a request: %s (%d)", client, refusal.message, refusal.status)
        body = json.dumps({"code": refusal.code, "message": refusal.message}).encode()
        content = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))


def _headers_too_large() -> _Refused:
    limits = _limits()
    return _Refused(
        431,
        "request_header_fields_too_large",
        f"the request's headers are over {limits.max_header_bytes} bytes or {limits.max_headers} fields",
    )


def logging_config() -> dict[str, Any]:
    """uvicorn's logging configuration, with the query string taken out of every access line."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"drop_query_string": {"()": f"{DropQueryString.__module__}.{DropQueryString.__qualname__}"}}
    config["loggers"]["uvicorn.access"]["filters"] = ["drop_query_string"]
    return config


def run(app: str, *, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve the ASGI app factory `app` until SIGTERM or SIGINT, with the guarded protocol."""
    uvicorn.run(
        app,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=GuardedHttpToolsProtocol,
        ws="none",  # the API has no WebSocket route; an upgrade request is served as plain HTTP
        log_level=log_level,
        log_config=logging_config(),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
