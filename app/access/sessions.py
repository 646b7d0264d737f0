"""The console's sign-in: an API key exchanged for a server-side session.

The browser holds only a random session token (in an HttpOnly cookie); the database holds its
SHA-256 and the key it acts as. Signing in goes through `KeyStore.authenticate`, so a failed
sign-in is throttled per client address exactly like a failed API call (`FailureThrottle`).
Every later request looks the session up joined to its key (`app.storage.sessions`): revoking the
key, the absolute lifetime and the idle timeout all end it at the next request. The CSRF token of
a session is derived from its token (an HMAC), so it is never stored and differs per session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from app.access.keys import KeyStore, key_shaped
from app.domain import Actor, AuditAction, AuditOutcome, Channel, Principal, Unauthenticated
from app.storage import key_events
from app.storage import sessions as storage
from app.storage.database import Database

_TOKEN_BYTES = 32
_MAX_TOKEN_CHARS = 64
_CSRF_PURPOSE = b"console-csrf"


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A session just made: its token (for the cookie; shown to nobody else) and who it acts as."""

    token: str
    principal: Principal


def session_id(token: str) -> str:
    """What the table keeps of a session token: its SHA-256 (the token is random, so a plain hash will do)."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(token: str) -> str:
    """The session's CSRF token: an HMAC of the purpose under the session token."""
    return hmac.new(token.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def new_token() -> str:
    """A random token, for a session or for the sign-in form's double-submit cookie."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


class ConsoleSessions:
    def __init__(self, db: Database, keys: KeyStore, *, lifetime_seconds: float, idle_seconds: float) -> None:
        self._db = db
        self._keys = keys
        self.lifetime_seconds = lifetime_seconds
        self.idle_seconds = idle_seconds

    async def sign_in(self, api_key: str | None, *, client: str | None, request_id: str | None = None) -> SignedIn:
        """A session for the key, and its `sign_in` event in the same transaction; `Unauthenticated`
        (recorded as a `sign_in` `denied` with no actor: the key presented is never kept, in any
        form), or `TooManyFailedAttempts` once `client` has failed too often (not recorded: a
        refusal that costs no lookup must not cost a row either, or a flood would fill the log).
        Here anything refused counts against the throttle, a non-key too, so every row written
        for a refusal is one the throttle allowed."""
        try:
            principal = await self._keys.authenticate(api_key, client=client)
        except Unauthenticated:
            if not key_shaped(api_key):
                self._keys.count_failure(client)  # so every refusal recorded here is throttled
            async with self._db.connection() as conn:
                await key_events.record_event(
                    conn, Actor(None, None, Channel.CONSOLE, request_id), AuditAction.SIGN_IN, AuditOutcome.DENIED
                )
            raise
        token = new_token()
        async with self._db.transaction() as conn:
            await storage.create_session(
                conn,
                session_id(token),
                principal.key_id,
                lifetime_seconds=self.lifetime_seconds,
                idle_seconds=self.idle_seconds,
            )
            await key_events.record_event(conn, _actor(principal, request_id), AuditAction.SIGN_IN, AuditOutcome.OK)
        return SignedIn(token, principal)

    async def resolve(self, token: str | None) -> Principal | None:
        """Who a live session acts as (its idle clock restarted); None for no, an ended or a revoked key's session."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            return None
        async with self._db.connection() as conn:
            record = await storage.touch_session(conn, session_id(token), idle_seconds=self.idle_seconds)
        return None if record is None else self._keys.principal_of(record)

    async def sign_out(self, token: str, principal: Principal, *, request_id: str | None = None) -> None:
        """End the session, and record it (`sign_out`) in the same transaction."""
        if len(token) <= _MAX_TOKEN_CHARS:
            async with self._db.transaction() as conn:
                await storage.delete_session(conn, session_id(token))
                await key_events.record_event(
                    conn, _actor(principal, request_id), AuditAction.SIGN_OUT, AuditOutcome.OK
                )


def _actor(principal: Principal, request_id: str | None) -> Actor:
    return Actor(principal.key_id, principal.role, Channel.CONSOLE, request_id)
