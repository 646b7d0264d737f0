"""Errors the service raises, each with a stable `code`; the API layer maps them to statuses.

Messages are written for the caller and never contain prompt text.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    code: ClassVar[str] = "error"
    default_message: ClassVar[str] = "the request failed"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code  # type: ignore[misc]
        super().__init__(self.message)


class InvalidInput(ServiceError):
    code = "validation_error"
    default_message = "the request is not valid"


class Unauthenticated(ServiceError):
    code = "unauthenticated"
    default_message = "a valid API key is required: Authorization: Bearer <key>"


class Forbidden(ServiceError):
    code = "forbidden"
    default_message = "this API key's role does not allow this operation"


class NotFound(ServiceError):
    code = "not_found"
    default_message = "no such task"


class DatabaseUnavailable(ServiceError):
    code = "database_unavailable"
    default_message = "the database is not reachable right now; retry shortly"


class Conflict(ServiceError):
    code = "conflict"
    default_message = "the request conflicts with an earlier one"


class UnderLegalHold(ServiceError):
    """The task is under a legal hold: it may not be erased until every hold on it is released."""

    code = "legal_hold"
    default_message = "this task is under a legal hold and cannot be erased until the hold is released"


class AlreadyFinished(ServiceError):
    """A cancel came after the task had ended: its result stands (read it), nothing was changed."""

    code = "already_finished"
    default_message = "this task has already finished; there is nothing to cancel"


class InvalidWebhook(InvalidInput):
    """A webhook address the service will not call (the message says which rule, never the address)."""

    code = "invalid_webhook"
    default_message = "the webhook must be an https URL to a public address"


class WebhookSecretMissing(InvalidInput):
    code = "webhook_secret_missing"
    default_message = (
        "this API key has no webhook signing secret; an admin gives it one: agent-service keys webhook-secret ID"
    )


class Throttled(ServiceError):
    """A per-key limit was reached; `retry_after` says when trying again can succeed."""

    code = "too_many_requests"
    default_message = "this API key's request rate limit is reached; retry after the time in Retry-After"

    def __init__(self, message: str | None = None, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)


class TooManyRunningTasks(Throttled):
    code = "too_many_running_tasks"
    default_message = "this API key has as many tasks running as it may; retry when one has finished"


class BudgetExceeded(Throttled):
    """The key has spent its monthly budget; `retry_after` runs to the next month (UTC)."""

    code = "budget_exceeded"
    default_message = "this API key's monthly budget is spent; it resets at the start of next month (UTC)"


# The HTTP status each kind of error answers with, for every face that speaks HTTP (REST, /mcp,
# the console): one table, so the faces cannot drift apart. The most specific class that matches
# is listed first where it matters (a subclass before its base).
HTTP_STATUS: dict[type[ServiceError], int] = {
    InvalidInput: 422,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    UnderLegalHold: 409,
    AlreadyFinished: 409,
    Throttled: 429,
    DatabaseUnavailable: 503,
}
