"""Tasks: what a caller submits and the results it reads back."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema, field_validator

from app.domain import (
    OpenedResult,
    TaskRecord,
    TaskStatus,
)
from app.schemas.common import (
    MAX_CONTEXT_BYTES,
    MAX_CONTEXT_DEPTH,
    NAME_PATTERN,
    PROMPT_HARD_LIMIT,
    STRICT,
    NullMeansTrue,
    null_is_default,
)


class TaskParams(BaseModel):
    """Sampling parameters passed to the provider."""

    model_config = STRICT

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=100_000)
    top_p: float | None = Field(default=None, ge=0, le=1)


PromptText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=PROMPT_HARD_LIMIT,
        repr=False,
        description="The prompt: 1 to MAX_PROMPT_CHARS (default 32000) characters, not blank. "
        "Never stored or logged; only its keyed hash is kept.",
    ),
]
ContextObject = Annotated[
    dict[str, Any],
    Field(
        description="Metadata stored with the task and returned with it (at most 16 KiB as JSON, "
        f"{MAX_CONTEXT_DEPTH} levels deep, no U+0000 in its text). "
        "Not for secrets: it is kept in plain form until the task expires.",
    ),
]
TemplateName = Annotated[
    str | None,
    Field(max_length=200, pattern=NAME_PATTERN, description="A prompt template: `name` or `name@version`."),
]
ModelName = Annotated[
    str | None,
    Field(
        max_length=200,
        description="`provider:model` or a configured alias (printable characters); default from settings.",
    ),
]
RetentionDays = Annotated[
    float | None,
    Field(
        gt=0,
        description="Keep the result this many days (at most the server's RESULT_RETENTION_DAYS, "
        "and at most the API key's own ceiling when it has one).",
    ),
]
# No length rule: a validation error would quote the URL; the service checks it (InvalidWebhook)
# and names the rule broken, never the address.
WebhookUrl = Annotated[
    str | None,
    Field(
        description="An https URL the service POSTs to when the task ends (at most 2048 characters), signed per "
        "Standard Webhooks with the API key's webhook secret: `{type: agent_task.succeeded|failed|cancelled, "
        "timestamp, data: {task_id, status}}` (ids only). Public addresses only, unless the host is in "
        "WEBHOOK_ALLOWED_HOSTS.",
        examples=["https://example.com/hooks/agent-tasks"],
    ),
]
STORE_DESCRIPTION = (
    "false: the answer goes back to the waiting caller once and is never written (the row keeps "
    "metadata only; reads say output null, output_stored false; never a cache source). Needs wait."
)
# Checked by the service (app.llm.structured), not here: a pydantic error would quote the schema,
# and every problem with it is one 422 `invalid_response_format` that names the rule.
# Titles everywhere: generated clients name their types after them (not `..._type_0`).
_JSON_SCHEMA_FORMAT = {
    "title": "JsonSchemaFormat",
    "type": "object",
    "properties": {
        "type": {"title": "JsonSchemaFormatType", "type": "string", "enum": ["json_schema"]},
        "json_schema": {
            "title": "JsonSchemaSpec",
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "description": {"type": ["string", "null"], "maxLength": 4096},
                "schema": {"title": "JsonSchemaDocument", "type": "object", "additionalProperties": True},
                "strict": {"type": ["boolean", "null"]},
            },
            "required": ["name", "schema"],
            "additionalProperties": False,
        },
    },
    "required": ["type", "json_schema"],
    "additionalProperties": False,
}
RESPONSE_FORMAT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "title": "PlainFormat",
            "type": "object",
            "properties": {"type": {"title": "PlainFormatType", "type": "string", "enum": ["text", "json_object"]}},
            "required": ["type"],
            "additionalProperties": False,
        },
        _JSON_SCHEMA_FORMAT,
        {"type": "null"},
    ],
    "description": "The JSON the answer must be, in OpenAI's shape: `{type: json_schema, json_schema: {name, schema, "
    "description?, strict?}}` (valid against the schema), `{type: json_object}` (any object), or `{type: text}` (the "
    "default). The schema: at most 64 KiB as JSON, 32 levels deep, OpenAI's strict-mode keywords only, local $refs "
    "only; else 422 `invalid_response_format`. The answer comes back as `output_json` (and its text as `output`); one "
    "that does not validate is asked again (STRUCTURED_OUTPUT_RETRIES), then the task fails `invalid_output`. "
    "Never stored: its keyed hash is part of the cache key.",
}
ResponseFormatObject = Annotated[
    dict[str, Any] | None, WithJsonSchema(RESPONSE_FORMAT_SCHEMA, mode="validation"), Field(repr=False)
]
OUTPUT_JSON_DESCRIPTION = (
    "With a `response_format` other than text: the answer, parsed (it validated against the schema); `output` is its "
    "JSON text. Null otherwise, and whenever `output` is null."
)
OUTPUT_STORED_DESCRIPTION = (
    "false when the task was run with store: false (or under a key that never stores): "
    "its output and context were never written, and a read answers output null"
)


class PromptFields(BaseModel):
    """What a prompt hash is taken of: the prompt, and the template and context it is rendered with."""

    model_config = STRICT

    prompt: PromptText
    # `type: [object, null]` rather than anyOf: generated clients keep one plain mapping type.
    context: Annotated[
        ContextObject,
        null_is_default(dict[str, Any], dict),
        WithJsonSchema({"type": ["object", "null"], "additionalProperties": True}, mode="validation"),
    ] = Field(default_factory=dict)
    template: TemplateName = None

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value

    @field_validator("context")
    @classmethod
    def _storable_context(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Messages name the rule broken, never the offending text.
        if (problem := _unstorable(value)) is not None:
            raise ValueError(f"context {problem}")
        try:
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
        except ValueError:  # NaN or Infinity (Python's JSON reader takes them), or a lone surrogate
            raise ValueError("context must be standard JSON: no NaN or Infinity, no lone surrogates") from None
        if size > MAX_CONTEXT_BYTES:
            raise ValueError(f"context is {size} bytes as JSON; the limit is {MAX_CONTEXT_BYTES}")
        return value


class AgentTask(PromptFields):
    """A task to run: a prompt and what to run it with."""

    model: ModelName = None
    params: Annotated[TaskParams, null_is_default(TaskParams, dict)] = Field(default_factory=TaskParams)
    cache: Annotated[bool, NullMeansTrue] = Field(default=True, description="false bypasses the response cache")
    retention_days: RetentionDays = None
    store: Annotated[bool, NullMeansTrue] = Field(default=True, description=STORE_DESCRIPTION)
    webhook: WebhookUrl = None
    response_format: ResponseFormatObject = None

    @field_validator("model")
    @classmethod
    def _printable_model(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("model must not contain control or other non-printable characters")
        return value


class PromptSearch(PromptFields):
    """A prompt to look for (auditors): the tasks that carried it, whoever sent them. The prompt
    is hashed in memory and never stored; give the template and context a task was sent with to
    find templated tasks."""


# A nullable object's own title, so generated clients name it `AuditEventDetail` (not `..._type_0`).
class TaskError(BaseModel):
    code: str = Field(
        description="provider_error, rate_limited, timeout, quota_exceeded, invalid_output (the answer did not "
        "validate against the response_format) or interrupted"
    )
    message: str


class TokenUsage(BaseModel):
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None = Field(
        description="What the provider call cost in US dollars (the genai-prices package's price data); null when "
        "the model is not in it. 0 for the offline provider, and for a cache hit (no provider call was made).",
    )


class AgentResult(BaseModel):
    """A task and its result."""

    task_id: uuid.UUID
    status: TaskStatus
    output: str | None
    output_json: Any = Field(default=None, description=OUTPUT_JSON_DESCRIPTION)
    error: TaskError | None
    model: str
    template: str | None
    prompt_hash: str
    context: dict[str, Any]
    usage: TokenUsage | None
    cached: bool
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime
    legal_hold: bool = Field(
        default=False, description="a legal hold keeps this task past its expiry and refuses its erasure"
    )
    output_stored: bool = Field(default=True, description=OUTPUT_STORED_DESCRIPTION)

    @classmethod
    def from_record(cls, task: TaskRecord, opened: OpenedResult) -> AgentResult:
        """The row with its sealed fields as `opened` (the service opens them; see ResultVault)."""
        # Rows come from our own database: construct without re-validating (hot path).
        return cls.model_construct(
            task_id=task.id,
            status=task.status,
            output=opened.output,
            output_json=_json_of(task, opened.output),
            error=_error_of(task, opened),
            model=task.model,
            template=task.template,
            prompt_hash=task.prompt_hash,
            context=opened.context,
            usage=_usage_of(task),
            cached=task.cached,
            created_at=task.created_at,
            completed_at=task.completed_at,
            expires_at=task.expires_at,
            output_stored=task.output_stored,
        )

    def with_answer(self, task: TaskRecord, answer: str | None, context: dict[str, Any]) -> AgentResult:
        """This result with an answer that was never written (`store: false`), from memory."""
        return self.model_copy(update={"output": answer, "output_json": _json_of(task, answer), "context": context})


class AgentResultSummary(BaseModel):
    """A task in a listing: everything but the output."""

    task_id: uuid.UUID
    status: TaskStatus
    error: TaskError | None
    model: str
    template: str | None
    prompt_hash: str
    context: dict[str, Any]
    usage: TokenUsage | None
    cached: bool
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime
    output_stored: bool = Field(default=True, description=OUTPUT_STORED_DESCRIPTION)

    @classmethod
    def from_record(cls, task: TaskRecord, opened: OpenedResult) -> AgentResultSummary:
        return cls.model_construct(
            task_id=task.id,
            status=task.status,
            error=_error_of(task, opened),
            model=task.model,
            template=task.template,
            prompt_hash=task.prompt_hash,
            context=opened.context,
            usage=_usage_of(task),
            cached=task.cached,
            created_at=task.created_at,
            completed_at=task.completed_at,
            expires_at=task.expires_at,
            output_stored=task.output_stored,
        )


class AgentResultPage(BaseModel):
    items: list[AgentResultSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


def _unstorable(value: dict[str, Any]) -> str | None:
    """Why a JSON object cannot be stored and answered back, if it cannot: too deep, or U+0000
    in a key or string (PostgreSQL's jsonb cannot hold it)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:  # a loop, not recursion: the depth is the caller's choice
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "must not contain the NUL character (U+0000)"
        elif isinstance(item, dict | list):
            if depth > MAX_CONTEXT_DEPTH:
                return f"is nested more than {MAX_CONTEXT_DEPTH} levels deep"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return None


UNREADABLE_MESSAGES = {
    "key_retired": "the key that sealed this result has been retired: the result can no longer be read",
    "result_unreadable": "this result does not open under its key: it was altered or moved",
}


def _json_of(task: TaskRecord, output: str | None) -> Any:
    """A structured task's answer, parsed (it was validated before it was stored)."""
    if task.response_format is None or output is None:
        return None
    try:
        return json.loads(output)
    except ValueError:  # not written by this service: the text alone
        return None


def _error_of(task: TaskRecord, opened: OpenedResult) -> TaskError | None:
    if opened.unreadable is not None:
        return TaskError.model_construct(code=opened.unreadable, message=UNREADABLE_MESSAGES[opened.unreadable])
    if task.error_code is None:
        return None
    return TaskError.model_construct(code=task.error_code, message=task.error_message or "")


def _usage_of(task: TaskRecord) -> TokenUsage | None:
    if task.total_tokens is None and task.prompt_tokens is None and task.completion_tokens is None:
        return None
    return TokenUsage.model_construct(
        prompt_tokens=task.prompt_tokens,
        completion_tokens=task.completion_tokens,
        total_tokens=task.total_tokens,
        cost_usd=None if task.cost_usd is None else float(task.cost_usd),
    )
