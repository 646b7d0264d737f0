"""What any key may ask about models: the catalog (`list_models`) and its own usage (`get_usage`).

`AgentService` inherits these, as it does the oversight operations; REST and MCP call them alike.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from app.domain import Actor, Channel, Forbidden, InvalidInput, Principal
from app.llm.registry import ProviderRegistry
from app.schemas import (
    BudgetStatus,
    ModelAlias,
    ModelCatalog,
    ModelProvider,
    ModelUsage,
    ProviderCapabilities,
    UsageReport,
)
from app.storage import budgets, usage
from app.storage.database import Database

_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")  # ASCII: \d matches the digits of every script
FIRST_YEAR, LAST_YEAR = 1970, 9998


class CatalogOperations:
    """The model catalog and usage reports. Set up by `AgentService.__init__`."""

    _db: Database
    _providers: ProviderRegistry

    def list_models(self, principal: Principal) -> ModelCatalog:
        """The providers (name, kind, capabilities), the aliases and the defaults; any key may ask.

        Not audited: it says nothing of anyone's tasks. Nothing secret is in it (no URLs, no keys)."""
        registry = self._providers
        return ModelCatalog(
            providers=[
                ModelProvider(
                    name=info.name,
                    kind=info.kind.value,
                    # Tools are not offered by any provider yet (issue 15).
                    capabilities=ProviderCapabilities(
                        streaming=info.streaming, structured_output=info.structured_output, tools=False
                    ),
                )
                for info in registry.providers
            ],
            aliases=[ModelAlias(name=name, target=target) for name, target in sorted(registry.aliases.items())],
            default_model=registry.route(None).resolved,
            default_provider=registry.default_provider,
        )

    async def get_usage(
        self,
        principal: Principal,
        *,
        month: str | None,
        owner_key_id: uuid.UUID | None = None,
        channel: Channel,
        request_id: str | None = None,
    ) -> UsageReport:
        """A key's tokens and cost per model for the tasks submitted in one UTC month (default: this one).

        A caller's own usage, unaudited. Auditors and admins may name another key (`owner_key_id`),
        and that look is audited (`usage_read`), as reading the audit log is; a client naming any
        key but its own is refused (403) before anything is looked up, so the answer says nothing
        of whether the key exists."""
        label, since, until = parse_month(month, datetime.now(UTC))
        owner = owner_key_id or principal.key_id
        audited_as = None
        if owner != principal.key_id:
            if not principal.sees_every_task:
                raise Forbidden("owner_key_id is for the auditor and admin roles: a client sees its own usage")
            audited_as = Actor(principal.key_id, principal.role, channel, request_id)
        async with self._db.connection() as conn:
            records = await usage.usage(conn, owner, since, until, audited_as=audited_as)
            status = await budgets.budget_status(conn, owner, since.date())
        models = [ModelUsage.from_record(r) for r in records]
        return UsageReport(
            owner_key_id=owner,
            month=label,
            since=since,
            until=until,
            models=models,
            total_tokens=sum(r.total_tokens for r in records),
            cost_usd=float(sum((r.cost_usd for r in records), start=0)),
            budget=BudgetStatus.from_record(status) if status is not None and status.has_budget else None,
        )


def parse_month(month: str | None, now: datetime) -> tuple[str, datetime, datetime]:
    """`YYYY-MM` (None: the month of `now`) as its label and its first and next month's first instant, in UTC.
    Anything else is a 422 `invalid_month` that does not repeat what was sent."""
    if month is None:
        year, number = now.year, now.month
    else:
        match = _MONTH.fullmatch(month)
        if match is None or not FIRST_YEAR <= int(match.group(1)) <= LAST_YEAR:
            raise InvalidInput(
                f"month must be a calendar month as YYYY-MM (e.g. 2031-07), from {FIRST_YEAR}-01 to {LAST_YEAR}-12",
                code="invalid_month",
            )
        year, number = int(match.group(1)), int(match.group(2))
    since = datetime(year, number, 1, tzinfo=UTC)
    until = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return f"{year:04d}-{number:02d}", since, until
