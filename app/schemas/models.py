"""What callers may learn about the models: the providers, aliases and defaults (`GET /models`,
MCP `list_models`), and what a key used and spent in a month (`GET /usage`).

Nothing secret: no endpoint URLs (they can carry credentials, and name internal hosts that a
caller, who reaches every model through this service, has no use for) and no keys.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.domain import BudgetStatusRecord, ModelUsageRecord

ProviderKindName = Literal["offline", "openai", "plugin"]


class ProviderCapabilities(BaseModel):
    streaming: bool = Field(description="the answer arrives piece by piece with `stream=true` (else in one piece)")
    structured_output: bool = Field(
        description="a task's `response_format` is sent in the provider's own structured-output mode; every "
        "provider takes one (the others are asked in the system message), and every answer is validated"
    )
    tools: bool = Field(description="the model may call tools (not yet supported)")


class ModelProvider(BaseModel):
    name: str = Field(description="the `provider` of `provider:model`")
    kind: ProviderKindName = Field(
        description="`openai`: the OpenAI API or an OpenAI-compatible endpoint; `plugin`: an installed provider "
        "plugin; `offline`: the built-in development provider, which calls no model"
    )
    capabilities: ProviderCapabilities


class ModelAlias(BaseModel):
    name: str = Field(description="what a task may give as its `model`")
    target: str = Field(description="the `provider:model` it runs")


class ModelCatalog(BaseModel):
    """The configured providers, aliases and defaults: what a task's `model` may be."""

    providers: list[ModelProvider]
    aliases: list[ModelAlias]
    default_model: str = Field(description="the `provider:model` a task without `model` runs")
    default_provider: str | None = Field(
        description="the provider of a bare model name (`gpt-4o`); null: a bare name must be an alias"
    )


class ModelUsage(BaseModel):
    model: str = Field(description="`provider:model`, as the tasks stored it")
    tasks: int = Field(description="tasks that reported usage, cache hits included")
    cached_tasks: int = Field(description="of those, answered from the cache (no provider call, no cost)")
    prompt_tokens: int = Field(description="prompt tokens of the provider calls (cache hits excluded)")
    completion_tokens: int
    total_tokens: int
    cost_usd: float = Field(description="what the priced calls cost, in US dollars")
    unpriced_tasks: int = Field(description="provider calls of a model in no price list: their cost is not included")

    @classmethod
    def from_record(cls, record: ModelUsageRecord) -> ModelUsage:
        return cls(
            model=record.model,
            tasks=record.tasks,
            cached_tasks=record.cached_tasks,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            total_tokens=record.total_tokens,
            cost_usd=float(record.cost_usd),
            unpriced_tasks=record.unpriced_tasks,
        )


class BudgetStatus(BaseModel):
    """The key's monthly budgets and what the ledger counts against them for the month.

    The ledger counts provider calls as their tasks end and keeps them when the tasks are purged
    or erased, so it can exceed the sum over `models`, which counts live tasks only."""

    monthly_token_budget: int | None = Field(description="tokens a month; null: no token budget")
    monthly_usd_budget: float | None = Field(description="US dollars a month; null: no dollar budget")
    tokens: int = Field(description="tokens the month's provider calls used")
    cost_usd: float = Field(description="what the month's priced provider calls cost")
    exceeded: bool = Field(description="a budget is spent: the key's submissions get 429 `budget_exceeded`")
    resets_at: datetime = Field(description="the next month's first instant (UTC), when the spend starts at 0")

    @classmethod
    def from_record(cls, record: BudgetStatusRecord) -> BudgetStatus:
        usd = record.monthly_usd_budget
        return cls(
            monthly_token_budget=record.monthly_token_budget,
            monthly_usd_budget=None if usd is None else float(usd),
            tokens=record.tokens,
            cost_usd=float(record.cost_usd),
            exceeded=record.exceeded,
            resets_at=record.resets_at,
        )


class UsageReport(BaseModel):
    """A key's tokens and cost per model for the tasks it submitted in one calendar month (UTC)."""

    owner_key_id: uuid.UUID
    month: str = Field(description="`YYYY-MM`", examples=["2026-12"])
    since: datetime = Field(description="the month's first instant (UTC), included")
    until: datetime = Field(description="the next month's first instant, excluded")
    models: list[ModelUsage]
    total_tokens: int = Field(description="the sum over `models`")
    cost_usd: float = Field(description="the sum over `models`, in US dollars")
    budget: BudgetStatus | None = Field(
        default=None, description="the key's budgets and the month's spend in the ledger; null: the key has none"
    )
