"""Which native providers the settings enable: one per vendor key (the short form, as OPENAI_API_KEY
enables `openai`), and `PROVIDER_ENDPOINTS` entries with a `kind`; mistakes stop the start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.llm.registry import build_registry
from app.settings import ProviderEndpoint
from tests.support.settings import UNUSED_DB, make_settings

EVERY_VENDOR = {
    "anthropic_api_key": "sk-ant-x",
    "gemini_api_key": "g-x",
    "groq_api_key": "gsk-x",
    "mistral_api_key": "m-x",
    "co_api_key": "co-x",
    "aws_region": "eu-west-1",
    "aws_access_key_id": "AKIDX",
    "aws_secret_access_key": "secret-x",
}


async def test_each_vendor_key_enables_the_provider_named_like_the_vendor():
    registry = build_registry(make_settings(UNUSED_DB, **EVERY_VENDOR))
    try:
        described = {(p.name, p.kind.value, p.streaming) for p in registry.providers}
        assert described == {
            ("offline", "offline", False),
            ("example", "plugin", False),
            *((vendor, vendor, True) for vendor in ("anthropic", "google", "groq", "mistral", "cohere", "bedrock")),
        }
        assert registry.route("anthropic:claude-sonnet-4-5").resolved == "anthropic:claude-sonnet-4-5"
    finally:
        await registry.aclose()


@pytest.mark.parametrize(
    ("settings", "enabled"),
    [
        pytest.param({"google_api_key": "g"}, {"google"}, id="GOOGLE_API_KEY"),
        pytest.param({"anthropic_base_url": "http://127.0.0.1:9"}, {"anthropic"}, id="ANTHROPIC_BASE_URL"),
        pytest.param({"aws_region": "us-east-1"}, set(), id="a region without credentials"),
        pytest.param({"aws_access_key_id": "AKID"}, set(), id="credentials without a region"),
        pytest.param({"aws_region": "us-east-1", "aws_bearer_token_bedrock": "t"}, {"bedrock"}, id="Bedrock API key"),
    ],
)
async def test_what_enables_a_vendor(settings, enabled):
    registry = build_registry(make_settings(UNUSED_DB, **settings))
    try:
        assert set(registry.names) - {"offline", "example"} == enabled
    finally:
        await registry.aclose()


async def test_endpoints_of_a_kind_sit_beside_the_short_form():
    endpoints = [
        {"name": "claude-eu", "kind": "anthropic", "base_url": "http://127.0.0.1:9"},
        {"name": "bedrock-us", "kind": "bedrock", "region": "us-east-1"},
        {"name": "gemini", "kind": "google"},
    ]
    registry = build_registry(make_settings(UNUSED_DB, anthropic_api_key="k", provider_endpoints=endpoints))
    try:
        kinds = {p.name: p.kind.value for p in registry.providers}
        assert kinds["anthropic"] == kinds["claude-eu"] == "anthropic"
        assert (kinds["bedrock-us"], kinds["gemini"]) == ("bedrock", "google")
    finally:
        await registry.aclose()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param({"name": "x"}, "needs a base_url", id="openai without a URL"),
        pytest.param(
            {"name": "x", "kind": "anthropic", "region": "eu-west-1"}, "'bedrock' only", id="region elsewhere"
        ),
        pytest.param({"name": "x", "kind": "azure"}, "Input should be", id="unknown kind"),
    ],
)
def test_an_endpoint_entry_is_checked(entry, message):
    with pytest.raises(ValidationError, match=message):
        ProviderEndpoint.model_validate(entry)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            {"anthropic_api_key": "k", "provider_endpoints": [{"name": "anthropic", "kind": "anthropic"}]},
            "'anthropic' is already the provider its vendor's key enables",
            id="a vendor's name taken twice",
        ),
        pytest.param(
            {"provider_endpoints": [{"name": "aws", "kind": "bedrock"}]},
            "needs a region",
            id="bedrock without a region",
        ),
    ],
)
def test_a_clash_or_a_missing_region_stops_the_start(settings, message):
    with pytest.raises(ValueError, match=message):
        build_registry(make_settings(UNUSED_DB, **settings))


async def test_without_the_vendor_key_an_endpoint_may_take_the_vendor_name():
    endpoints = [{"name": "anthropic", "kind": "anthropic", "base_url": "http://127.0.0.1:9"}]
    registry = build_registry(make_settings(UNUSED_DB, provider_endpoints=endpoints))
    try:
        assert "anthropic" in registry.names
    finally:
        await registry.aclose()
