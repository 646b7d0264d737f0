"""The offline development provider: deterministic, instant, and it never echoes the prompt.

Used by default when no OpenAI endpoint is configured, and as the zero-latency
provider in benchmarks. Its answer describes the request's shape only, so the
privacy guarantees hold even for the development default (no digest either: an
unkeyed hash of the prompt in the output would let anyone confirm a guess).
"""

from __future__ import annotations

from app.llm.base import Completion, CompletionRequest, Usage


class OfflineProvider:
    name = "offline"

    async def complete(self, request: CompletionRequest) -> Completion:
        text = "\n".join(m.content for m in request.messages)
        words = len(text.split())
        output = (
            f"[offline provider, model {request.model}] received {len(request.messages)} message(s), "
            f"{len(text)} characters, {words} words. No language model was called."
        )
        completion_tokens = len(output.split())
        return Completion(
            text=output,
            model=request.model,
            usage=Usage(
                prompt_tokens=words, completion_tokens=completion_tokens, total_tokens=words + completion_tokens
            ),
        )

    async def aclose(self) -> None:
        return None
