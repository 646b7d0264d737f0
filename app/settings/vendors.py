"""The short form of each vendor's native provider: its key enables it (as `OPENAI_API_KEY` does `openai`).

A mixin of `Settings` (its fields are the service's settings like any other), kept apart so that the
settings module stays readable.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings


class VendorSettings(BaseSettings):
    """`ANTHROPIC_API_KEY` enables `anthropic:`, `GEMINI_API_KEY` `google:`, and so on (docs/providers.md)."""

    anthropic_api_key: SecretStr | None = Field(
        default=None, description="The Anthropic API key; setting it enables the `anthropic` provider (Messages API)."
    )
    anthropic_base_url: str | None = Field(
        default=None,
        description="Any Anthropic-compatible endpoint for the `anthropic` provider; unset: Anthropic itself. "
        "Setting it enables the `anthropic` provider too.",
    )
    gemini_api_key: SecretStr | None = Field(
        default=None, description="The Gemini API key; setting it enables the `google` provider (Gemini API)."
    )
    google_api_key: SecretStr | None = Field(
        default=None,
        description="The same as `GEMINI_API_KEY` (Google's other name for it); `GEMINI_API_KEY` wins when both "
        "are set.",
    )
    groq_api_key: SecretStr | None = Field(
        default=None, description="The Groq API key; setting it enables the `groq` provider."
    )
    mistral_api_key: SecretStr | None = Field(
        default=None, description="The Mistral API key; setting it enables the `mistral` provider."
    )
    co_api_key: SecretStr | None = Field(
        default=None, description="The Cohere API key; setting it enables the `cohere` provider."
    )
    aws_region: str | None = Field(
        default=None,
        description="The AWS region of the `bedrock` provider (and of `bedrock` endpoints without their own).",
    )
    aws_access_key_id: str | None = Field(
        default=None,
        description="AWS credentials for Bedrock; with `AWS_REGION` it enables the `bedrock` provider (Converse "
        "API). Unset: boto's usual chain (a profile, an instance role) is used by `bedrock` endpoints.",
    )
    aws_secret_access_key: SecretStr | None = Field(default=None, description="The secret of `AWS_ACCESS_KEY_ID`.")
    aws_session_token: SecretStr | None = Field(
        default=None, description="A session token for temporary AWS credentials, if any."
    )
    aws_bearer_token_bedrock: SecretStr | None = Field(
        default=None,
        description="An AWS Bedrock API key; with `AWS_REGION` it enables the `bedrock` provider (instead of "
        "`AWS_ACCESS_KEY_ID`).",
    )

    @property
    def bedrock_configured(self) -> bool:
        """`AWS_REGION` with AWS credentials or a Bedrock API key."""
        credentials = self.aws_access_key_id is not None or self.aws_bearer_token_bedrock is not None
        return self.aws_region is not None and credentials
