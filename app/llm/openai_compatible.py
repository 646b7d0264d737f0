"""OpenAI and any OpenAI-compatible endpoint (Ollama, vLLM, ...), through the official SDK."""

from __future__ import annotations

import openai

from app.llm.base import (
    Completion,
    CompletionRequest,
    ProviderError,
    ProviderTimeout,
    QuotaExceeded,
    RateLimited,
    Usage,
)

# Local servers often need no key, but the SDK insists on one.
_NO_KEY = "not-needed"


class OpenAICompatibleProvider:
    def __init__(
        self,
        name: str,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout_seconds: float,
        max_retries: int = 2,
    ) -> None:
        self.name = name
        self._client = openai.AsyncOpenAI(
            api_key=api_key or _NO_KEY, base_url=base_url, timeout=timeout_seconds, max_retries=max_retries
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        try:
            response = await self._client.chat.completions.create(
                model=request.model,
                messages=[{"role": m.role, "content": m.content} for m in request.messages],  # type: ignore[misc]
                temperature=request.temperature if request.temperature is not None else openai.omit,
                max_tokens=request.max_tokens if request.max_tokens is not None else openai.omit,
                top_p=request.top_p if request.top_p is not None else openai.omit,
            )
        except openai.APITimeoutError as exc:
            raise ProviderTimeout(f"{self.name} did not answer in time") from exc
        except openai.APIConnectionError as exc:
            raise ProviderError(f"{self.name} could not be reached") from exc
        except openai.RateLimitError as exc:
            if exc.code == "insufficient_quota":
                raise QuotaExceeded(f"{self.name} reports the account's quota is exhausted") from exc
            raise RateLimited(f"{self.name} is rate limiting requests (HTTP 429)") from exc
        except openai.APIStatusError as exc:
            raise ProviderError(_describe_status(self.name, exc)) from exc
        except openai.APIResponseValidationError as exc:
            raise ProviderError(f"{self.name} sent an answer that is not a valid chat completion") from exc
        except openai.OpenAIError as exc:
            raise ProviderError(f"{self.name} call failed ({type(exc).__name__})") from exc

        if not response.choices or response.choices[0].message.content is None:
            raise ProviderError(f"{self.name} returned no text")
        usage = response.usage
        return Completion(
            text=response.choices[0].message.content,
            model=response.model or request.model,
            usage=Usage(
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                total_tokens=usage.total_tokens if usage else None,
            ),
        )

    async def aclose(self) -> None:
        await self._client.close()


def _describe_status(name: str, exc: openai.APIStatusError) -> str:
    """Status and the provider's short error code, never its free-text message (it may quote the prompt)."""
    detail = f" ({exc.code})" if isinstance(exc.code, str) and exc.code.isidentifier() and len(exc.code) <= 64 else ""
    return f"{name} answered HTTP {exc.status_code}{detail}"
