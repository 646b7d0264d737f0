"""One webhook attempt: resolve and check the address, POST to exactly that address, judge the answer.

The connection goes to the IP address that was checked (`addresses.resolve`), with the original
host in the `Host` header and as the TLS server name (SNI, and the name the certificate must
match), so a second resolution can never slip another address in. Redirects are not followed: a
3xx is a failed attempt. Proxies from the environment are ignored (`trust_env=False`): the
address checked is the address called. The answer's body is never read.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Collection
from datetime import UTC, datetime

import httpx

from app.domain import InvalidWebhook
from app.domain.webhooks import Attempt
from app.webhooks.addresses import RefusedAddress, check_url, resolve

USER_AGENT = "agent-service-webhooks/1"


class WebhookSender:
    """Posts signed events; one HTTP client (and its connection pool) for the process."""

    def __init__(self, allowed_hosts: Collection[str], timeout_seconds: float) -> None:
        self._allowed = list(allowed_hosts)
        self._timeout = timeout_seconds
        self._client = httpx.AsyncClient(
            timeout=timeout_seconds, follow_redirects=False, trust_env=False, headers={"user-agent": USER_AGENT}
        )

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        at = datetime.now(UTC)
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout):
                status = await self._send(url, body, headers)
            if 300 <= status < 400:
                error = "redirect"
            elif not 200 <= status < 300:
                error = "http_status"
        except TimeoutError:
            error = "timeout"
        except RefusedAddress:
            error = "refused_address"
        except socket.gaierror:
            error = "dns_error"
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.ConnectError:
            error = "connect_error"
        except httpx.HTTPError:
            error = "http_error"
        except InvalidWebhook:  # the address rules changed since the task was submitted (WEBHOOK_ALLOWED_HOSTS)
            error = "refused_address"
        return Attempt(at, status, error, (time.perf_counter() - started) * 1000)

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        target = check_url(url, self._allowed)
        address = await resolve(target)
        request_url = httpx.URL(url).copy_with(host=address)
        default_port = 443 if target.scheme == "https" else 80
        host_header = target.host if ":" not in target.host else f"[{target.host}]"
        if target.port != default_port:
            host_header = f"{host_header}:{target.port}"
        request = self._client.build_request(
            "POST",
            request_url,
            content=body,
            headers={**headers, "content-type": "application/json", "host": host_header},
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        )
        response = await self._client.send(request, stream=True)
        await response.aclose()  # the status is the answer; the body is never read
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()
