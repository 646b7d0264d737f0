"""A key's usage in a calendar month: what its tasks used and cost, per model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


@dataclass(frozen=True, slots=True)
class BudgetStatusRecord:
    """A key's budgets and its spend this month from the ledger (`key_usage`): provider calls
    only, counted as their tasks end, and kept when those tasks are purged or erased."""

    monthly_token_budget: int | None
    monthly_usd_budget: Decimal | None
    tokens: int
    cost_usd: Decimal
    resets_at: datetime  # the next month's first instant (UTC)

    @property
    def has_budget(self) -> bool:
        return self.monthly_token_budget is not None or self.monthly_usd_budget is not None

    @property
    def exceeded(self) -> bool:
        return (self.monthly_token_budget is not None and self.tokens >= self.monthly_token_budget) or (
            self.monthly_usd_budget is not None and self.cost_usd >= self.monthly_usd_budget
        )
