"""The pydantic-ai model of each native kind, over an SDK client built here, not by pydantic-ai.

We build each vendor's SDK client ourselves so that three things hold whatever the SDK's defaults
or the environment say:

- **no retries of its own** (`max_retries=0`, boto's one attempt, Mistral's `none` strategy): one
  policy, ours (`app.llm.retry_policy`), governs every provider;
- **one attempt's timeout** is `PROVIDER_REQUEST_TIMEOUT_SECONDS`;
- **no telemetry of its own**: the Anthropic SDK traces every call by default, and an environment
  variable (`ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE=content`, `MISTRAL_SDK_TELEMETRY=global`)
  would put messages into our spans. They are off; our own spans say what happened.

Nothing here opens a connection: the clients connect on their first request.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.settings import ProviderKindName

if TYPE_CHECKING:  # pydantic-ai takes a while to import: only once a native provider is configured
    from pydantic_ai.models import Model

# Local servers often need no key, but the SDKs insist on one (and would otherwise read the
# vendor's variable from the environment and send it to whatever endpoint this is).
NO_KEY = "not-needed"

NATIVE_KINDS: frozenset[ProviderKindName] = frozenset({"anthropic", "google", "groq", "mistral", "bedrock", "cohere"})


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one native endpoint is reached with; never logged (no repr of the secrets)."""

    api_key: str | None = None
    base_url: str | None = None
    region: str | None = None  # bedrock
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(base_url={self.base_url!r}, region={self.region!r})"


@dataclass(frozen=True, slots=True)
class ModelFactory:
    """Makes the pydantic-ai model for a model name, all over one SDK client; `close` frees the client."""

    make: Callable[[str], Model]
    close: Callable[[], Awaitable[None]]


def model_factory(kind: ProviderKindName, credentials: Credentials, timeout: float) -> ModelFactory:
    """The factory of `kind`'s models (imports that vendor's SDK only)."""
    builders: dict[str, Callable[[Credentials, float], ModelFactory]] = {
        "anthropic": _anthropic,
        "google": _google,
        "groq": _groq,
        "mistral": _mistral,
        "bedrock": _bedrock,
        "cohere": _cohere,
    }
    if kind not in builders:
        raise ValueError(f"{kind!r} is not a native provider kind")
    return builders[kind](credentials, timeout)


def _anthropic(credentials: Credentials, timeout: float) -> ModelFactory:
    import httpx2
    from anthropic import AsyncAnthropic
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    http = httpx2.AsyncClient(timeout=timeout)
    client = AsyncAnthropic(
        api_key=credentials.api_key or NO_KEY,
        base_url=credentials.base_url,
        http_client=http,
        max_retries=0,
        timeout=timeout,
        open_telemetry=False,
    )
    provider = AnthropicProvider(anthropic_client=client)
    return ModelFactory(lambda name: AnthropicModel(name, provider=provider), client.close)


def _google(credentials: Credentials, timeout: float) -> ModelFactory:
    import httpx2
    from pydantic_ai.models.google import GoogleModel
    from pydantic_ai.providers.google import GoogleProvider

    http = httpx2.AsyncClient(timeout=timeout)
    # No retry_options: the google-genai client then makes one attempt. pydantic-ai warns when the
    # client's timeout is exactly 5 s (httpx's default, it assumes); ours is the setting's, on purpose.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*default 5-second timeout", category=UserWarning)
        provider = GoogleProvider(
            api_key=credentials.api_key or NO_KEY, http_client=http, base_url=credentials.base_url
        )
    return ModelFactory(lambda name: GoogleModel(name, provider=provider), http.aclose)


def _groq(credentials: Credentials, timeout: float) -> ModelFactory:
    import httpx
    from groq import AsyncGroq
    from pydantic_ai.models.groq import GroqModel
    from pydantic_ai.providers.groq import GroqProvider

    client = AsyncGroq(
        api_key=credentials.api_key or NO_KEY,
        base_url=credentials.base_url or "https://api.groq.com",
        http_client=httpx.AsyncClient(timeout=timeout),
        max_retries=0,
        timeout=timeout,
    )
    provider = GroqProvider(groq_client=client)
    return ModelFactory(lambda name: GroqModel(name, provider=provider), client.close)


def _mistral(credentials: Credentials, timeout: float) -> ModelFactory:
    import httpx2
    from mistralai.client import Mistral
    from mistralai.client.utils.retries import BackoffStrategy, RetryConfig
    from pydantic_ai.models.mistral import MistralModel
    from pydantic_ai.providers.mistral import MistralProvider

    http = httpx2.AsyncClient(timeout=timeout)
    client = Mistral(
        api_key=credentials.api_key or NO_KEY,
        server_url=credentials.base_url,
        async_client=http,
        retry_config=RetryConfig("none", BackoffStrategy(1, 1, 1, 1), retry_connection_errors=False),
        timeout_ms=int(timeout * 1000),
    )
    # The SDK's tracing hook reads this before each request; False: no spans of its own, whatever
    # MISTRAL_SDK_TELEMETRY says.
    client.sdk_configuration.telemetry = False  # type: ignore[attr-defined]
    provider = MistralProvider(mistral_client=client)
    return ModelFactory(lambda name: MistralModel(name, provider=provider), http.aclose)


def _cohere(credentials: Credentials, timeout: float) -> ModelFactory:
    import httpx
    from cohere import AsyncClientV2
    from pydantic_ai.models.cohere import CohereModel
    from pydantic_ai.providers.cohere import CohereProvider

    http = httpx.AsyncClient(timeout=timeout)
    extra: dict[str, Any] = {"base_url": credentials.base_url} if credentials.base_url else {}
    client = AsyncClientV2(
        api_key=credentials.api_key or NO_KEY, httpx_client=http, timeout=timeout, max_retries=0, **extra
    )
    provider = CohereProvider(cohere_client=client)
    return ModelFactory(lambda name: CohereModel(name, provider=provider), http.aclose)


def _bedrock(credentials: Credentials, timeout: float) -> ModelFactory:
    import boto3
    from botocore.config import Config
    from pydantic_ai.models.bedrock import BedrockConverseModel
    from pydantic_ai.providers.bedrock import BedrockProvider

    config: dict[str, Any] = {
        "read_timeout": timeout,
        "connect_timeout": timeout,
        "retries": {"total_max_attempts": 1, "mode": "standard"},  # one attempt: ours retries
    }
    if credentials.api_key is not None:
        # A Bedrock API key: the bearer-token session pydantic-ai's own provider uses for it.
        from pydantic_ai.providers.bedrock import _BearerTokenSession

        session = boto3.Session(
            botocore_session=_BearerTokenSession(credentials.api_key), region_name=credentials.region
        )
        config["signature_version"] = "bearer"
    else:
        session = boto3.Session(
            aws_access_key_id=credentials.aws_access_key_id,
            aws_secret_access_key=credentials.aws_secret_access_key,
            aws_session_token=credentials.aws_session_token,
            region_name=credentials.region,
        )
    client = session.client("bedrock-runtime", config=Config(**config), endpoint_url=credentials.base_url)
    provider = BedrockProvider(bedrock_client=client)

    async def close() -> None:
        client.close()

    return ModelFactory(lambda name: BedrockConverseModel(name, provider=provider), close)
