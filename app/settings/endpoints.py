"""One `PROVIDER_ENDPOINTS` entry: a named endpoint of some kind (an API it speaks)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ProviderEndpoint", "ProviderKindName"]

ProviderKindName = Literal["openai", "anthropic", "google", "groq", "mistral", "bedrock", "cohere"]


class ProviderEndpoint(BaseModel):
    """A named endpoint: OpenAI-compatible (a local Ollama or vLLM, another vendor, ...) or a vendor's
    native API (`kind`), each a provider of its own."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_\-]{0,31}$",
        description="the provider's name, as in `name:model`: lower-case letters, digits, `-` and `_`, at most 32",
    )
    kind: ProviderKindName = Field(
        default="openai",
        description="the API it speaks: `openai` (any OpenAI-compatible server), or a vendor's own: `anthropic`, "
        "`google` (Gemini API), `groq`, `mistral`, `bedrock` (AWS Bedrock Converse), `cohere`",
    )
    base_url: str | None = Field(
        default=None,
        description="the endpoint's base URL, e.g. `http://localhost:11434/v1`; required for `openai`, for the "
        "others unset means the vendor's own API (for `bedrock`: the region's endpoint)",
    )
    api_key_env: str | None = Field(
        default=None,
        description="the environment variable holding its key, if any (for `bedrock`: an AWS Bedrock API key; "
        "unset: the AWS credentials of the `AWS_*` settings or boto's usual chain)",
    )
    region: str | None = Field(default=None, description="`bedrock` only: the AWS region; unset: `AWS_REGION`")
    structured_output: bool = Field(
        default=True,
        description="`openai` kind: false when the endpoint does not take `response_format` (json_schema); a "
        "task's format is then asked for in the system message instead (the answer is validated either way)",
    )

    @model_validator(mode="after")
    def _openai_needs_a_url(self) -> ProviderEndpoint:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("an endpoint of kind 'openai' needs a base_url")
        if self.region is not None and self.kind != "bedrock":
            raise ValueError("region is for endpoints of kind 'bedrock' only")
        return self
