"""The providers' error codes the service may repeat: a fixed list, everything else is `other`.

A provider's short error `code` (or its `type`) is copied into the task's stored error message
and into the retry warning, because it tells an operator what went wrong. But it is the
provider's text: one that puts the prompt's first word there would write it into `agent_task`
and the log (a one-word prompt would leak whole). So only the codes listed here, taken from
the providers' documentation, are ever copied; any other code becomes `other`.

The list is documented in docs/providers.md ("Error messages"); add to both together.
"""

from __future__ import annotations

OTHER = "other"

# OpenAI's documented error codes (`error.code`) and types (`error.type`).
OPENAI = frozenset(
    {
        # authentication, account and billing
        "invalid_api_key",
        "invalid_organization",
        "no_such_organization",
        "invalid_project",
        "account_deactivated",
        "organization_deactivated",
        "billing_hard_limit_reached",
        "billing_not_active",
        "insufficient_quota",
        "unsupported_country_region_territory",
        # the model
        "model_not_found",
        "context_length_exceeded",
        # rate limits
        "rate_limit_exceeded",
        "tokens",
        "requests",
        # the request's content and parameters
        "content_filter",
        "content_policy_violation",
        "invalid_prompt",
        "invalid_image",
        "invalid_image_url",
        "image_parse_error",
        "unsupported_parameter",
        "unsupported_value",
        "unknown_parameter",
        "missing_required_parameter",
        "invalid_value",
        "invalid_type",
        "integer_below_min_value",
        "integer_above_max_value",
        "decimal_below_min_value",
        "decimal_above_max_value",
        "string_above_max_length",
        "array_above_max_length",
        "empty_array",
        # types
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "server_error",
        "api_error",
    }
)

# Anthropic's error types (also what many gateways answer with).
ANTHROPIC = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    }
)

# Azure OpenAI, Groq and Mistral add these to OpenAI's; vLLM answers with exception names.
OTHER_PROVIDERS = frozenset(
    {
        # Azure OpenAI
        "DeploymentNotFound",
        "ResponsibleAIPolicyViolation",
        "OperationNotSupported",
        # Groq
        "model_decommissioned",
        "model_terms_required",
        "json_validate_failed",
        "tool_use_failed",
        # Mistral
        "invalid_model",
        "service_tier_capacity_exceeded",
        # vLLM
        "BadRequestError",
        "NotFoundError",
        "InternalServerError",
    }
)

# The native providers' own (app.llm.native): Gemini's gRPC status names, Bedrock's exception names.
NATIVE = frozenset(
    {
        # Google Gemini API
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "NOT_FOUND",
        "RESOURCE_EXHAUSTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        # AWS Bedrock
        "AccessDeniedException",
        "ValidationException",
        "ThrottlingException",
        "ServiceQuotaExceededException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelTimeoutException",
        "ModelNotReadyException",
        "ModelErrorException",
        "ResourceNotFoundException",
    }
)

KNOWN_ERROR_CODES = OPENAI | ANTHROPIC | OTHER_PROVIDERS | NATIVE


def safe_error_code(code: object, error_type: object = None) -> str | None:
    """The provider's code as we may repeat it: `code` if listed, else `error_type` if listed,
    else `other`; None when the provider sent neither (there is nothing to say)."""
    sent = [value for value in (code, error_type) if value is not None and value != ""]
    if not sent:
        return None
    for value in sent:
        if isinstance(value, str) and value in KNOWN_ERROR_CODES:
            return value
    return OTHER
