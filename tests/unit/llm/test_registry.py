"""The provider registry refuses a bad configuration at start-up: named endpoints that clash with a
built-in or each other or lack their key, aliases and a default model that do not resolve."""

from __future__ import annotations

from typing import Any

import pytest

from app.main import create_app
from tests.support.settings import UNUSED_DB, make_settings


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        pytest.param([{"name": "openai", "base_url": "http://a/v1"}], "'openai' is a built-in", id="openai"),
        pytest.param([{"name": "offline", "base_url": "http://a/v1"}], "'offline' is a built-in", id="offline"),
        pytest.param(
            [{"name": "twin", "base_url": "http://a/v1"}, {"name": "twin", "base_url": "http://b/v1"}],
            "'twin' is used twice",
            id="duplicate",
        ),
        pytest.param(
            [{"name": "vendor", "base_url": "http://a/v1", "api_key_env": "NO_SUCH_VARIABLE_FOR_TESTS"}],
            "NO_SUCH_VARIABLE_FOR_TESTS, which is not set",
            id="missing key variable",
        ),
    ],
)
def test_a_bad_endpoint_configuration_stops_the_start(endpoints, message):
    with pytest.raises(ValueError, match=message):
        create_app(make_settings(UNUSED_DB, provider_endpoints=endpoints))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            {"model_aliases": {"bad": "nowhere:x"}}, "alias 'bad' -> 'nowhere:x': unknown provider", id="target"
        ),
        pytest.param(
            {"model_aliases": {"bad": "offline"}}, "must point to 'provider:model'", id="target without colon"
        ),
        pytest.param({"model_aliases": {"a": "b", "b": "offline:x"}}, "aliases of aliases", id="alias of alias"),
        pytest.param({"model_aliases": {"bad": "offline:"}}, "the model is missing", id="target without model"),
        pytest.param({"model_aliases": {"offline:x": "offline:y"}}, "without ':'", id="alias with a colon"),
        pytest.param(
            {"model_aliases": {"fast": "openai:gpt-4o-mini"}},
            "-> 'openai:gpt-4o-mini': unknown provider",
            id="openai off",
        ),
        pytest.param({"default_model": "nowhere:x"}, "DEFAULT_MODEL 'nowhere:x': unknown provider", id="default"),
        pytest.param({"default_model": "smart"}, "DEFAULT_MODEL 'smart': unknown model", id="default alias"),
    ],
)
def test_a_bad_alias_or_default_stops_the_start(settings: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        create_app(make_settings(UNUSED_DB, **settings))


def test_with_a_default_provider_every_name_not_led_by_a_provider_is_bare():
    from app.llm.offline import OfflineProvider
    from app.llm.registry import ProviderRegistry

    class Other(OfflineProvider):
        name = "other"  # type: ignore[assignment]

    registry = ProviderRegistry(
        {"offline": OfflineProvider(), "other": Other()},
        "offline:echo",
        {"fast": "offline:quick"},
        default_provider="other",
    )
    routed = {name: registry.route(name).resolved for name in ("gpt-4o", "llama3.2:8b", "offline", "offline:x", "fast")}
    assert routed == {
        "gpt-4o": "other:gpt-4o",
        "llama3.2:8b": "other:llama3.2:8b",
        "offline": "other:offline",  # no colon: a model name, though a provider has that name
        "offline:x": "offline:x",
        "fast": "offline:quick",  # aliases win
    }
    assert [(p.name, p.kind.value) for p in registry.providers] == [("offline", "offline"), ("other", "offline")]
