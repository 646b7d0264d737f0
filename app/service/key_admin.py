"""Managing API keys: list, create (the key shown once), revoke, set limits, for admin keys.

One place for the rules `agent-service keys` and the console's keys page both follow: a name is
1 to 200 characters, a retention ceiling is greater than 0 days, and a change of limits that does
not name the data policy leaves it as it is (a privacy setting is never loosened by a form or a
command that did not ask for it). Every act is recorded in the audit log in its own transaction
(`key_create`, `key_revoke`, `key_limits`); the event names the key, never the key itself.
Budgets are like the data policy: a change that does not name one leaves it as it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from app.access.keys import KeyStore, NewKey
from app.domain import Actor, ApiKeyRecord, Channel, Forbidden, InvalidInput, NotFound, Principal, Role, StoreOutput

MAX_NAME_CHARS = 200
MAX_USD_BUDGET = Decimal(10) ** 12  # NUMERIC(20, 6) holds 14 digits before the point


@dataclass(frozen=True, slots=True)
class KeySettings:
    """A key's own limits (None: the server's default; 0: none), data policy and monthly budgets
    (None: none)."""

    rate_limit_per_minute: int | None = None
    max_running_tasks: int | None = None
    store_output: StoreOutput = StoreOutput.ALLOWED
    max_retention_days: float | None = None  # None: no ceiling of its own
    monthly_token_budget: int | None = None
    monthly_usd_budget: Decimal | None = None

    def checked(self) -> KeySettings:
        for value in (self.rate_limit_per_minute, self.max_running_tasks):
            if value is not None and value < 0:
                raise InvalidInput("a limit is 0 (none) or a whole number above it")
        if self.max_retention_days is not None and not self.max_retention_days > 0:
            raise InvalidInput("a retention ceiling is a number of days greater than 0")
        if self.monthly_token_budget is not None and not self.monthly_token_budget > 0:
            raise InvalidInput("a monthly token budget is a whole number greater than 0")
        usd = self.monthly_usd_budget
        if usd is not None and not (usd.is_finite() and 0 < usd <= MAX_USD_BUDGET):
            raise InvalidInput(f"a monthly dollar budget is greater than 0 and at most {MAX_USD_BUDGET:,}")
        return self


def checked_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"a key's name is 1 to {MAX_NAME_CHARS} characters")
    return name


async def create_key(keys: KeyStore, actor: Actor | None, name: str, role: Role, settings: KeySettings) -> NewKey:
    """A new key and its webhook secret (shown once); recorded as `key_create` when `actor` is given."""
    settings = settings.checked()
    return await keys.create(
        checked_name(name),
        role,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        max_running_tasks=settings.max_running_tasks,
        store_output=settings.store_output,
        max_retention_days=settings.max_retention_days,
        monthly_token_budget=settings.monthly_token_budget,
        monthly_usd_budget=settings.monthly_usd_budget,
        actor=actor,
    )


async def set_key_limits(
    keys: KeyStore,
    actor: Actor | None,
    key_id: uuid.UUID,
    *,
    rate_limit_per_minute: int | None,
    max_running_tasks: int | None,
    store_output: StoreOutput | None,
    max_retention_days: float | None,
    monthly_token_budget: int | None = None,
    monthly_usd_budget: Decimal | None = None,
) -> ApiKeyRecord:
    """New limits for a key (None: the server's default). The data policy and the budgets are
    never loosened unasked: `store_output` None keeps it; `max_retention_days` and each budget
    None keep it, 0 removes it."""
    current = next((r for r in await keys.list() if r.id == key_id), None)
    if current is None:
        raise NotFound("no API key has that id")
    if max_retention_days is not None and max_retention_days < 0:
        raise InvalidInput("a retention ceiling is 0 (none) or a number of days greater than 0")
    if monthly_token_budget is not None and monthly_token_budget < 0:
        raise InvalidInput("a monthly token budget is 0 (none) or a whole number greater than 0")
    if monthly_usd_budget is not None and not (monthly_usd_budget.is_finite() and monthly_usd_budget >= 0):
        raise InvalidInput("a monthly dollar budget is 0 (none) or greater")
    ceiling = current.max_retention_days if max_retention_days is None else (max_retention_days or None)
    tokens = current.monthly_token_budget if monthly_token_budget is None else (monthly_token_budget or None)
    usd = current.monthly_usd_budget if monthly_usd_budget is None else (monthly_usd_budget or None)
    settings = KeySettings(
        rate_limit_per_minute,
        max_running_tasks,
        current.store_output if store_output is None else store_output,
        ceiling,
        tokens,
        usd,
    ).checked()
    return await keys.set_limits(
        key_id,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        max_running_tasks=settings.max_running_tasks,
        store_output=settings.store_output,
        max_retention_days=settings.max_retention_days,
        monthly_token_budget=settings.monthly_token_budget,
        monthly_usd_budget=settings.monthly_usd_budget,
        actor=actor,
    )


def require_admin(principal: Principal) -> None:
    if principal.role is not Role.ADMIN:
        raise Forbidden("managing API keys is for the admin role")


class KeyOperations:
    """The admin's key management, as `AgentService` offers it. Set up by `AgentService.__init__`."""

    _keys: KeyStore

    async def list_keys(self, principal: Principal) -> list[ApiKeyRecord]:
        """Every key, oldest first: never a key, nor (to the caller) its hash."""
        require_admin(principal)
        return await self._keys.list()

    async def create_key(
        self,
        principal: Principal,
        name: str,
        role: Role,
        settings: KeySettings,
        *,
        channel: Channel,
        request_id: str | None = None,
    ) -> NewKey:
        require_admin(principal)
        return await create_key(self._keys, _actor(principal, channel, request_id), name, role, settings)

    async def revoke_key(
        self, principal: Principal, key_id: uuid.UUID, *, channel: Channel, request_id: str | None = None
    ) -> ApiKeyRecord:
        """Revoke a key: refused everywhere at once, its console sessions ended (audited)."""
        require_admin(principal)
        return await self._keys.revoke(key_id, actor=_actor(principal, channel, request_id))

    async def set_key_limits(
        self,
        principal: Principal,
        key_id: uuid.UUID,
        *,
        rate_limit_per_minute: int | None,
        max_running_tasks: int | None,
        store_output: StoreOutput | None,
        max_retention_days: float | None,
        monthly_token_budget: int | None = None,
        monthly_usd_budget: Decimal | None = None,
        channel: Channel,
        request_id: str | None = None,
    ) -> ApiKeyRecord:
        require_admin(principal)
        return await set_key_limits(
            self._keys,
            _actor(principal, channel, request_id),
            key_id,
            rate_limit_per_minute=rate_limit_per_minute,
            max_running_tasks=max_running_tasks,
            store_output=store_output,
            max_retention_days=max_retention_days,
            monthly_token_budget=monthly_token_budget,
            monthly_usd_budget=monthly_usd_budget,
        )


def _actor(principal: Principal, channel: Channel, request_id: str | None) -> Actor:
    return Actor(principal.key_id, principal.role, channel, request_id)
