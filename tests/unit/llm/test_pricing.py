"""Prices from genai-prices' bundled data: by the endpoint's vendor, then OpenAI's list; free
offline; None when the model is unknown or the usage incomplete. Never the network."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from app.domain import InvalidInput
from app.llm.base import Usage
from app.llm.pricing import PriceList
from app.service.catalog import parse_month

USAGE = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)


def listed(model: str, provider: str) -> Decimal:
    usage = PriceUsage(input_tokens=1000, output_tokens=500)
    return Decimal(calc_price(usage, model, provider_id=provider).total_price).quantize(Decimal("1e-12"))


def test_openai_models_are_priced_from_openais_list_whatever_the_endpoint():
    local_gateway = PriceList(api_url="http://127.0.0.1:4000/v1", vendor="openai")
    assert local_gateway.cost("gpt-4o-mini", USAGE) == listed("gpt-4o-mini", "openai") > 0
    assert PriceList(vendor="openai").cost("GPT-4o", USAGE) == listed("gpt-4o", "openai")


def test_an_endpoint_of_a_known_vendor_is_priced_by_that_vendor():
    groq = PriceList(api_url="https://api.groq.com/openai/v1", vendor="openai")
    cost = groq.cost("llama-3.3-70b-versatile", USAGE)
    assert cost == listed("llama-3.3-70b-versatile", "groq")


@pytest.mark.parametrize(
    ("prices", "model"),
    [
        (PriceList(api_url="http://localhost:11434/v1", vendor="openai"), "llama3.2"),
        (PriceList(vendor="openai"), "no-such-model"),
        (PriceList(vendor="mycorp"), "gpt-4o"),  # a plugin named like no vendor
        (PriceList(), "gpt-4o"),
    ],
)
def test_an_unknown_model_or_vendor_is_unpriced(prices, model):
    assert prices.cost(model, USAGE) is None


def test_incomplete_usage_is_unpriced_and_offline_is_free():
    assert PriceList(vendor="openai").cost("gpt-4o", Usage(prompt_tokens=10)) is None
    assert PriceList(free=True).cost("anything", Usage()) == 0


def test_months_are_ascii_yyyy_mm_in_utc():
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert parse_month(None, now) == ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert parse_month("2027-02", now)[1:] == (datetime(2027, 2, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC))
    for bad in ("2026-13", "1969-12", "9999-01", "2026-1", " 2026-12", "2026-12\n", "\uff12\uff10\uff12\uff16-12"):
        with pytest.raises(InvalidInput) as refused:
            parse_month(bad, now)
        assert refused.value.code == "invalid_month"
