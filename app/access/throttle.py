"""Throttling failed authentications per client address, and remembering refused credentials.

Without it, every unknown key costs a database round trip: 200 requests with random keys made
402 commits (issue 12). With it, each client address may fail `limit` times per window; past
that its failed attempts are refused with 429 `too_many_failed_attempts` before the credential
is looked up. Both tables are bounded, whatever an attacker sends: a storm from many addresses
evicts the oldest entries (those addresses get a few more lookups), never grows memory.

For anything that checks a credential against the database: API keys now, a console's
sign-in later. What the throttle must never do is lock a real credential out because someone
else at the same address failed: so it only ever refuses an attempt that the caller has no
other reason to believe in. `KeyStore` lets a key it knows to be active through (see there).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache

from app.domain import Throttled

# Enough for every address of a busy service's last window; an entry is ~200 bytes.
MAX_ADDRESSES = 65_536
MAX_REFUSED = 10_000
REFUSED_SECONDS = 600.0
_UNKNOWN_ADDRESS = "unknown"
_MAX_ADDRESS_CHARS = 64


class TooManyFailedAttempts(Throttled):
    """An address's failed authentications are over their limit; `retry_after` is when its window ends."""

    code = "too_many_failed_attempts"
    default_message = (
        "too many failed authentications from this address; retry after the time in Retry-After with a valid key"
    )


def address_bucket(address: str | None) -> str:
    """What failures count against: an IPv4 address, or an IPv6 /64.

    A /64 is what one IPv6 host is usually given, and it holds 2**64 addresses: counted one by
    one, a single host could fail without end. IPv4-mapped IPv6 addresses count as IPv4.
    """
    if not address:
        return _UNKNOWN_ADDRESS  # no peer address (a Unix socket): all such callers share one count
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:_MAX_ADDRESS_CHARS]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Window:
    started: float
    failures: int = 0


class FailureThrottle:
    """At most `limit` failed attempts per address in a fixed window of `window_seconds`.

    `attempt` counts an attempt as failed *before* the credential is checked, and `succeeded`
    takes it back: so concurrent attempts cannot all slip through while the first lookups are
    still running, and a success costs the address nothing. A success never clears earlier
    failures (else one valid key would let its holder guess without limit). `limit` 0: no throttle.
    """

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        max_addresses: int = MAX_ADDRESSES,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._timer = timer
        # An entry lives exactly one window from its first failure (it is changed in place, never
        # set again); past `max_addresses`, the least recently used address is forgotten.
        self._windows: TTLCache[str, _Window] = TTLCache(maxsize=max_addresses, ttl=window_seconds, timer=timer)

    def __len__(self) -> int:
        return len(self._windows)

    def attempt(self, address: str | None) -> None:
        """Count one attempt as failed until `succeeded`; `TooManyFailedAttempts` (nothing counted)
        when the address has used up its window."""
        if self.limit <= 0:
            return
        window = self._window(address)
        if window.failures >= self.limit:
            wait = window.started + self.window_seconds - self._timer()
            raise TooManyFailedAttempts(retry_after=math.ceil(wait))
        window.failures += 1

    def succeeded(self, address: str | None) -> None:
        """The attempt counted by `attempt` succeeded (or could not be checked): take it back."""
        if self.limit <= 0:
            return
        window = self._windows.get(address_bucket(address))
        if window is not None and window.failures > 0:
            window.failures -= 1

    def failed(self, address: str | None) -> None:
        """One failure that `attempt` did not count (an attempt the throttle had let through unasked)."""
        if self.limit > 0:
            self._window(address).failures += 1

    def _window(self, address: str | None) -> _Window:
        bucket = address_bucket(address)
        window = self._windows.get(bucket)
        if window is None:
            window = self._windows[bucket] = _Window(self._timer())
        return window


class RefusedCredentials:
    """Digests of credentials refused recently (unknown, or revoked), at most `max_size` for `seconds`.

    A refused credential is not looked up again while it is here. Safe for API keys because
    their hashes are of random keys: a hash refused as unknown is never one of a key made
    later (that has a hash of its own), and a revoked key stays revoked.
    """

    def __init__(
        self,
        *,
        max_size: int = MAX_REFUSED,
        seconds: float = REFUSED_SECONDS,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._digests: TTLCache[str, bool] = TTLCache(maxsize=max_size, ttl=seconds, timer=timer)

    def __contains__(self, digest: str) -> bool:
        return digest in self._digests

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, digest: str) -> None:
        self._digests[digest] = True

    def discard(self, digest: str) -> None:
        self._digests.pop(digest, None)
