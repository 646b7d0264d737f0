"""The types of a task's life, one home each, with no I/O: statuses, roles, channels, the rows
storage returns, what it is asked to write, and the errors the service raises.

Every layer may import these; they import nothing of the service's own.
"""

from app.domain.audit import Actor, AuditAction, AuditEventRecord, AuditOutcome, Channel
from app.domain.errors import (
    AlreadyFinished,
    BudgetExceeded,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidInput,
    InvalidWebhook,
    NotFound,
    ServiceError,
    Throttled,
    TooManyRunningTasks,
    Unauthenticated,
    UnderLegalHold,
    WebhookSecretMissing,
)
from app.domain.holds import LegalHoldRecord
from app.domain.keys import ApiKeyRecord, Principal, Role, StoreOutput
from app.domain.tasks import AuditedTask, NewTask, OpenedResult, PromptHashes, TaskOutcome, TaskRecord, TaskStatus
from app.domain.usage import BudgetStatusRecord, ModelUsageRecord

__all__ = [
    "Actor",
    "AlreadyFinished",
    "ApiKeyRecord",
    "AuditAction",
    "AuditEventRecord",
    "AuditOutcome",
    "AuditedTask",
    "BudgetExceeded",
    "BudgetStatusRecord",
    "Channel",
    "Conflict",
    "DatabaseUnavailable",
    "Forbidden",
    "InvalidInput",
    "InvalidWebhook",
    "LegalHoldRecord",
    "ModelUsageRecord",
    "NewTask",
    "NotFound",
    "OpenedResult",
    "Principal",
    "PromptHashes",
    "Role",
    "ServiceError",
    "StoreOutput",
    "TaskOutcome",
    "TaskRecord",
    "TaskStatus",
    "Throttled",
    "TooManyRunningTasks",
    "Unauthenticated",
    "UnderLegalHold",
    "WebhookSecretMissing",
]
