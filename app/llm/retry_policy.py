"""The retry policy of a provider call, as one object any provider can run its attempts under.

The rules are the OpenAI-compatible provider's (`app.llm.openai_compatible`, docs/providers.md
"Retries and timeouts"), with the same numbers:

- retried: a `ProviderError` marked `retryable` (connection errors, an attempt past
  `request_timeout_seconds`, HTTP 408, 409, 429 and every 5xx, Anthropic's 529 included);
- the wait: the provider's `retry-after-ms` or `Retry-After` when it sent one, else exponential
  backoff with jitter (0.5 s, 1 s, 2 s, ... up to 8 s, plus up to 0.5 s);
- bounded: at most `max_retries` retries, none starting later than `retry_max_seconds` after
  the first attempt began;
- the error that ends the call says how many attempts it took.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from app.llm.base import ProviderError

BACKOFF_MULTIPLIER_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
BACKOFF_JITTER_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of one provider's calls; `log` gets the WARNING of each retry (the provider's logger)."""

    name: str
    max_retries: int
    retry_max_seconds: float
    log: logging.Logger

    def __post_init__(self) -> None:
        if self.retry_max_seconds <= 0 or self.max_retries < 0:
            raise ValueError("retry_max_seconds must be positive and max_retries must not be negative")

    async def run[T](self, attempt: Callable[[int], Awaitable[T]]) -> T:
        """`attempt(n)` for n = 1, 2, ... under the policy; the error that ends the call says how many
        attempts it took."""
        attempts = 0

        async def once() -> T:
            nonlocal attempts
            attempts += 1
            return await attempt(attempts)

        backoff = wait_exponential_jitter(
            initial=BACKOFF_MULTIPLIER_SECONDS, max=BACKOFF_MAX_SECONDS, jitter=BACKOFF_JITTER_SECONDS
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, ProviderError) and exc.retry_after is not None:
                return exc.retry_after
            return float(backoff(state))

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1) | stop_before_delay(self.retry_max_seconds),
            wait=wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, ProviderError) and exc.retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return await retrying(once)
        except ProviderError as exc:
            if attempts > 1:
                exc.message = f"{exc.message}; gave up after {attempts} attempts"
                exc.args = (exc.message,)
            raise

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        # The message is safe by construction (status and documented codes only).
        message = exc.message if isinstance(exc, ProviderError) else type(exc).__name__
        self.log.warning(
            "provider %s: attempt %d failed (%s); retrying in %.2f s",
            self.name,
            state.attempt_number,
            message,
            state.upcoming_sleep,
        )
