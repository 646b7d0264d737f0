"""What a provider call cost, in US dollars, from the `genai-prices` package's offline price data.

Nothing here reaches the network: the package's bundled snapshot is used as it is (its
`UpdatePrices` is never started), so a price is as current as the installed package.

Which of the package's price lists applies to a provider follows from its kind:

- `offline` costs nothing: 0.
- `openai` (the built-in provider and every named endpoint): first the vendor whose API the
  endpoint's base URL is (genai-prices knows Together, Groq, DeepSeek, ... by their URLs), else
  OpenAI's own list. A local Ollama serving `llama3.2` is in neither, so it is unpriced; a
  gateway (LiteLLM) passing `gpt-4o` on to OpenAI is priced as OpenAI.
- `plugin`: the list of the vendor named like the plugin, if genai-prices has one.

A model the list does not know is unpriced: `None`, never a guess. So is a call whose usage
lacks its prompt or completion tokens (a partial count would understate the cost).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from app.llm.base import Usage

log = logging.getLogger(__name__)

# Stored as NUMERIC(20, 12) (app/storage/tables.py): far below a cent per token, and exact in sums.
COST_QUANTUM = Decimal("1e-12")
FREE = Decimal(0)


@dataclass(frozen=True, slots=True)
class PriceList:
    """Where one provider's prices come from: a vendor's API URL, then a vendor id; or free."""

    api_url: str | None = None
    vendor: str | None = None
    free: bool = False

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """The price of one call of `model` with `usage`, or None when it cannot be known."""
        if self.free:
            return FREE
        if usage.prompt_tokens is None or usage.completion_tokens is None:
            return None
        return _price(self.api_url, self.vendor, model.lower(), usage.prompt_tokens, usage.completion_tokens)


UNPRICED = PriceList()


def _price(api_url: str | None, vendor: str | None, model: str, prompt: int, completion: int) -> Decimal | None:
    lookup = _model_of(api_url, vendor, model)
    if lookup is None:
        return None
    provider, info = lookup
    from genai_prices.types import Usage as PriceUsage

    try:
        calculated = info.calc_price(
            PriceUsage(input_tokens=prompt, output_tokens=completion), provider, genai_request_timestamp=None
        )
    except Exception as exc:  # the package's own data or rules; never worth failing a task over
        log.warning("could not price a call (%s)", type(exc).__name__)
        return None
    return Decimal(calculated.total_price).quantize(COST_QUANTUM)


@lru_cache(maxsize=1024)
def _model_of(api_url: str | None, vendor: str | None, model: str) -> tuple[Any, Any] | None:
    """The price list's provider and model entry, or None. Cached: the lookup walks every
    provider's patterns, and the names a deployment sees are few (misses included)."""
    from genai_prices.data_snapshot import get_snapshot

    snapshot = get_snapshot()
    candidates = ([(None, api_url)] if api_url else []) + ([(vendor, None)] if vendor else [])
    for provider_id, provider_api_url in candidates:
        try:
            return snapshot.find_provider_model(model, None, provider_id, provider_api_url)
        except LookupError:
            continue
    return None


def warm() -> None:
    """Load the price data now (about 0.2 s), at start-up, rather than during the first task."""
    _model_of(None, "openai", "gpt-4o-mini")


def as_float(cost: Decimal | None) -> float | None:
    return None if cost is None else float(cost)
