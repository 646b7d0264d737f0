"""Which provider serves a model name: `provider:model`, or an alias of one.

Providers come from three places, all known at start-up:

- built in: `offline` (always) and `openai` (when OPENAI_API_KEY or OPENAI_BASE_URL is set);
- PROVIDER_ENDPOINTS: one OpenAI-compatible provider per named endpoint;
- plugins: the entry-point group `agent_service.providers` (see `app.llm.plugins`).

MODEL_ALIASES maps names without a colon to `provider:model`; DEFAULT_MODEL may be either.
Every alias target and the default are checked at start-up, so a typo stops the service
there instead of failing tasks later.

A bare model name (no configured provider before a `:`) that is not an alias goes to
DEFAULT_PROVIDER when one is set: `gpt-4o` is `openai:gpt-4o`, and so is Ollama's
`llama3.2:8b` with DEFAULT_PROVIDER=ollama (`llama3.2` names no provider). Without it, such a
name is a 422 `unknown_model` whose message lists what would work (never the name itself).

Each provider has a kind (`offline`, `openai` for every OpenAI-compatible endpoint, `plugin`),
which says where its prices come from (`app.llm.pricing`) and what `GET /models` shows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from app.domain import InvalidInput
from app.llm.base import Provider, StreamingProvider, supports_structured_output
from app.llm.offline import OfflineProvider
from app.llm.plugins import load_plugins
from app.llm.pricing import UNPRICED, PriceList
from app.settings import ProviderEndpoint, Settings

log = logging.getLogger(__name__)

BUILT_IN_PROVIDERS = frozenset({"offline", "openai"})


class ProviderKind(StrEnum):
    OFFLINE = "offline"
    OPENAI = "openai"  # the official SDK, against OpenAI or any OpenAI-compatible endpoint
    PLUGIN = "plugin"  # an installed distribution's factory (entry-point group agent_service.providers)


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """What the service may tell any caller about a provider: nothing secret (no URL, no key)."""

    name: str
    kind: ProviderKind
    streaming: bool  # implements StreamingProvider: the answer arrives piece by piece
    prices: PriceList = UNPRICED
    # Enforces a task's response_format in its own API (the others are asked in the system message).
    structured_output: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    model: str  # the provider's own model name
    prices: PriceList = UNPRICED  # what a call of it costs (app.llm.pricing)

    @property
    def resolved(self) -> str:
        """`provider:model`, as stored on the task row."""
        return f"{self.provider.name}:{self.model}"


class ProviderRegistry:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        default_model: str,
        aliases: Mapping[str, str] | None = None,
        *,
        kinds: Mapping[str, ProviderKind] | None = None,
        prices: Mapping[str, PriceList] | None = None,
        default_provider: str | None = None,
    ) -> None:
        self._providers = dict(providers)
        self._aliases = dict(aliases or {})
        for name, provider in self._providers.items():
            if provider.name != name:
                raise ValueError(f"provider registered as {name!r} calls itself {provider.name!r}")
        self._info = {
            name: _info_of(name, provider, (kinds or {}).get(name), (prices or {}).get(name))
            for name, provider in self._providers.items()
        }
        if default_provider is not None and default_provider not in self._providers:
            raise ValueError(
                f"DEFAULT_PROVIDER {default_provider!r} names no provider; there are: {', '.join(self.names)}"
            )
        self.default_provider = default_provider
        for alias, target in self._aliases.items():
            if not alias or ":" in alias or alias != alias.strip():
                raise ValueError(f"MODEL_ALIASES: alias {alias!r} must be a non-empty name without ':'")
            if ":" not in target:
                raise ValueError(
                    f"MODEL_ALIASES: alias {alias!r} must point to 'provider:model', not to {target!r} "
                    "(aliases of aliases are not supported)"
                )
            try:
                self._split(target)
            except InvalidInput as exc:
                raise ValueError(f"MODEL_ALIASES: alias {alias!r} -> {target!r}: {exc.message}") from None
        self.default_model = default_model
        try:
            self.route(default_model)
        except InvalidInput as exc:  # a default that names nothing is a configuration error: fail at start
            raise ValueError(f"DEFAULT_MODEL {default_model!r}: {exc.message}") from None

    @property
    def providers(self) -> list[ProviderInfo]:
        """Every provider's public description, by name."""
        return [self._info[name] for name in self.names]

    @property
    def names(self) -> list[str]:
        """The provider names, sorted."""
        return sorted(self._providers)

    @property
    def aliases(self) -> dict[str, str]:
        """Alias -> `provider:model`."""
        return dict(self._aliases)

    @property
    def known_models(self) -> list[str]:
        """The model names the configuration gives: each alias and its target, and the default
        (as written and resolved). The metrics label these by name, whatever clients send."""
        names = {*self._aliases, *self._aliases.values(), self.default_model, self.route(None).resolved}
        return sorted(names)

    def route(self, model: str | None) -> Route:
        """Resolve `provider:model`, an alias, a bare name (with DEFAULT_PROVIDER), or (None) the
        default; unknown names are a 422 `unknown_model`."""
        name = model or self.default_model
        target = self._aliases.get(name)
        if target is not None:  # aliases win, over DEFAULT_PROVIDER too
            name = target
        elif self.default_provider is not None and (":" not in name or name.partition(":")[0] not in self._providers):
            name = f"{self.default_provider}:{name}"  # a bare name: the whole of it is the model
        elif ":" not in name:
            raise InvalidInput(
                # Never the name itself: the caller made it up, and errors travel on (traces, the model).
                f"unknown model: use 'provider:model' or an alias (no DEFAULT_PROVIDER is set for bare "
                f"names); {self._choices()}",
                code="unknown_model",
            )
        provider, provider_model = self._split(name)
        return Route(provider, provider_model, self._info[provider.name].prices)

    def _split(self, name: str) -> tuple[Provider, str]:
        provider_name, _, provider_model = name.partition(":")
        provider = self._providers.get(provider_name)
        if provider is None:
            raise InvalidInput(f"unknown provider (before the ':'); {self._choices()}", code="unknown_model")
        if not provider_model.strip():
            raise InvalidInput(
                f"model must look like 'provider:model' (the model is missing); {self._choices()}",
                code="unknown_model",
            )
        return provider, provider_model

    def _choices(self) -> str:
        aliases = ", ".join(sorted(self._aliases)) or "none configured"
        return f"providers: {', '.join(self.names)}; aliases: {aliases}"

    async def aclose(self) -> None:
        for name, provider in self._providers.items():
            try:
                await provider.aclose()
            except Exception as exc:  # one provider's failure must not keep the others open
                log.error("provider %s failed to close (%s)", name, type(exc).__name__)


def build_registry(settings: Settings) -> ProviderRegistry:
    """Every provider the settings and the installed plugins describe; configuration errors are ValueError."""
    # Nothing here opens a connection (the HTTP clients connect on their first request),
    # so a configuration error below leaves nothing to close.
    providers: dict[str, Provider] = {"offline": OfflineProvider()}
    kinds: dict[str, ProviderKind] = {"offline": ProviderKind.OFFLINE}
    prices: dict[str, PriceList] = {}
    if settings.openai_configured:
        providers["openai"] = _openai_compatible(
            "openai",
            settings,
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            base_url=settings.openai_base_url,
        )
        kinds["openai"] = ProviderKind.OPENAI
        prices["openai"] = PriceList(api_url=settings.openai_base_url, vendor="openai")
    for endpoint in settings.provider_endpoints:
        if endpoint.name in BUILT_IN_PROVIDERS:
            raise ValueError(f"PROVIDER_ENDPOINTS: {endpoint.name!r} is a built-in provider's name; choose another")
        if endpoint.name in providers:
            raise ValueError(f"PROVIDER_ENDPOINTS: the name {endpoint.name!r} is used twice")
        providers[endpoint.name] = _openai_compatible(
            endpoint.name,
            settings,
            api_key=_endpoint_key(endpoint, settings),
            base_url=endpoint.base_url,
            structured_output=endpoint.structured_output,
        )
        kinds[endpoint.name] = ProviderKind.OPENAI
        prices[endpoint.name] = PriceList(api_url=endpoint.base_url, vendor="openai")
    # Configuration beats installed packages: a plugin may not take a built-in's or an endpoint's name.
    providers |= load_plugins(settings, taken=BUILT_IN_PROVIDERS | providers.keys())
    return ProviderRegistry(
        providers,
        settings.resolved_default_model,
        settings.model_aliases,
        kinds=kinds,
        prices=prices,
        default_provider=settings.default_provider,
    )


def _info_of(name: str, provider: Provider, kind: ProviderKind | None, prices: PriceList | None) -> ProviderInfo:
    """A provider's public description; unlisted providers are plugins, priced as the vendor of their name."""
    if kind is None:
        kind = ProviderKind.OFFLINE if isinstance(provider, OfflineProvider) else ProviderKind.PLUGIN
    if prices is None:
        prices = PriceList(free=True) if kind is ProviderKind.OFFLINE else PriceList(vendor=name)
    return ProviderInfo(
        name,
        kind,
        isinstance(provider, StreamingProvider),
        prices,
        structured_output=supports_structured_output(provider),
    )


def _openai_compatible(
    name: str, settings: Settings, *, api_key: str | None, base_url: str | None, structured_output: bool = True
) -> Provider:
    # Imported here: the SDK takes a second to import, and many deployments never use it.
    from app.llm.openai_compatible import OpenAICompatibleProvider

    return OpenAICompatibleProvider(
        name,
        api_key=api_key,
        base_url=base_url,
        request_timeout_seconds=settings.provider_request_timeout_seconds,
        max_retries=settings.provider_max_retries,
        # No wait between attempts may end past the whole call's deadline: the task then fails
        # with what the provider last answered, not with the service's `timeout`.
        retry_max_seconds=min(settings.provider_retry_max_seconds, settings.provider_timeout_seconds),
        trace=settings.tracing_requests,
        structured_output=structured_output,
    )


def _endpoint_key(endpoint: ProviderEndpoint, settings: Settings) -> str | None:
    """The endpoint's key, from the variable `api_key_env` names: the environment first, then `.env`."""
    variable = endpoint.api_key_env
    if not variable:
        return None
    value = os.environ.get(variable)
    env_file = settings.model_config.get("env_file")
    if value is None and isinstance(env_file, str | Path) and Path(env_file).is_file():
        from dotenv import dotenv_values

        value = dotenv_values(env_file).get(variable)
    if not value or not value.strip():
        raise ValueError(
            f"PROVIDER_ENDPOINTS: endpoint {endpoint.name!r} takes its key from {variable}, which is not set"
        )
    return value.strip()
