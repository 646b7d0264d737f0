"""An example provider plugin: deterministic, offline, and it never repeats the prompt.

The service finds it through the entry point `example` in the group
`agent_service.providers` and calls `create_provider(settings)` once at start-up.
"""

from __future__ import annotations

from app.llm.base import Completion, CompletionRequest, Usage
from app.settings import Settings

__all__ = ["ExampleProvider", "create_provider"]


class ExampleProvider:
    """Answers `example provider: N words`, N being the number of words it was sent."""

    name = "example"

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        words = sum(len(message.content.split()) for message in request.messages)
        text = f"example provider: {words} words"
        completion_tokens = len(text.split())
        return Completion(
            text=text,
            model=request.model,
            usage=Usage(
                prompt_tokens=words, completion_tokens=completion_tokens, total_tokens=words + completion_tokens
            ),
        )

    async def aclose(self) -> None:
        self.closed = True


def create_provider(settings: Settings) -> ExampleProvider:
    """The entry point's factory: `factory(settings) -> Provider`."""
    del settings  # a real plugin would read its configuration here
    return ExampleProvider()
