"""The OpenAI-compatible provider's streaming, over real HTTP against the fake provider: the pieces
in order and unchanged, the usage from the last chunk, retries before the first piece only, a
connection dropped mid-answer as a typed error, and `stream_completion` for providers that
cannot stream (plugins) and for those that can.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from example_provider import ExampleProvider

from app.llm.base import (
    Completion,
    CompletionRequest,
    Message,
    ProviderError,
    QuotaExceeded,
    StreamEvent,
    StreamingProvider,
    TextDelta,
    stream_completion,
)
from app.llm.openai_compatible import OpenAICompatibleProvider
from tests.support.fake_openai import FakeOpenAI, Reply, error_reply

REQUEST = CompletionRequest(model="gpt-test", messages=(Message("user", "tell me a story"),))
# Multibyte characters, a piece split inside a word, whitespace-only pieces and line breaks.
PIECES = ["Once", " upon", " a tïme", " 🐉", "  ", "\n", "dra", "gons\r\n", "😀 ", "终"]


@pytest.fixture
async def provider(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAICompatibleProvider]:
    made = OpenAICompatibleProvider(
        "openai",
        api_key="sk-test",
        base_url=fake_openai.base_url,
        request_timeout_seconds=2.0,
        max_retries=2,
        retry_max_seconds=5.0,
    )
    yield made
    await made.aclose()


async def collect(provider: StreamingProvider) -> list[StreamEvent]:
    return [event async for event in provider.stream(REQUEST)]


async def test_the_pieces_arrive_in_order_unchanged_then_the_completion_with_its_usage(provider, fake_openai):
    fake_openai.enqueue(Reply(chunks=PIECES))

    events = await collect(provider)

    assert isinstance(provider, StreamingProvider)
    assert [event.text for event in events[:-1] if isinstance(event, TextDelta)] == PIECES
    final = events[-1]
    assert isinstance(final, Completion)
    assert final.text == "".join(PIECES)
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (7, 10, 17)
    assert fake_openai.count == 1
    sent = fake_openai.requests[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_the_pieces_are_handed_on_as_they_arrive_not_at_the_end(provider, fake_openai):
    fake_openai.enqueue(Reply(chunks=["one", "two", "three"], chunk_delay=0.3))
    arrivals: list[float] = []
    started = time.monotonic()

    completion = await stream_completion(provider, REQUEST, lambda text: arrivals.append(time.monotonic() - started))

    assert completion.text == "onetwothree"
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 0.2
    assert arrivals[2] - arrivals[1] >= 0.2


async def test_a_failure_before_the_first_piece_is_retried(provider, fake_openai):
    fake_openai.enqueue(
        error_reply(503, code="busy", headers={"Retry-After": "0"}),
        Reply(chunks=["never", "sent"], break_after=0),  # dropped before its first piece
        Reply(chunks=["at", " last"]),
    )

    pieces: list[str] = []
    completion = await stream_completion(provider, REQUEST, pieces.append)

    assert pieces == ["at", " last"]
    assert completion.text == "at last"
    assert fake_openai.count == 3


async def test_a_connection_dropped_after_a_piece_ends_the_stream_with_a_provider_error_and_no_retry(
    provider, fake_openai
):
    fake_openai.enqueue(Reply(chunks=["the start", " and", " more"], break_after=2), Reply(chunks=["again"]))

    pieces: list[str] = []
    with pytest.raises(ProviderError) as raised:
        await stream_completion(provider, REQUEST, pieces.append)

    assert pieces == ["the start", " and"]
    assert raised.value.code == "provider_error"
    assert raised.value.message == "openai dropped the connection mid-answer"
    assert fake_openai.count == 1, "nothing is retried once text was handed on"


async def test_a_refusal_that_is_not_retryable_is_raised_at_once(provider, fake_openai):
    fake_openai.enqueue(error_reply(429, code="insufficient_quota", type="insufficient_quota"))

    with pytest.raises(QuotaExceeded):
        await collect(provider)
    assert fake_openai.count == 1


async def test_retries_that_run_out_say_how_many_attempts_were_made(provider, fake_openai):
    fake_openai.enqueue(*[error_reply(500, headers={"Retry-After": "0"})] * 3)

    with pytest.raises(ProviderError) as raised:
        await collect(provider)
    assert raised.value.message == "openai answered HTTP 500; gave up after 3 attempts"


async def test_a_stream_stopped_early_hangs_up_on_the_provider(provider, fake_openai):
    fake_openai.enqueue(Reply(chunks=["first", "second", "third"], chunk_delay=0.5))
    pieces: list[str] = []

    call = asyncio.create_task(stream_completion(provider, REQUEST, pieces.append))
    deadline = time.monotonic() + 5
    while not pieces and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    deadline = time.monotonic() + 5
    while not fake_openai.hang_ups and time.monotonic() < deadline:
        await asyncio.sleep(0.02)

    assert pieces == ["first"]
    assert len(fake_openai.hang_ups) == 1


async def test_a_provider_that_cannot_stream_hands_over_its_whole_answer_as_one_piece():
    plugin = ExampleProvider()
    pieces: list[str] = []

    completion = await stream_completion(plugin, REQUEST, pieces.append)

    assert not isinstance(plugin, StreamingProvider)
    assert pieces == ["example provider: 4 words"]
    assert completion.text == "example provider: 4 words"
    assert completion.usage.total_tokens is not None


class _Echoing:
    """A streaming provider of the tests' own: empty pieces along the way, a final text of its own."""

    name = "echoing"

    async def complete(self, request: CompletionRequest) -> Completion:
        raise AssertionError("a streaming provider is streamed")

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        for text in ("a", "", "b"):
            yield TextDelta(text)
        yield Completion(text="something else", model="m")

    async def aclose(self) -> None:
        return None


async def test_the_completion_is_the_pieces_handed_over_whatever_the_provider_says_at_the_end():
    pieces: list[str] = []

    completion = await stream_completion(_Echoing(), REQUEST, pieces.append)

    assert pieces == ["a", "b"], "empty pieces are not handed over"
    assert completion.text == "ab"


def test_a_delta_keeps_its_text_out_of_its_repr():
    assert "secret" not in repr(TextDelta("secret"))
