"""Reading a chat completion stream's chunks (`OpenAICompatibleProvider.stream`): each chunk's
piece of text, and the usage and model the chunks carry. Never the text in a repr."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk

from app.llm.base import ProviderError, StreamEvent, Usage


@dataclass
class ChunkStream:
    """A chat completion stream being read: the chunks, what came of them so far."""

    chunks: AsyncStream[ChatCompletionChunk]
    iterator: AsyncIterator[ChatCompletionChunk]
    model: str
    parts: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    ahead: list[StreamEvent] = field(default_factory=list)  # read while opening, not yet handed on
    done: bool = False

    def __repr__(self) -> str:  # never the text
        return f"ChunkStream(model={self.model!r}, parts={len(self.parts)}, done={self.done})"


def chunk_text(name: str, chunk: object, opened: ChunkStream) -> str | None:
    """A chunk's piece of text (None: it has none); its usage and model are kept on `opened`."""
    invalid = ProviderError(f"{name} sent a stream chunk that is not a valid chat completion chunk")
    if not isinstance(chunk, ChatCompletionChunk):
        raise invalid
    try:
        if isinstance(chunk.model, str) and chunk.model:
            opened.model = chunk.model
        if (usage := chunk.usage) is not None:
            opened.usage = Usage(
                prompt_tokens=count_or_none(getattr(usage, "prompt_tokens", None)),
                completion_tokens=count_or_none(getattr(usage, "completion_tokens", None)),
                total_tokens=count_or_none(getattr(usage, "total_tokens", None)),
            )
        choices = chunk.choices
        if not isinstance(choices, list):
            raise invalid
        text = next((choice.delta.content for choice in choices if choice.index == 0), None)
    except (AttributeError, TypeError) as exc:
        raise invalid from exc
    if text is not None and not isinstance(text, str):
        raise invalid
    return text or None


def count_or_none(value: object) -> int | None:
    """A token count as the provider sent it, if it is one (a non-negative int)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
