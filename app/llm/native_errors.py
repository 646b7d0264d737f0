"""How pydantic-ai's typed model errors become ours, the same for every native vendor.

pydantic-ai already sorts each vendor's failures into categories (`ModelRateLimitError`,
`ModelQuotaExceededError`, `ModelOverloadedError`, ...; an HTTP one is also a `ModelHTTPError`
with its status), so one mapping serves Anthropic, Gemini, Groq, Mistral, Bedrock and Cohere:

| pydantic-ai | ours | retried |
| --- | --- | --- |
| `ModelQuotaExceededError` (HTTP 402, `insufficient_quota`, Anthropic's `billing_error`, ...) | `quota_exceeded` | no |
| `ModelRateLimitError` (429, `ThrottlingException`, `RESOURCE_EXHAUSTED`) | `rate_limited` | yes |
| `ModelTimeoutError`, our attempt's own deadline | `timeout` | yes |
| `ModelUnavailableError`, `ModelOverloadedError` (503, Anthropic's 529), `ModelServerError` | `provider_error` | yes |
| `ModelConnectionError` (refused, reset, dropped mid-answer) | `provider_error` | yes |
| any other `ModelHTTPError`: 408 and 409 retried, other 4xx not | `provider_error` | 408/409 |
| `UnexpectedModelBehavior` (an answer that is not one), anything else of pydantic-ai's | `provider_error` | no |

A wait the provider asks for longer than 60 s is not waited for, as for OpenAI. Messages carry the
HTTP status and a documented error code only (`app.llm.error_codes`), never the body pydantic-ai
puts into its own messages (it may quote the prompt).
"""

from __future__ import annotations

from pydantic_ai.exceptions import (
    AgentRunError,
    ModelAPIError,
    ModelConnectionError,
    ModelHTTPError,
    ModelOverloadedError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelServerError,
    ModelTimeoutError,
    ModelUnavailableError,
    UnexpectedModelBehavior,
)

from app.llm.base import ProviderError, ProviderTimeout, QuotaExceeded, RateLimited
from app.llm.error_codes import safe_error_code
from app.llm.openai_errors import MAX_RETRY_AFTER_SECONDS, RETRYABLE_STATUSES


def native_error(
    name: str, timeout_seconds: float, exc: BaseException, *, midway: bool = False
) -> ProviderError | None:
    """Our typed error for what a pydantic-ai model call to provider `name` raised; None: not the
    provider's doing (a bug, a cancel), to be raised as it is. `midway`: text had been handed on."""
    if isinstance(exc, ModelTimeoutError | TimeoutError):
        return ProviderTimeout(f"{name} did not answer within {timeout_seconds:g} s", retryable=True)
    if isinstance(exc, ModelQuotaExceededError):
        return QuotaExceeded(f"{name} reports the account's quota is exhausted")
    if isinstance(exc, ModelConnectionError):
        if midway or exc.in_stream:
            return ProviderError(f"{name} dropped the connection mid-answer", retryable=True)
        return ProviderError(f"{name} could not be reached", retryable=True)
    if isinstance(exc, ModelAPIError):
        return _api_error(name, exc)
    if isinstance(exc, UnexpectedModelBehavior):
        return ProviderError(f"{name} sent an answer that is not a valid model response")
    if isinstance(exc, AgentRunError):
        return ProviderError(f"{name} call failed ({type(exc).__name__})")
    return None


def _api_error(name: str, exc: ModelAPIError) -> ProviderError:
    status = exc.status_code if isinstance(exc, ModelHTTPError) else None
    retry_after = exc.retry_after if exc.retry_after is None else max(float(exc.retry_after), 0.0)
    transient = isinstance(exc, ModelRateLimitError | ModelUnavailableError | ModelOverloadedError | ModelServerError)
    retryable = transient or (status is not None and (status in RETRYABLE_STATUSES or status >= 500))
    if retry_after is not None and retry_after > MAX_RETRY_AFTER_SECONDS:
        retryable = False
    code = safe_error_code(exc.provider_error_code, exc.provider_error_type)
    if isinstance(exc, ModelRateLimitError) or status == 429:
        asked = f", Retry-After {round(retry_after, 3):g} s" if retry_after is not None else ""
        return RateLimited(
            f"{name} is rate limiting requests (HTTP {status or 429}{asked})",
            retryable=retryable,
            retry_after=retry_after,
        )
    described = f"{name} answered HTTP {status}" if status is not None else f"{name} call failed"
    if code is not None:
        described += f" ({code})"
    elif status is None:
        described += f" ({type(exc).__name__})"
    return ProviderError(described, retryable=retryable, retry_after=retry_after)
