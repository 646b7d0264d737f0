"""Which webhook addresses the service calls: https to a public address, and nothing else by default.

A webhook is an outbound request made on a caller's behalf, so it is checked like one (SSRF):
- when the task is submitted, the URL itself: its scheme, no credentials, and an IP literal or a
  name that can only be local (`localhost`, `*.internal`, ...) is refused at once;
- at every attempt, again after resolution, so a name that resolves to a private address (or
  resolves differently the second time: DNS rebinding) is refused, and the request goes to the
  very address that was checked.

"Public" is `ipaddress`'s `is_global` (an IPv4-mapped IPv6 address judged as its IPv4 address),
which leaves out loopback, RFC 1918, link-local (169.254.169.254, the cloud metadata address,
among them), carrier-grade NAT, documentation, multicast and reserved ranges. WEBHOOK_ALLOWED_HOSTS
lists the exceptions: names or IP literals that may be private, and may use plain http.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from app.domain import InvalidWebhook

MAX_URL_CHARS = 2048
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "metadata", "metadata.google.internal"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(Exception):
    """The name resolved to an address the service does not call (the message never names it)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked webhook URL: its parts, and whether WEBHOOK_ALLOWED_HOSTS lets it be private."""

    url: str
    scheme: str
    host: str  # lower-case; an IPv6 literal without brackets
    port: int
    allowed_private: bool


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(url: str, allowed_hosts: Collection[str]) -> Target:
    """The URL's target, or InvalidWebhook saying which rule it breaks (never echoing it)."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidWebhook(f"the webhook URL is longer than {MAX_URL_CHARS} characters")
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidWebhook("the webhook URL must be ASCII, without spaces or control characters")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidWebhook("the webhook is not a valid URL") from None
    host = (parts.hostname or "").lower()
    allowed = host in {h.lower().strip("[]") for h in allowed_hosts}
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidWebhook("the webhook must be an absolute https URL")
    if parts.scheme == "http" and not allowed:
        raise InvalidWebhook("the webhook must use https (plain http only for a host in WEBHOOK_ALLOWED_HOSTS)")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("the webhook URL must not carry credentials; the signature authenticates the sender")
    if parts.fragment:
        raise InvalidWebhook("the webhook URL must not have a fragment")
    if not allowed:
        address = _ip(host)
        if address is not None and not is_public(address):
            raise InvalidWebhook("the webhook's address is not public (loopback, private, link-local or reserved)")
        if address is None and (host.rstrip(".") in LOCAL_NAMES or host.rstrip(".").endswith(LOCAL_SUFFIXES)):
            raise InvalidWebhook("the webhook's host names a local address")
    default_port = 443 if parts.scheme == "https" else 80
    return Target(url, parts.scheme, host, port or default_port, allowed)


async def resolve(target: Target) -> str:
    """The address to connect to: every address the name resolves to must be public (unless the
    host is allowed), so an answer that mixes public and private addresses is refused too."""
    literal = _ip(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        addresses = [a for a in (_ip(str(info[4][0])) for info in infos) if a is not None]
    if not addresses:
        raise RefusedAddress("the webhook's host resolved to no address")
    if not target.allowed_private and not all(is_public(a) for a in addresses):
        raise RefusedAddress("the webhook's host resolved to an address that is not public")
    return str(addresses[0])
