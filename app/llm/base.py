"""The provider protocol: take a rendered request, return text and usage, or raise a typed error.

Error messages never carry prompt text or the provider's free-text answer (which
may quote the prompt): only status codes and the provider's documented error codes
(`app.llm.error_codes`; a code not on that list says `other`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str

    def __repr__(self) -> str:  # keep message text out of logs and tracebacks
        return f"Message(role={self.role!r}, content=<{len(self.content)} chars>)"


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """The JSON an answer must be (a task's `response_format`, already checked against the bounds
    in `app.llm.structured`): `json_schema` (valid against `schema`) or `json_object` (any object).

    A provider sees it on `CompletionRequest.response_format` only when it says it enforces it
    itself (`supports_structured_output`); for any other provider the service asks in the system
    message instead and validates the answer (`app.llm.structured.prompted`). Either way the
    service validates every answer: a native mode is a help, not a guarantee. A native provider
    returns the JSON as `Completion.text`; a pydantic-ai one would map this to `NativeOutput` (or
    `PromptedOutput`) of the schema. Nothing of it is in its repr (the caller wrote all of it).
    """

    kind: Literal["json_schema", "json_object"]
    name: str = field(default="json_object", repr=False)
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"}, repr=False)
    description: str | None = field(default=None, repr=False)
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    # Set only for a provider whose `structured_output` is True (see ResponseFormat).
    response_format: ResponseFormat | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    usage: Usage = field(default_factory=Usage)


class ProviderError(Exception):
    """A provider call failed; `code` is one of the stable task error codes.

    `retryable`: another attempt may succeed (a connection error, a timeout, HTTP 408/409/429/5xx).
    `retry_after`: seconds the provider asked us to wait (`Retry-After`), when it said so.
    The message is stored on the task and returned to callers: status codes and documented
    error codes only (`app.llm.error_codes.safe_error_code`), never prompt text or the
    provider's own words.
    """

    code: ClassVar[str] = "provider_error"

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class RateLimited(ProviderError):
    code = "rate_limited"


class ProviderTimeout(ProviderError):
    code = "timeout"


class QuotaExceeded(ProviderError):
    code = "quota_exceeded"


@runtime_checkable
class Provider(Protocol):
    """What a provider implements.

    Third-party providers register a factory `factory(settings) -> Provider` in the
    entry-point group `agent_service.providers`; the entry point's name is the provider's
    name (`name` must equal it) and the first half of `provider:model`.
    """

    name: str

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def aclose(self) -> None: ...


def supports_structured_output(provider: Provider) -> bool:
    """The provider's capability flag `structured_output`: True when it sends a request's
    `response_format` in its own API's structured-output mode (OpenAI's `response_format`,
    pydantic-ai's NativeOutput). Optional, and not part of the protocol, so that plugins written
    before it keep working: without it (or with False) the service prompts for the JSON."""
    return getattr(provider, "structured_output", False) is True


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer as the provider sent it: the text to append, never logged."""

    text: str

    def __repr__(self) -> str:  # keep answer text out of logs and tracebacks
        return f"TextDelta(<{len(self.text)} chars>)"


# What a stream yields: text deltas, then exactly one Completion (its usage; its text is the deltas').
StreamEvent = TextDelta | Completion
DeltaCallback = Callable[[str], None]


@runtime_checkable
class StreamingProvider(Provider, Protocol):
    """A provider that can also hand its answer over piece by piece (a separate protocol, so that
    plugins written against `Provider` keep working unchanged).

    `stream(request)` yields `TextDelta`s as they arrive and ends with one `Completion` carrying
    the model and usage. Errors are the same typed `ProviderError`s as `complete`'s; a provider
    retries only before its first delta (after it, a retry would repeat text already sent).
    """

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]: ...


async def stream_completion(provider: Provider, request: CompletionRequest, on_delta: DeltaCallback) -> Completion:
    """Answer `request`, handing each piece of text to `on_delta` as it arrives.

    A `StreamingProvider` streams; any other provider answers whole, and its text is one delta.
    The completion returned has as its text exactly the concatenation of the deltas handed over,
    so what is stored is what a streaming caller was sent, byte for byte. Empty pieces are not
    handed over.
    """
    if not isinstance(provider, StreamingProvider):
        completion = await provider.complete(request)
        if completion.text:
            on_delta(completion.text)
        return completion
    parts: list[str] = []
    final: Completion | None = None
    events = provider.stream(request)
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                if event.text:
                    parts.append(event.text)
                    on_delta(event.text)
            else:
                final = event
    finally:  # a generator left early (a cancel) closes now, hanging up its HTTP call
        if (close := getattr(events, "aclose", None)) is not None:
            await close()
    if final is None:
        raise ProviderError(f"{provider.name} ended its stream without finishing the answer")
    return Completion(text="".join(parts), model=final.model, usage=final.usage)
