"""Which native providers the settings enable, and with what credentials.

The short form, one per vendor, mirrors `OPENAI_API_KEY`: its key set, the provider named like the
vendor exists (`ANTHROPIC_API_KEY` -> `anthropic:claude-...`). `PROVIDER_ENDPOINTS` entries with a
`kind` add more, under names of their own (another region, a gateway, a local stand-in).

Imported by `app.llm.registry` at start-up; the vendors' SDKs are imported only for the providers
configured (`app.llm.native_models`).
"""

from __future__ import annotations

from pydantic import SecretStr

from app.llm.base import Provider
from app.llm.native_models import Credentials
from app.settings import ProviderEndpoint, ProviderKindName, Settings

# A native kind -> the genai-prices provider whose prices it pays (app.llm.pricing).
VENDOR_PROVIDERS: dict[str, str] = {
    "anthropic": "anthropic",
    "google": "google",
    "groq": "groq",
    "mistral": "mistral",
    "bedrock": "aws",
    "cohere": "cohere",
}


def vendor_credentials(settings: Settings) -> dict[ProviderKindName, Credentials]:
    """The vendors whose short-form settings are set, each with its credentials."""
    enabled: dict[ProviderKindName, Credentials] = {}
    if settings.anthropic_api_key is not None or settings.anthropic_base_url is not None:
        enabled["anthropic"] = Credentials(_secret(settings.anthropic_api_key), settings.anthropic_base_url)
    google_key = settings.gemini_api_key or settings.google_api_key
    if google_key is not None:
        enabled["google"] = Credentials(_secret(google_key))
    if settings.groq_api_key is not None:
        enabled["groq"] = Credentials(_secret(settings.groq_api_key))
    if settings.mistral_api_key is not None:
        enabled["mistral"] = Credentials(_secret(settings.mistral_api_key))
    if settings.co_api_key is not None:
        enabled["cohere"] = Credentials(_secret(settings.co_api_key))
    if settings.bedrock_configured:
        enabled["bedrock"] = _aws(settings, api_key=_secret(settings.aws_bearer_token_bedrock))
    return enabled


def endpoint_credentials(endpoint: ProviderEndpoint, settings: Settings, key: str | None) -> Credentials:
    """A `PROVIDER_ENDPOINTS` entry's credentials: its `api_key_env` key and `base_url`; for `bedrock`
    also its region (or `AWS_REGION`) and, without a key, the `AWS_*` credentials."""
    if endpoint.kind == "bedrock":
        region = endpoint.region or settings.aws_region
        if region is None:
            raise ValueError(f"PROVIDER_ENDPOINTS: bedrock endpoint {endpoint.name!r} needs a region (or AWS_REGION)")
        return _aws(settings, api_key=key, base_url=endpoint.base_url, region=region)
    return Credentials(api_key=key, base_url=endpoint.base_url)


def native_provider(name: str, kind: ProviderKindName, credentials: Credentials, settings: Settings) -> Provider:
    # Imported here: pydantic-ai and the vendors' SDKs take a while to import, and many deployments use none.
    from app.llm.native import NativeProvider

    return NativeProvider(
        name,
        kind,
        credentials,
        request_timeout_seconds=settings.provider_request_timeout_seconds,
        max_retries=settings.provider_max_retries,
        # As for OpenAI: no wait between attempts may end past the whole call's deadline.
        retry_max_seconds=min(settings.provider_retry_max_seconds, settings.provider_timeout_seconds),
        trace=settings.tracing_requests,
    )


def _aws(
    settings: Settings, *, api_key: str | None, base_url: str | None = None, region: str | None = None
) -> Credentials:
    return Credentials(
        api_key=api_key,
        base_url=base_url,
        region=region or settings.aws_region,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=_secret(settings.aws_secret_access_key),
        aws_session_token=_secret(settings.aws_session_token),
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
