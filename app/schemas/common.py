"""What every part of the contract shares: limits, strictness, `null` as the default, errors and health."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_CONTEXT_BYTES = 16 * 1024
# Deeper JSON could be stored but not answered: pydantic stops serializing at ~255 levels.
MAX_CONTEXT_DEPTH = 32
# The configured MAX_PROMPT_CHARS (default 32000) is enforced by the service; this
# ceiling only bounds what a request body can make the server hold in memory.
PROMPT_HARD_LIMIT = 1_000_000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(@[A-Za-z0-9_.\-]+)?$"

STRICT = ConfigDict(extra="forbid", strict=True)


def null_is_default(value_type: Any, default: Callable[[], Any]) -> BeforeValidator:
    """`null` for an optional field or argument means its default, and the schema says it may be null.

    Strict-mode agent frameworks (openai-agents' strict function tools) send every argument,
    with null for the ones they leave unset.
    """
    return BeforeValidator(lambda v: default() if v is None else v, json_schema_input_type=value_type | None)


def _true() -> bool:
    return True


NullMeansTrue = null_is_default(bool, _true)


class RetentionPolicy(BaseModel):
    """How long results and audit events are kept, and when the purge runs."""

    result_retention_days: float
    failed_result_retention_days: float | None = Field(description="failed tasks kept at most this long, if set")
    audit_retention_days: float
    purge_cron: str | None = Field(description="the in-service purge's schedule (UTC); null: an external cron runs it")


class ReadinessReport(BaseModel):
    """`/readyz`: each check by name, and the retention policy in force."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(description="each check by name: `ok`, or what is wrong")
    retention: RetentionPolicy


class Liveness(BaseModel):
    """`/healthz`: the process lives."""

    status: Literal["ok"]


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: a stable machine `code` and a human `message`."""

    code: str
    message: str
    details: list[ErrorDetail] | None = None
