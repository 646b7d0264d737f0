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
A task's `response_format` is sent as the request's own `response_format` (`json_schema` with
its name, schema, description and strict flag, or `json_object`): this provider has the
`structured_output` capability. The service validates the answer all the same.

Error messages carry the HTTP status and the provider's error code when it is a documented one
(`app.llm.error_codes`; any other code says `other`), never its text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

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
    ResponseFormat,
    StreamEvent,
    TextDelta,
    Usage,
)
from app.llm.openai_chunks import ChunkStream, chunk_text, count_or_none
from app.llm.openai_errors import mapped_error

log = logging.getLogger(__name__)

# Local servers often need no key, but the SDK insists on one (and would otherwise read
# OPENAI_API_KEY from the environment and send it to whatever endpoint this is).
_NO_KEY = "not-needed"

BACKOFF_MULTIPLIER_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
BACKOFF_JITTER_SECONDS = 0.5


class OpenAICompatibleProvider:
    """One OpenAI-compatible endpoint under one provider name (`openai`, or a configured endpoint's name)."""

    # `response_format` goes in the request (app.llm.base.supports_structured_output); an endpoint
    # configured with `structured_output: false` is prompted for the JSON instead.
    structured_output: bool

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
        structured_output: bool = True,
    ) -> None:
        if request_timeout_seconds <= 0 or retry_max_seconds <= 0 or max_retries < 0:
            raise ValueError("timeouts must be positive and max_retries must not be negative")
        self.name = name
        self.structured_output = structured_output
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
        return await self._with_retries(lambda: self._attempt(request), lambda n: self._traced_attempt(request, n))

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """The answer as it is generated (`stream=True`, with the usage in a last chunk), then one
        Completion. The retry policy above governs opening the stream, up to its first piece of
        text: what fails before it is retried; what fails after it ends the stream with the
        typed error (a retry would send again what the caller already has). Each read waits at
        most `request_timeout_seconds` (the SDK's), and the caller bounds the whole stream."""
        opened = await self._with_retries(lambda: self._open(request), lambda n: self._traced_open(request, n))
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

    async def _with_retries[T](self, once: Callable[[], Awaitable[T]], traced: Callable[[int], Awaitable[T]]) -> T:
        """`once()` (or `traced(attempt number)` when tracing) under the retry policy; the error
        that ends the call says how many attempts it took."""
        attempts = 0

        async def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return await (traced(attempts) if self._trace else once())

        try:
            return await self._retrying()(attempt)
        except ProviderError as exc:
            _gave_up(exc, attempts)
            raise

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
                    response_format=_response_format(request.response_format),
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
                    response_format=_response_format(request.response_format),
                )
        except ProviderError:
            raise
        except Exception as exc:
            if (mapped := self._mapped(exc)) is None:
                raise
            raise mapped from exc
        return _completion(self.name, response, request.model)

    def _mapped(self, exc: Exception, *, midway: bool = False) -> ProviderError | None:
        return mapped_error(self.name, self.request_timeout_seconds, exc, midway=midway)

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


def _response_format(fmt: ResponseFormat | None) -> Any:
    """The chat completions `response_format` of a task's format (omitted for a plain answer)."""
    if fmt is None:
        return openai.omit
    if fmt.kind == "json_object":
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": fmt.name, "schema": dict(fmt.schema)}
    if fmt.description is not None:
        spec["description"] = fmt.description
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


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
