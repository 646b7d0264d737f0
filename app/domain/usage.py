"""A key's usage in a calendar month: what its tasks used and cost, per model."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class ModelUsageRecord:
    """One model's share of a key's month. Tokens count provider calls only (not cache hits,
    which repeat a stored answer's usage but call nothing); `cost_usd` sums the priced calls."""

    model: str
    tasks: int  # tasks that report usage, cache hits included
    cached_tasks: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: Decimal
    unpriced_tasks: int  # provider calls whose model is in no price list (their cost is unknown)
