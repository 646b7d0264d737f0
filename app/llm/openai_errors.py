"""How an OpenAI-compatible endpoint's failures become the typed errors of `app.llm.base`.

One mapping for the whole and the streamed call alike: timeouts, lost connections, HTTP
statuses (with the provider's `retry-after-ms` or `Retry-After`), answers that are not JSON.
Messages carry the HTTP status and a documented error code only (`app.llm.error_codes`),
never the provider's text, which may quote the prompt.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping
from datetime import UTC

import httpx
import openai

from app.llm.base import ProviderError, ProviderTimeout, QuotaExceeded, RateLimited
from app.llm.error_codes import safe_error_code

RETRYABLE_STATUSES = frozenset({408, 409, 429})  # and every 5xx
# A provider asking for a longer pause than this is not waited for: the call fails at once.
MAX_RETRY_AFTER_SECONDS = 60.0


def mapped_error(name: str, timeout_seconds: float, exc: Exception, *, midway: bool = False) -> ProviderError | None:
    """The typed error for what an HTTP call to provider `name` raised (None: not the provider's
    doing, a bug). `midway`: text had been handed on already, so a lost connection is a dropped answer."""
    if isinstance(exc, (TimeoutError, openai.APITimeoutError, httpx.TimeoutException)):
        return ProviderTimeout(f"{name} did not answer within {timeout_seconds:g} s", retryable=True)
    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
        if midway:
            return ProviderError(f"{name} dropped the connection mid-answer", retryable=True)
        return ProviderError(f"{name} could not be reached", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        return status_error(name, exc)
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return ProviderError(f"{name} sent an answer that is not valid JSON")
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderError(f"{name} sent an answer that is not a valid chat completion")
    if isinstance(exc, openai.OpenAIError):  # an error event mid-stream too: its text is the provider's
        return ProviderError(f"{name} call failed ({type(exc).__name__})")
    return None


def status_error(name: str, exc: openai.APIStatusError) -> ProviderError:
    status = exc.status_code
    if status == 429 and "insufficient_quota" in (exc.code, getattr(exc, "type", None)):
        return QuotaExceeded(f"{name} reports the account's quota is exhausted")
    retry_after = retry_after_seconds(exc.response.headers)
    retryable = status in RETRYABLE_STATUSES or status >= 500
    if retry_after is not None and retry_after > MAX_RETRY_AFTER_SECONDS:
        retryable = False
    if status == 429:
        asked = f", Retry-After {round(retry_after, 3):g} s" if retry_after is not None else ""
        return RateLimited(
            f"{name} is rate limiting requests (HTTP 429{asked})", retryable=retryable, retry_after=retry_after
        )
    return ProviderError(_describe_status(name, exc), retryable=retryable, retry_after=retry_after)


def _describe_status(name: str, exc: openai.APIStatusError) -> str:
    """Status and the provider's error code, never its free-text message (it may quote the prompt).

    The code is repeated only when it is a documented one (`app.llm.error_codes`): a provider
    may put a word of the prompt where the code goes. Any other code says `other`.
    """
    code = safe_error_code(exc.code, getattr(exc, "type", None))
    return f"{name} answered HTTP {exc.status_code}" + (f" ({code})" if code is not None else "")


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """How long the provider asked us to wait: `retry-after-ms`, else `Retry-After` (seconds or HTTP date)."""
    milliseconds = _finite(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return max(milliseconds / 1000, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _finite(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
