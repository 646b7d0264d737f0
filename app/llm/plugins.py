"""Third-party providers, found through the entry-point group `agent_service.providers`.

A plugin is any installed distribution that declares, in its pyproject.toml:

    [project.entry-points."agent_service.providers"]
    mycorp = "mycorp_llm:create_provider"

The entry point's name is the provider's name (the `mycorp` of `mycorp:some-model`); its
object is a callable `factory(settings) -> Provider` (the protocol in `app.llm.base`),
called once at start-up. A plugin that cannot be imported, whose factory raises, or whose
result is not a provider of that name, is logged at ERROR and skipped: the service starts
without it. Only the exception's type is logged, never its text (it could carry secrets).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection
from importlib.metadata import EntryPoint, entry_points

from app.llm.base import Provider
from app.settings import Settings

ENTRY_POINT_GROUP = "agent_service.providers"
# The same rule as a configured endpoint's name: it must fit in `provider:model`.
PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")

log = logging.getLogger(__name__)

ProviderFactory = Callable[[Settings], Provider]


def load_plugins(settings: Settings, taken: Collection[str] = ()) -> dict[str, Provider]:
    """Build every installed plugin provider whose name is valid and not in `taken`."""
    found: dict[str, Provider] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        name = entry_point.name
        where = _origin(entry_point)
        if not PROVIDER_NAME.fullmatch(name):
            log.error("provider plugin %r from %s skipped: the name must match %s", name, where, PROVIDER_NAME.pattern)
            continue
        if name in taken or name in found:
            log.error("provider plugin %r from %s skipped: that provider name is already in use", name, where)
            continue
        provider = _build(entry_point, settings, where)
        if provider is not None:
            found[name] = provider
            log.info("provider plugin %r loaded from %s", name, where)
    return found


def _build(entry_point: EntryPoint, settings: Settings, where: str) -> Provider | None:
    name = entry_point.name
    try:
        factory = entry_point.load()
    except Exception as exc:
        log.error("provider plugin %r from %s could not be loaded (%s)", name, where, type(exc).__name__)
        return None
    if not callable(factory):
        log.error("provider plugin %r from %s skipped: %s is not callable", name, where, entry_point.value)
        return None
    try:
        provider = factory(settings)
    except Exception as exc:
        log.error("provider plugin %r from %s failed to build (%s)", name, where, type(exc).__name__)
        return None
    if not isinstance(provider, Provider):
        log.error(
            "provider plugin %r from %s skipped: its factory returned %s, not a provider (name, complete, aclose)",
            name,
            where,
            type(provider).__name__,
        )
        return None
    if provider.name != name:
        log.error(
            "provider plugin %r from %s skipped: its provider calls itself %r; the names must match",
            name,
            where,
            provider.name,
        )
        return None
    return provider


def _origin(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    return f"{dist.name} ({entry_point.value})" if dist is not None else entry_point.value
