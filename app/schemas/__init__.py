"""The public contract: what callers send and what they get back (REST and MCP alike).

One module per subject; everything is re-exported here, so callers import from `app.schemas`.
"""

from app.schemas.audit import (
    AuditDetail,
    AuditEvent,
    AuditEventPage,
    PromptMatch,
    PromptMatchPage,
)
from app.schemas.common import (
    MAX_CONTEXT_BYTES,
    MAX_CONTEXT_DEPTH,
    NAME_PATTERN,
    PROMPT_HARD_LIMIT,
    ErrorBody,
    ErrorDetail,
    Liveness,
    NullMeansTrue,
    ReadinessReport,
    RetentionPolicy,
    null_is_default,
)
from app.schemas.holds import HOLD_REFERENCE_PATTERN, HoldCreate, LegalHold, LegalHoldPage
from app.schemas.tasks import (
    AgentResult,
    AgentResultPage,
    AgentResultSummary,
    AgentTask,
    ContextObject,
    ModelName,
    PromptFields,
    PromptSearch,
    PromptText,
    RetentionDays,
    TaskError,
    TaskParams,
    TemplateName,
    TokenUsage,
)

__all__ = [
    "HOLD_REFERENCE_PATTERN",
    "MAX_CONTEXT_BYTES",
    "MAX_CONTEXT_DEPTH",
    "NAME_PATTERN",
    "PROMPT_HARD_LIMIT",
    "AgentResult",
    "AgentResultPage",
    "AgentResultSummary",
    "AgentTask",
    "AuditDetail",
    "AuditEvent",
    "AuditEventPage",
    "ContextObject",
    "ErrorBody",
    "ErrorDetail",
    "HoldCreate",
    "LegalHold",
    "LegalHoldPage",
    "Liveness",
    "ModelName",
    "NullMeansTrue",
    "PromptFields",
    "PromptMatch",
    "PromptMatchPage",
    "PromptSearch",
    "PromptText",
    "ReadinessReport",
    "RetentionDays",
    "RetentionPolicy",
    "TaskError",
    "TaskParams",
    "TemplateName",
    "TokenUsage",
    "null_is_default",
]
