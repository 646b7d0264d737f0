"""The offline development provider: deterministic, instant, and it never echoes the prompt.

Used by default when no OpenAI endpoint is configured, and as the zero-latency
provider in benchmarks. Its answer says nothing of the request but the model's name, so
the privacy guarantees hold even for the development default: no digest (an unkeyed hash of
the prompt would let anyone confirm a guess), and no length or word count either.
"""

from __future__ import annotations

from app.llm.base import Completion, CompletionRequest, Usage


class OfflineProvider:
    name = "offline"

    async def complete(self, request: CompletionRequest) -> Completion:
        # Nothing of the prompt, not even its length or word count: those let anyone confirm a
        # guess for free (submit it to `offline:x`, compare). So no prompt tokens are counted.
        output = f"[offline provider, model {request.model}] No language model was called."
        completion_tokens = len(output.split())
        return Completion(
            text=output,
            model=request.model,
            usage=Usage(prompt_tokens=0, completion_tokens=completion_tokens, total_tokens=completion_tokens),
        )

    async def aclose(self) -> None:
        return None
