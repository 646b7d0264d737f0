"""OpenAI and any OpenAI-compatible endpoint (Ollama, vLLM, ...), through the official SDK.

Retries are ours, not the SDK's (it runs with `max_retries=0`), so that one policy,
written once with tenacity, governs every endpoint:

- retried: connection errors (refused, reset, dropped mid-answer), an attempt that
  exceeds `request_timeout_seconds`, HTTP 408, 409, 429 and every 5xx;
- the wait: the provider's `retry-after-ms` or `Retry-After` (seconds or an HTTP date)
  when it sends one, else exponential backoff with jitter (0.5 s, 1 s, 2 s, ... up to 8 s,
  plus up to 0.5 s of jitter);
- bounded: at most `max_retries` retries, and no attempt starts once `retry_max_seconds`
  have passed since the first one began (counting the wait before it). A `Retry-After`
  longer than 60 s, or longer than what is left of that budget, ends the call at once;
- never retried: `insufficient_quota` (QuotaExceeded), any other 4xx, an answer that is
  not JSON or not a chat completion.

The caller (the service) bounds the whole call, retries included, with its own timeout.

`stream()` answers piece by piece (`stream=True`, usage in the last chunk). The same policy
governs opening the stream, up to its first piece of text; once text has been handed on,
nothing is retried (the caller would get it twice): an error then ends the stream.
Error messages carry the HTTP status and the provider's error code when it is a documented one
(`app.llm.error_codes`; any other code says `other`), never its text.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC

import httpx
import logfire
import openai
from openai import AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from app.llm.base import (
    Completion,
    CompletionRequest,
    ProviderError,
    ProviderTimeout,
    QuotaExceeded,
    RateLimited,
    StreamEvent,
    TextDelta,
    Usage,
)
from app.llm.error_codes import safe_error_code
from app.llm.openai_chunks import ChunkStream, chunk_text, count_or_none

log = logging.getLogger(__name__)

# Local servers often need no key, but the SDK insists on one (and would otherwise read
# OPENAI_API_KEY from the environment and send it to whatever endpoint this is).
_NO_KEY = "not-needed"

RETRYABLE_STATUSES = frozenset({408, 409, 429})  # and every 5xx
BACKOFF_MULTIPLIER_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
BACKOFF_JITTER_SECONDS = 0.5
# A provider asking for a longer pause than this is not waited for: the call fails at once.
MAX_RETRY_AFTER_SECONDS = 60.0


class OpenAICompatibleProvider:
    """One OpenAI-compatible endpoint under one provider name (`openai`, or a configured endpoint's name)."""

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None,
        base_url: str | None,
        request_timeout_seconds: float = 30.0,
        max_retries: int = 3,
        retry_max_seconds: float = 30.0,
        trace: bool = False,
    ) -> None:
        if request_timeout_seconds <= 0 or retry_max_seconds <= 0 or max_retries < 0:
            raise ValueError("timeouts must be positive and max_retries must not be negative")
        self.name = name
        self.request_timeout_seconds = request_timeout_seconds
        self.max_retries = max_retries
        self.retry_max_seconds = retry_max_seconds
        self._trace = trace
        self._backoff = wait_exponential_jitter(
            multiplier=BACKOFF_MULTIPLIER_SECONDS, max=BACKOFF_MAX_SECONDS, jitter=BACKOFF_JITTER_SECONDS
        )
        self._client = openai.AsyncOpenAI(
            api_key=api_key or _NO_KEY, base_url=base_url, timeout=request_timeout_seconds, max_retries=0
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        attempts = 0

        async def attempt() -> Completion:
            nonlocal attempts
            attempts += 1
            if not self._trace:
                return await self._attempt(request)
            return await self._traced_attempt(request, attempts)

        try:
            return await self._retrying()(attempt)
        except ProviderError as exc:
            _gave_up(exc, attempts)
            raise

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """The answer as it is generated (`stream=True`, with the usage in a last chunk), then one
        Completion. The retry policy above governs opening the stream, up to its first piece of
        text: what fails before it is retried; what fails after it ends the stream with the
        typed error (a retry would send again what the caller already has). Each read waits at
        most `request_timeout_seconds` (the SDK's), and the caller bounds the whole stream."""
        attempts = 0

        async def attempt() -> ChunkStream:
            nonlocal attempts
            attempts += 1
            if not self._trace:
                return await self._open(request)
            return await self._traced_open(request, attempts)

        try:
            opened: ChunkStream = await self._retrying()(attempt)
        except ProviderError as exc:
            _gave_up(exc, attempts)
            raise
        try:
            while opened.ahead:
                yield opened.ahead.pop(0)
            while (event := await self._read_mapped(opened)) is not None:
                yield event
        finally:
            await opened.chunks.close()  # a caller that stops early (a cancel) hangs up the provider
        if self._trace:
            logfire.info(
                "provider stream {provider} finished",
                provider=self.name,
                model=request.model,
                prompt_tokens=opened.usage.prompt_tokens or 0,
                completion_tokens=opened.usage.completion_tokens or 0,
            )

    async def aclose(self) -> None:
        await self._client.close()

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1) | stop_before_delay(self.retry_max_seconds),
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )

    # -- one stream -------------------------------------------------------------------------

    async def _traced_open(self, request: CompletionRequest, attempt: int) -> ChunkStream:
        """A client span per attempt to open a stream; the error leaves the span before it is raised."""
        error: ProviderError | None = None
        with logfire.span(
            "provider call {provider}", provider=self.name, model=request.model, attempt=attempt, stream=True
        ) as span:
            try:
                opened = await self._open(request)
            except ProviderError as exc:
                span.set_attributes({"outcome": "error", "error_code": exc.code, "retryable": exc.retryable})
                error = exc
            else:
                span.set_attributes({"outcome": "ok"})
                return opened
        raise error

    async def _open(self, request: CompletionRequest) -> ChunkStream:
        """One attempt: start the stream and read up to its first piece of text (or its end),
        within `request_timeout_seconds`."""
        try:
            async with asyncio.timeout(self.request_timeout_seconds):
                # (the messages' roles are plain strings, which no overload takes)
                chunks: AsyncStream[ChatCompletionChunk] = await self._client.chat.completions.create(  # type: ignore[call-overload]
                    model=request.model,
                    messages=[{"role": m.role, "content": m.content} for m in request.messages],
                    temperature=request.temperature if request.temperature is not None else openai.omit,
                    max_tokens=request.max_tokens if request.max_tokens is not None else openai.omit,
                    top_p=request.top_p if request.top_p is not None else openai.omit,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                opened = ChunkStream(chunks, chunks.__aiter__(), request.model)
                try:
                    while not opened.ahead:
                        if (event := await self._read(opened)) is None:
                            break
                        opened.ahead.append(event)
                except BaseException:
                    await chunks.close()
                    raise
        except ProviderError:
            raise
        except Exception as exc:
            if (mapped := self._mapped(exc)) is None:
                raise
            raise mapped from exc
        return opened

    async def _read_mapped(self, opened: ChunkStream) -> StreamEvent | None:
        try:
            return await self._read(opened)
        except ProviderError:
            raise
        except Exception as exc:
            if (mapped := self._mapped(exc, midway=True)) is None:
                raise
            raise mapped from exc

    async def _read(self, opened: ChunkStream) -> StreamEvent | None:
        """The next event: a piece of text, the Completion once the chunks end, then None."""
        if opened.done:
            return None
        while True:
            try:
                chunk = await opened.iterator.__anext__()
            except StopAsyncIteration:
                opened.done = True
                return Completion(text="".join(opened.parts), model=opened.model, usage=opened.usage)
            if (text := chunk_text(self.name, chunk, opened)) is not None:
                opened.parts.append(text)
                return TextDelta(text)

    # -- one attempt ------------------------------------------------------------------------

    async def _traced_attempt(self, request: CompletionRequest, attempt: int) -> Completion:
        """A client span per HTTP call: provider, model, attempt, outcome, error code, tokens.

        The error leaves the span before it is raised: a span records an exception with its
        whole chain, and the SDK's exception underneath may quote the provider's text.
        """
        error: ProviderError | None = None
        with logfire.span("provider call {provider}", provider=self.name, model=request.model, attempt=attempt) as span:
            try:
                completion = await self._attempt(request)
            except ProviderError as exc:
                span.set_attributes({"outcome": "error", "error_code": exc.code, "retryable": exc.retryable})
                error = exc
            else:
                span.set_attributes(
                    {
                        "outcome": "ok",
                        "prompt_tokens": completion.usage.prompt_tokens or 0,
                        "completion_tokens": completion.usage.completion_tokens or 0,
                    }
                )
                return completion
        raise error

    async def _attempt(self, request: CompletionRequest) -> Completion:
        try:
            # The SDK's timeout bounds each phase (connect, each read); this bounds the attempt.
            async with asyncio.timeout(self.request_timeout_seconds):
                response = await self._client.chat.completions.create(
                    model=request.model,
                    messages=[{"role": m.role, "content": m.content} for m in request.messages],  # type: ignore[misc]
                    temperature=request.temperature if request.temperature is not None else openai.omit,
                    max_tokens=request.max_tokens if request.max_tokens is not None else openai.omit,
                    top_p=request.top_p if request.top_p is not None else openai.omit,
                )
        except ProviderError:
            raise
        except Exception as exc:
            if (mapped := self._mapped(exc)) is None:
                raise
            raise mapped from exc
        return _completion(self.name, response, request.model)

    def _mapped(self, exc: Exception, *, midway: bool = False) -> ProviderError | None:
        """The typed error for what an HTTP call raised (None: not the provider's doing, a bug).
        `midway`: text had been handed on already, so a lost connection is a dropped answer."""
        if isinstance(exc, (TimeoutError, openai.APITimeoutError, httpx.TimeoutException)):
            return ProviderTimeout(
                f"{self.name} did not answer within {self.request_timeout_seconds:g} s", retryable=True
            )
        if isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
            if midway:
                return ProviderError(f"{self.name} dropped the connection mid-answer", retryable=True)
            return ProviderError(f"{self.name} could not be reached", retryable=True)
        if isinstance(exc, openai.APIStatusError):
            return _status_error(self.name, exc)
        if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
            return ProviderError(f"{self.name} sent an answer that is not valid JSON")
        if isinstance(exc, openai.APIResponseValidationError):
            return ProviderError(f"{self.name} sent an answer that is not a valid chat completion")
        if isinstance(exc, openai.OpenAIError):  # an error event mid-stream too: its text is the provider's
            return ProviderError(f"{self.name} call failed ({type(exc).__name__})")
        return None

    # -- the policy between attempts ----------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        # The message is safe by construction (status and short codes only).
        message = exc.message if isinstance(exc, ProviderError) else type(exc).__name__
        log.warning(
            "provider %s: attempt %d failed (%s); retrying in %.2f s",
            self.name,
            state.attempt_number,
            message,
            state.upcoming_sleep,
        )


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


def _status_error(name: str, exc: openai.APIStatusError) -> ProviderError:
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


def _completion(name: str, response: object, requested_model: str) -> Completion:
    """The text and usage of a chat completion; anything else is a (not retried) provider error."""
    invalid = ProviderError(f"{name} sent an answer that is not a valid chat completion")
    if not isinstance(response, ChatCompletion):
        raise invalid
    try:
        choices = response.choices
        if not isinstance(choices, list):
            raise invalid
        text = choices[0].message.content if choices else None
        usage = response.usage
        model = response.model
    except (AttributeError, TypeError) as exc:
        raise invalid from exc
    if not isinstance(text, str):
        raise ProviderError(f"{name} returned no text")
    return Completion(
        text=text,
        model=model if isinstance(model, str) and model else requested_model,
        usage=Usage(
            prompt_tokens=count_or_none(getattr(usage, "prompt_tokens", None)),
            completion_tokens=count_or_none(getattr(usage, "completion_tokens", None)),
            total_tokens=count_or_none(getattr(usage, "total_tokens", None)),
        ),
    )


def _gave_up(exc: ProviderError, attempts: int) -> None:
    if attempts > 1:
        exc.message = f"{exc.message}; gave up after {attempts} attempts"
        exc.args = (exc.message,)
