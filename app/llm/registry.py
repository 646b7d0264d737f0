"""Which provider serves a `provider:model` name."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import InvalidInput
from app.llm.base import Provider
from app.llm.offline import OfflineProvider
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    model: str  # the provider's own model name

    @property
    def resolved(self) -> str:
        """`provider:model`, as stored on the task row."""
        return f"{self.provider.name}:{self.model}"


class ProviderRegistry:
    def __init__(self, providers: dict[str, Provider], default_model: str) -> None:
        self._providers = providers
        self.default_model = default_model
        self.route(default_model)  # a default that names nothing is a configuration error: fail at start

    @property
    def names(self) -> list[str]:
        return sorted(self._providers)

    def route(self, model: str | None) -> Route:
        """Resolve `provider:model` (or the default) to a provider, or raise a 422-style error."""
        name = model or self.default_model
        provider_name, sep, provider_model = name.partition(":")
        if not sep or not provider_model:
            raise InvalidInput(
                f"model must look like 'provider:model'; available providers: {', '.join(self.names)}",
                code="unknown_model",
            )
        provider = self._providers.get(provider_name)
        if provider is None:
            raise InvalidInput(
                f"unknown provider {provider_name!r}; available providers: {', '.join(self.names)}",
                code="unknown_model",
            )
        return Route(provider, provider_model)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


def build_registry(settings: Settings) -> ProviderRegistry:
    providers: dict[str, Provider] = {"offline": OfflineProvider()}
    if settings.openai_configured:
        # Imported here: the SDK takes a second to import, and many deployments never use it.
        from app.llm.openai_compatible import OpenAICompatibleProvider

        providers["openai"] = OpenAICompatibleProvider(
            "openai",
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            base_url=settings.openai_base_url,
            timeout_seconds=settings.provider_timeout_seconds,
        )
    return ProviderRegistry(providers, settings.resolved_default_model)
