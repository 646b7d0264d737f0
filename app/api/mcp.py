"""MCP tools and the result resource: the same service calls as REST, over channel `mcp`."""

from __future__ import annotations

import uuid
from importlib.metadata import version
from typing import Annotated

from fastmcp import FastMCP
from fastmcp.exceptions import ResourceError
from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.dependencies import get_access_token, get_http_request
from pydantic import Field, TypeAdapter
from starlette.authentication import AuthenticationError
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import Response

from app.api.errors import STATUS_OF, error_response
from app.api.mcp_errors import SERVER_ERROR, ArgumentErrors, as_json_rpc_error
from app.api.mcp_errors import mcp_errors as _mcp_errors
from app.api.mcp_tasks import AgentTasks
from app.domain import (
    Channel,
    InvalidInput,
    Principal,
    ServiceError,
    Throttled,
    Unauthenticated,
)
from app.schemas import (
    STORE_DESCRIPTION,
    AgentResult,
    AgentResultPage,
    AgentTask,
    ContextObject,
    ModelCatalog,
    ModelName,
    NullMeansTrue,
    PromptMatchPage,
    PromptSearch,
    ResponseFormatObject,
    RetentionDays,
    TaskParams,
    TemplateName,
    WebhookStatus,
    WebhookUrl,
    null_is_default,
)
from app.service.operations import AgentService
from app.service.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE


class _Refused(AuthenticationError):
    """A verification that ended in a service error other than a plain 401 (a throttled address,
    an outage), carried out of the SDK's authentication backend to `_refusal`."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


def _refusal(_: HTTPConnection, exc: AuthenticationError) -> Response:
    """The answer to a `_Refused` verification: the same status, body and headers as on REST."""
    error = exc.error if isinstance(exc, _Refused) else Unauthenticated()
    status = next((s for cls, s in STATUS_OF.items() if isinstance(error, cls)), 500)
    response = error_response(status, error.code, error.message)
    if isinstance(error, Throttled):
        response.headers["Retry-After"] = str(error.retry_after)
    return as_json_rpc_error(response, SERVER_ERROR, f"{error.code}: {error.message}")


class ApiKeyVerifier(TokenVerifier):
    """Bearer tokens on /mcp are the same API keys as on REST, throttled per client address alike.

    An unknown key is `None` (the SDK answers 401, which `TransportErrors` words as ours); any
    other refusal would reach the SDK as an exception and a 500, so it travels as `_Refused` to
    the authentication middleware's error handler, which answers as REST would (429
    `too_many_failed_attempts` with Retry-After, 503 `database_unavailable`).
    """

    def __init__(self, service: AgentService) -> None:
        super().__init__()
        self._service = service

    def get_middleware(self) -> list[Middleware]:
        """FastMCP's authentication middleware, with `_refusal` as its error handler."""
        return [
            Middleware(m.cls, *m.args, **{**m.kwargs, "on_error": _refusal}) if m.cls is AuthenticationMiddleware else m
            for m in super().get_middleware()
        ]

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = await self._service.authenticate(token, client=_client_address())
        except Unauthenticated:
            return None
        except ServiceError as exc:
            raise _Refused(exc) from None
        return AccessToken(
            token=token,
            client_id=str(principal.key_id),
            scopes=[principal.role.value],
            # The whole principal travels: every field of the key's policy, none forgotten.
            claims=_PRINCIPAL.dump_python(principal, mode="json"),
        )


# The principal as the access token's claims (JSON) and back: one schema, the dataclass itself.
_PRINCIPAL = TypeAdapter(Principal)


def _client_address() -> str | None:
    try:
        client = get_http_request().client
    except RuntimeError:  # in-memory transport: no HTTP request
        return None
    return client.host if client else None


def _caller() -> Principal:
    token = get_access_token()
    if token is None:
        raise Unauthenticated
    return _PRINCIPAL.validate_python(token.claims)


def _request_id() -> str | None:
    try:
        request_id = get_http_request().scope.get("state", {}).get("request_id")
    except RuntimeError:  # in-memory transport: no HTTP request
        return None
    return request_id if isinstance(request_id, str) else None


def _task_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInput("task_id must be a UUID") from None


def _default_page_size() -> int:
    return DEFAULT_PAGE_SIZE


_DefaultPageSize = null_is_default(int, _default_page_size)
TaskIdArg = Annotated[str, Field(description="The task_id returned by run_agent_task.")]


def build_mcp(service: AgentService) -> FastMCP:
    mcp = FastMCP(
        "agent-service",
        instructions="Run LLM tasks and read their results back later by task_id. Every read is audited.",
        version=version("agent-service"),  # serverInfo.version: the service's, not FastMCP's
        auth=ApiKeyVerifier(service),
        mask_error_details=True,
        middleware=[ArgumentErrors()],
    )
    mcp.add_extension(AgentTasks(service, _caller, _request_id))  # run_agent_task as an MCP task

    async def caller() -> Principal:
        """The caller, with this tool call or resource read counted against its rate limit."""
        principal = _caller()
        await service.count_request(principal)
        return principal

    @mcp.tool(annotations={"openWorldHint": True})
    async def run_agent_task(
        # No length rule on the signature: a validation error would quote the prompt. The
        # service checks it and answers with a message that does not.
        prompt: Annotated[str, Field(description="The prompt (1 to MAX_PROMPT_CHARS characters); never stored.")],
        context: ContextObject | None = None,
        template: TemplateName = None,
        model: ModelName = None,
        params: TaskParams | None = None,
        cache: Annotated[bool, NullMeansTrue, Field(description="false bypasses the response cache")] = True,
        retention_days: RetentionDays = None,
        store: Annotated[bool, NullMeansTrue, Field(description=STORE_DESCRIPTION)] = True,
        webhook: WebhookUrl = None,
        response_format: ResponseFormatObject = None,
        idempotency_key: Annotated[
            str | None,
            Field(
                pattern=r"^[\x21-\x7e]{1,200}$",
                description="The same key from the same caller within 24 hours returns the same task.",
            ),
        ] = None,
        wait: Annotated[
            bool, NullMeansTrue, Field(description="false: return the pending task at once; read it later")
        ] = True,
    ) -> AgentResult:
        """Run an agent task and return its result."""
        with _mcp_errors():
            principal = await caller()
            task = AgentTask(
                prompt=prompt,
                context=context or {},
                template=template,
                model=model,
                params=params or TaskParams(),
                cache=cache,
                retention_days=retention_days,
                store=store,
                webhook=webhook,
                response_format=response_format,
            )
            submission = await service.run_task(
                principal,
                task,
                channel=Channel.MCP,
                request_id=_request_id(),
                wait=wait,
                idempotency_key=idempotency_key,
            )
            return submission.result

    @mcp.tool(annotations={"readOnlyHint": True})
    async def get_agent_webhook(task_id: TaskIdArg) -> WebhookStatus:
        """A task's completion webhook: its delivery state and every attempt (audited, like a read)."""
        with _mcp_errors():
            principal = await caller()
            return await service.get_webhook(
                principal, _task_id(task_id), channel=Channel.MCP, request_id=_request_id()
            )

    @mcp.tool(annotations={"readOnlyHint": True})
    async def get_agent_result(task_id: TaskIdArg) -> AgentResult:
        """Read a task's result by id (audited)."""
        with _mcp_errors():
            return await service.get_result(
                await caller(), _task_id(task_id), channel=Channel.MCP, request_id=_request_id()
            )

    @mcp.tool(annotations={"readOnlyHint": True})
    async def list_agent_results(
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, _DefaultPageSize, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    ) -> AgentResultPage:
        """List your tasks, newest first, without outputs."""
        with _mcp_errors():
            return await service.list_results(
                await caller(), cursor=cursor, limit=limit, channel=Channel.MCP, request_id=_request_id()
            )

    @mcp.tool(annotations={"destructiveHint": True, "idempotentHint": True})
    async def delete_agent_result(task_id: TaskIdArg) -> dict[str, str]:
        """Erase a task and its result now (audited)."""
        with _mcp_errors():
            await service.delete_result(
                await caller(), _task_id(task_id), channel=Channel.MCP, request_id=_request_id()
            )
        return {"task_id": task_id, "status": "deleted"}

    @mcp.tool(annotations={"destructiveHint": True, "idempotentHint": False})
    async def cancel_agent_task(task_id: TaskIdArg) -> AgentResult:
        """Stop a pending or running task (audited); it ends with status cancelled."""
        with _mcp_errors():
            return await service.cancel_task(
                await caller(), _task_id(task_id), channel=Channel.MCP, request_id=_request_id()
            )

    @mcp.tool(annotations={"readOnlyHint": True})
    async def search_tasks_by_prompt(
        prompt: Annotated[str, Field(description="The prompt to look for; hashed in memory, never stored.")],
        context: ContextObject | None = None,
        template: TemplateName = None,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, _DefaultPageSize, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    ) -> PromptMatchPage:
        """Find the live tasks that carried a prompt, whoever sent them (auditors and admins; audited).

        Give the template and context a task was sent with to find templated tasks."""
        with _mcp_errors():
            principal = await caller()
            search = PromptSearch(prompt=prompt, context=context or {}, template=template)
            return await service.search_by_prompt(
                principal, search, cursor=cursor, limit=limit, channel=Channel.MCP, request_id=_request_id()
            )

    @mcp.tool(annotations={"readOnlyHint": True, "idempotentHint": True})
    async def list_models() -> ModelCatalog:
        """The providers (name, kind, capabilities), the model aliases and the defaults: what `model` may be."""
        with _mcp_errors():
            return service.list_models(await caller())

    @mcp.resource("agent-result://{task_id}", name="get_agent_result", mime_type="application/json")
    async def agent_result_resource(task_id: str) -> str:
        """A task's result as JSON (audited)."""
        with _mcp_errors(ResourceError):
            result = await service.get_result(
                await caller(), _task_id(task_id), channel=Channel.MCP, request_id=_request_id()
            )
        return result.model_dump_json()

    return mcp
