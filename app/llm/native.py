"""Anthropic, Gemini, Groq, Mistral, Bedrock and Cohere through their own APIs, via pydantic-ai's direct API.

One class for every native kind: `pydantic_ai.direct.model_request` (whole answers) and
`model_request_stream` (piece by piece) over the vendor's pydantic-ai model
(`app.llm.native_models`, SDK clients with no retries and no telemetry of their own). Around
them, what every provider of ours has:

- the retry policy of `app.llm.retry_policy` (the OpenAI-compatible provider's rules and numbers),
  each attempt bounded by `request_timeout_seconds`; a stream is retried up to its first piece
  of text only;
- the failures mapped by `app.llm.native_errors`, the same way for every vendor;
- **no pydantic-ai instrumentation** (`instrument=False` on every call, whatever
  `logfire.instrument_pydantic_ai()` or `Agent.instrument_all()` set elsewhere: it would put the
  messages into spans, `InstrumentationSettings.include_content` being True by default). When
  tracing is on, our own client span per attempt holds the provider, model, attempt, outcome,
  error code and token counts, nothing of the text.

Structured output: a task's `response_format` reaches this provider (`structured_output` is
True) and goes to pydantic-ai as an output object: in the model's native JSON-schema mode where
its profile says it has one (`supports_json_schema_output`: Gemini, recent Claude models, ...),
otherwise as pydantic-ai's prompted output (the schema and its instructions in the request). The
answer is text either way, and the service validates it and re-asks (`app.llm.structured`).

Message roles: `system` becomes a system prompt, `assistant` a model response, anything else
(`user`) a user prompt, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import logfire
from pydantic_ai import direct
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelRequestPart,
    ModelResponse,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartStartEvent,
    SystemPromptPart,
    TextPart,
    TextPartDelta,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.output import OutputObjectDefinition
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

from app.llm.base import (
    Completion,
    CompletionRequest,
    Message,
    ProviderError,
    ResponseFormat,
    StreamEvent,
    TextDelta,
    Usage,
)
from app.llm.native_errors import native_error
from app.llm.native_models import Credentials, model_factory
from app.llm.retry_policy import RetryPolicy
from app.settings import ProviderKindName

log = logging.getLogger(__name__)

MAX_CACHED_MODELS = 256  # model objects kept per provider (one per model name a task named)


@dataclass
class _Opened:
    """A stream being read: its context (closed at the end), its events, the text so far."""

    stack: AsyncExitStack
    response: StreamedResponse
    events: AsyncIterator[ModelResponseStreamEvent]
    model: str
    parts: list[str] = field(default_factory=list)
    ahead: list[str] = field(default_factory=list)  # read while opening, not yet handed on
    done: bool = False

    def __repr__(self) -> str:  # never the text
        return f"_Opened(model={self.model!r}, parts={len(self.parts)}, done={self.done})"


class NativeProvider:
    """One vendor endpoint of a native kind under one provider name (`anthropic`, or an endpoint's name)."""

    structured_output = True  # natively where the model can, else pydantic-ai's prompted output

    def __init__(
        self,
        name: str,
        kind: ProviderKindName,
        credentials: Credentials,
        *,
        request_timeout_seconds: float = 30.0,
        max_retries: int = 3,
        retry_max_seconds: float = 30.0,
        trace: bool = False,
    ) -> None:
        if request_timeout_seconds <= 0:
            raise ValueError("timeouts must be positive")
        self.name = name
        self.kind = kind
        self.request_timeout_seconds = request_timeout_seconds
        self._policy = RetryPolicy(name, max_retries, retry_max_seconds, log)
        self._trace = trace
        self._factory = model_factory(kind, credentials, request_timeout_seconds)
        self._models: dict[str, Model] = {}

    async def complete(self, request: CompletionRequest) -> Completion:
        model = self._model(request.model)
        return await self._policy.run(lambda n: self._traced(request, n, lambda: self._attempt(model, request)))

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """The answer as it is generated, then one Completion with the usage. Failures before the
        first piece of text are retried under the policy; after it, they end the stream (a retry
        would send again what the caller already has)."""
        model = self._model(request.model)
        opened = await self._policy.run(
            lambda n: self._traced(request, n, lambda: self._open(model, request), stream=True)
        )
        try:
            while opened.ahead:
                yield TextDelta(opened.ahead.pop(0))
            while (text := await self._read_mapped(opened)) is not None:
                yield TextDelta(text)
            usage = _usage(opened.response.usage)
            model_name = opened.response.model_name or request.model
        finally:
            await opened.stack.aclose()  # a caller that stops early (a cancel) hangs up the provider
        if self._trace:
            logfire.info(
                "provider stream {provider} finished",
                provider=self.name,
                model=request.model,
                prompt_tokens=usage.prompt_tokens or 0,
                completion_tokens=usage.completion_tokens or 0,
            )
        yield Completion(text="".join(opened.parts), model=model_name, usage=usage)

    async def aclose(self) -> None:
        await self._factory.close()

    def _model(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            if len(self._models) >= MAX_CACHED_MODELS:
                self._models.clear()
            model = self._models[name] = self._factory.make(name)
        return model

    # -- one attempt ----------------------------------------------------------------------------

    async def _traced[T](
        self, request: CompletionRequest, attempt: int, once: Callable[[], Awaitable[T]], *, stream: bool = False
    ) -> T:
        """`once()`, in a client span per attempt when tracing. The error leaves the span before it is
        raised: a span records an exception with its whole chain."""
        if not self._trace:
            return await once()
        error: ProviderError | None = None
        with logfire.span(
            "provider call {provider}", provider=self.name, model=request.model, attempt=attempt, stream=stream
        ) as span:
            try:
                result = await once()
            except ProviderError as exc:
                span.set_attributes({"outcome": "error", "error_code": exc.code, "retryable": exc.retryable})
                error = exc
            else:
                span.set_attributes({"outcome": "ok"})
                if isinstance(result, Completion):
                    span.set_attributes(
                        {
                            "prompt_tokens": result.usage.prompt_tokens or 0,
                            "completion_tokens": result.usage.completion_tokens or 0,
                        }
                    )
                return result
        raise error

    async def _attempt(self, model: Model, request: CompletionRequest) -> Completion:
        try:
            async with asyncio.timeout(self.request_timeout_seconds):
                response = await direct.model_request(
                    model,
                    _messages(request.messages),
                    model_settings=_settings(request),
                    model_request_parameters=output_parameters(model, request.response_format),
                    instrument=False,
                )
        except Exception as exc:
            raise self._mapped(exc) from None  # (the cause's message quotes the provider's body)
        text = "".join(part.content for part in response.parts if isinstance(part, TextPart))
        if not text and not any(isinstance(part, TextPart) for part in response.parts):
            raise ProviderError(f"{self.name} returned no text")
        return Completion(text=text, model=response.model_name or request.model, usage=_usage(response.usage))

    async def _open(self, model: Model, request: CompletionRequest) -> _Opened:
        """One attempt: open the stream and read up to its first piece of text (or its end), within
        `request_timeout_seconds`."""
        stack = AsyncExitStack()
        try:
            async with asyncio.timeout(self.request_timeout_seconds):
                response = await stack.enter_async_context(
                    direct.model_request_stream(
                        model,
                        _messages(request.messages),
                        model_settings=_settings(request),
                        model_request_parameters=output_parameters(model, request.response_format),
                        instrument=False,
                    )
                )
                opened = _Opened(stack, response, aiter(response), request.model)
                while not opened.ahead and not opened.done:
                    if (text := await self._read(opened)) is not None:
                        opened.ahead.append(text)
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, Exception):
                raise self._mapped(exc) from None
            raise
        return opened

    async def _read_mapped(self, opened: _Opened) -> str | None:
        try:
            return await self._read(opened)
        except Exception as exc:
            raise self._mapped(exc, midway=True) from None

    async def _read(self, opened: _Opened) -> str | None:
        """The next piece of text; None once the events end."""
        while not opened.done:
            try:
                event = await anext(opened.events)
            except StopAsyncIteration:
                opened.done = True
                return None
            text = _text_of(event)
            if text:
                opened.parts.append(text)
                return text
        return None

    def _mapped(self, exc: Exception, *, midway: bool = False) -> BaseException:
        if isinstance(exc, ProviderError):
            return exc
        mapped = native_error(self.name, self.request_timeout_seconds, exc, midway=midway)
        if mapped is None:  # not the provider's doing: a bug; its type only (its text may quote the answer)
            return ProviderError(f"{self.name} call failed ({type(exc).__name__})")
        return mapped


def _text_of(event: ModelResponseStreamEvent) -> str | None:
    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return event.part.content
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return event.delta.content_delta
    return None


def _messages(messages: tuple[Message, ...]) -> list[ModelMessage]:
    """Our rendered messages as pydantic-ai's history: consecutive system and user messages are the
    parts of one request, an assistant message is a model response."""
    history: list[ModelMessage] = []
    parts: list[ModelRequestPart] = []
    for message in messages:
        if message.role == "assistant":
            if parts:
                history.append(ModelRequest(parts=parts))
                parts = []
            history.append(ModelResponse(parts=[TextPart(content=message.content)]))
        elif message.role == "system":
            parts.append(SystemPromptPart(content=message.content))
        else:
            parts.append(UserPromptPart(content=message.content))
    if parts:
        history.append(ModelRequest(parts=parts))
    return history


def output_parameters(model: Model, fmt: ResponseFormat | None) -> ModelRequestParameters | None:
    """What pydantic-ai is asked for: text (None), or the format as an output object, in the
    model's native mode when its profile has one, else prompted. The answer stays text."""
    if fmt is None:
        return None
    profile = model.profile
    native = bool(profile.get("supports_json_schema_output")) or (
        fmt.kind == "json_object" and bool(profile.get("supports_json_object_output"))
    )
    output = OutputObjectDefinition(
        json_schema=dict(fmt.schema), name=fmt.name, description=fmt.description, strict=fmt.strict
    )
    return ModelRequestParameters(output_mode="native" if native else "prompted", output_object=output)


def _settings(request: CompletionRequest) -> ModelSettings:
    settings = ModelSettings()
    if request.temperature is not None:
        settings["temperature"] = request.temperature
    if request.max_tokens is not None:
        settings["max_tokens"] = request.max_tokens
    if request.top_p is not None:
        settings["top_p"] = request.top_p
    return settings


def _usage(usage: RequestUsage) -> Usage:
    prompt, completion = usage.input_tokens, usage.output_tokens
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
