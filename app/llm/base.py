"""The provider protocol: take a rendered request, return text and usage, or raise a typed error.

Error messages never carry prompt text or the provider's free-text answer (which
may quote the prompt): only status codes and the provider's documented error codes
(`app.llm.error_codes`; a code not on that list says `other`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str

    def __repr__(self) -> str:  # keep message text out of logs and tracebacks
        return f"Message(role={self.role!r}, content=<{len(self.content)} chars>)"


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None


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
