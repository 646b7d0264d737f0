"""API keys: creation (shown once), listing, revocation, and authenticating a bearer token."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import NamedTuple, TypeIs

import asyncpg
from cachetools import LRUCache, TTLCache

from app.access.encryption import ResultCipher
from app.access.hashing import API_KEY_PREFIX, display_prefix, hash_api_key, new_api_key
from app.access.throttle import FailureThrottle, RefusedCredentials
from app.domain import (
    Actor,
    ApiKeyRecord,
    AuditAction,
    AuditOutcome,
    NotFound,
    Principal,
    Role,
    StoreOutput,
    Unauthenticated,
)
from app.storage import key_events
from app.storage import keys as storage
from app.storage import sessions as session_storage
from app.storage.database import Database
from app.storage.keys import KeyEvent, KeyEventKind
from app.webhooks.signing import new_secret

_MAX_KEY_CHARS = 256
MAX_CACHED_KEYS = 10_000
# The active keys a process knows by hash (~250 bytes each): every key of any real deployment.
MAX_KNOWN_KEYS = 100_000


WEBHOOK_SECRET_FIELD = "webhook_secret"  # what a sealed secret is bound to, with the key's id


class NewKey(NamedTuple):
    """A key just made: its row, the plain key and its webhook signing secret, shown this once."""

    record: ApiKeyRecord
    key: str
    webhook_secret: str | None


class KeyStore:
    """API keys over the repository: a short in-process cache of verified keys, kept current by
    notifications, and failed authentications throttled per client address.

    The cache: authenticating every request against the database would double the hot path's
    round trips. Every change to a key is announced by PostgreSQL (`app.storage.keys`), and
    `key_changed` evicts the key at once in every process that listens (`app.storage.notifications`);
    AUTH_CACHE_SECONDS bounds what a missed notification can cost, and `resync` forgets every
    cached key whenever the listener (re)connects, since it may have missed some meanwhile.

    The throttle (`app.access.throttle`): a well-formed key that is unknown or revoked costs a
    lookup, so each client address may fail only so often before its unknown keys are refused
    with 429 and no lookup at all; a key refused once is not looked up again for a while, from
    any address. What keeps a real key from being locked out by another caller's failures at
    the same address (a NAT, a proxy): this process also knows the hash of every active key
    (`_known`: loaded when the listener connects, then kept by the notifications, and learned
    from each successful lookup), and a known key is always looked up. So the throttle refuses
    only keys that no process has ever made, or ones made in the moment before their
    announcement arrives. The known keys only decide whether a lookup is worth its round trip;
    they never let a key in (a stale entry costs a lookup that fails, and is dropped).
    """

    def __init__(
        self,
        db: Database,
        cache_seconds: float,
        *,
        rate_limit_per_minute: int = 0,
        max_running_tasks: int = 0,
        failures: FailureThrottle | None = None,
        cipher: ResultCipher | None = None,
    ) -> None:
        self._db = db
        # Seals webhook signing secrets; without one (a bare store in a test), keys get none.
        self._cipher = cipher
        self._default_rate = rate_limit_per_minute
        self._default_running = max_running_tasks
        self._cache: TTLCache[str, Principal] | None = (
            TTLCache(maxsize=MAX_CACHED_KEYS, ttl=cache_seconds) if cache_seconds > 0 else None
        )
        self._failures = failures if failures is not None else FailureThrottle(0, 60.0)
        self._refused = RefusedCredentials()
        self._known: LRUCache[str, uuid.UUID] = LRUCache(maxsize=MAX_KNOWN_KEYS)
        # Bumped by every eviction: a lookup that began before one must not cache what it read.
        self._evictions = 0

    async def authenticate(self, token: str | None, *, client: str | None = None) -> Principal:
        """The key's principal; `Unauthenticated`, or `TooManyFailedAttempts` when `client` (the
        caller's address) has failed too often and the key is none this process knows."""
        if not key_shaped(token):
            raise Unauthenticated  # not a key at all: no lookup, and not counted as a guess
        key_hash = hash_api_key(token)
        if self._cache is not None and (cached := self._cache.get(key_hash)) is not None:
            return cached
        if key_hash in self._refused:
            self._failures.attempt(client)
            raise Unauthenticated("the API key is unknown or revoked")
        known = key_hash in self._known
        if not known:
            self._failures.attempt(client)
        evictions = self._evictions
        try:
            async with self._db.connection() as conn:
                record = await storage.find_active_key(conn, key_hash)
        except BaseException:
            if not known:
                self._failures.succeeded(client)  # not a failure of the caller's: the lookup did not happen
            raise
        if record is None:
            self._refused.add(key_hash)
            self._known.pop(key_hash, None)
            if known:
                self._failures.failed(client)
            raise Unauthenticated("the API key is unknown or revoked")
        if not known:
            self._failures.succeeded(client)
        self._known[key_hash] = record.id
        principal = self.principal_of(record)
        if self._cache is not None and evictions == self._evictions:
            self._cache[key_hash] = principal
        return principal

    def count_failure(self, client: str | None) -> None:
        """Count a refusal that cost no lookup (the console's sign-in form given something that is
        not a key) against `client`'s failures; `TooManyFailedAttempts` once they are spent. The
        API does not: a request without a key is not a guess; a person typing into a form is."""
        self._failures.attempt(client)

    def principal_of(self, record: ApiKeyRecord) -> Principal:
        """The caller an active key's row acts as, with its effective limits (its own, else the server's)."""
        return Principal(
            record.id,
            record.name,
            record.role,
            rate_limit_per_minute=_or_default(record.rate_limit_per_minute, self._default_rate),
            max_running_tasks=_or_default(record.max_running_tasks, self._default_running),
            store_output=record.store_output,
            max_retention_days=record.max_retention_days,
            signs_webhooks=record.webhook_secret_at is not None,
            monthly_token_budget=record.monthly_token_budget,
            monthly_usd_budget=record.monthly_usd_budget,
        )

    # -- keeping up with changes made anywhere -----------------------------------------------------

    def key_changed(self, payload: str) -> None:
        """A notification on `storage.KEY_EVENTS_CHANNEL`, from this process or any other."""
        if (event := KeyEvent.parse(payload)) is not None:
            self._apply(event)

    async def resync(self, conn: asyncpg.Connection) -> None:
        """The listener has (re)connected: forget every cached key (a notification may have been
        missed while it was away) and learn the active keys' hashes.

        Learned, not replaced: a notification handled while the query ran is kept, and a key
        revoked meanwhile costs one failing lookup before it is dropped."""
        active = await storage.list_active_key_hashes(conn, limit=MAX_KNOWN_KEYS)
        self._evict(None)
        for key_hash, key_id in reversed(active.items()):  # oldest first: the newest are the last to go
            self._known[key_hash] = key_id
            self._refused.discard(key_hash)

    def _apply(self, event: KeyEvent) -> None:
        if event.kind is KeyEventKind.CREATED:
            self._known[event.key_hash] = event.key_id
            self._refused.discard(event.key_hash)
        elif event.kind is KeyEventKind.REVOKED:
            self._evict(event.key_hash)
            self._known.pop(event.key_hash, None)
            self._refused.add(event.key_hash)
        else:  # new limits: the next request reads them
            self._evict(event.key_hash)

    def _evict(self, key_hash: str | None) -> None:
        """One key (None: every key) out of the cache."""
        self._evictions += 1
        if self._cache is not None:
            if key_hash is None:
                self._cache.clear()
            else:
                self._cache.pop(key_hash, None)

    # -- managing keys ---------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        role: Role,
        *,
        rate_limit_per_minute: int | None = None,
        max_running_tasks: int | None = None,
        store_output: StoreOutput = StoreOutput.ALLOWED,
        max_retention_days: float | None = None,
        monthly_token_budget: int | None = None,
        monthly_usd_budget: Decimal | None = None,
        actor: Actor | None = None,
    ) -> NewKey:
        """A new key and its webhook signing secret; both are returned here and never again.
        `actor`: who made it, recorded (`key_create`) in the same transaction."""
        plain = new_api_key()
        key_id = uuid.uuid4()
        secret = new_secret() if self._cipher is not None else None
        async with self._db.transaction() as conn:
            record = await storage.insert_api_key(
                conn,
                key_id=key_id,
                webhook_secret=None if secret is None else self._seal_secret(key_id, secret),
                name=name,
                role=role,
                key_hash=hash_api_key(plain),
                key_prefix=display_prefix(plain),
                rate_limit_per_minute=rate_limit_per_minute,
                max_running_tasks=max_running_tasks,
                store_output=store_output,
                max_retention_days=max_retention_days,
                monthly_token_budget=monthly_token_budget,
                monthly_usd_budget=monthly_usd_budget,
            )
            if actor is not None:
                await _record(conn, actor, AuditAction.KEY_CREATE, record)
        self._apply(KeyEvent(KeyEventKind.CREATED, record.id, record.key_hash))
        return NewKey(record, plain, secret)

    def _seal_secret(self, key_id: uuid.UUID, secret: str) -> bytes:
        if self._cipher is None:
            raise RuntimeError("this key store was built without a cipher: it cannot make webhook secrets")
        return self._cipher.seal(secret.encode(), task_id=key_id, owner_id=key_id, field=WEBHOOK_SECRET_FIELD)

    async def rotate_webhook_secret(self, key_id: uuid.UUID, *, grace_seconds: float) -> tuple[ApiKeyRecord, str]:
        """A new signing secret for the key, returned here and never again; the old one keeps
        signing for `grace_seconds` (0: it stops at once)."""
        secret = new_secret()
        async with self._db.transaction() as conn:
            record = await storage.set_webhook_secret(
                conn, key_id, self._seal_secret(key_id, secret), grace_seconds=grace_seconds
            )
        if record is None:
            raise NotFound("no active API key has that id")
        self._apply(KeyEvent(KeyEventKind.LIMITS, record.id, record.key_hash))
        return record, secret

    async def set_limits(
        self,
        key_id: uuid.UUID,
        *,
        rate_limit_per_minute: int | None,
        max_running_tasks: int | None,
        store_output: StoreOutput = StoreOutput.ALLOWED,
        max_retention_days: float | None = None,
        monthly_token_budget: int | None = None,
        monthly_usd_budget: Decimal | None = None,
        actor: Actor | None = None,
    ) -> ApiKeyRecord:
        """Replace a key's own limits, data policy and budgets (None: the server's default, or no
        budget). Every process forgets its cached principal for the key, so its next request runs
        under the new policy. `actor`: who changed them, recorded (`key_limits`) in the same
        transaction."""
        async with self._db.transaction() as conn:
            record = await storage.set_key_limits(
                conn,
                key_id,
                rate_limit_per_minute=rate_limit_per_minute,
                max_running_tasks=max_running_tasks,
                store_output=store_output,
                max_retention_days=max_retention_days,
                monthly_token_budget=monthly_token_budget,
                monthly_usd_budget=monthly_usd_budget,
            )
            if record is not None and actor is not None:
                await _record(conn, actor, AuditAction.KEY_LIMITS, record)
        if record is None:
            raise NotFound("no API key has that id")
        self._apply(KeyEvent(KeyEventKind.LIMITS, record.id, record.key_hash))  # here at once, without the listener
        return record

    async def list(self) -> list[ApiKeyRecord]:
        async with self._db.connection() as conn:
            return await storage.list_api_keys(conn)

    async def revoke(self, key_id: uuid.UUID, *, actor: Actor | None = None) -> ApiKeyRecord:
        """Revoke a key and end its console sessions (their rows go in the same transaction);
        `actor`: who revoked it, recorded (`key_revoke`) there too."""
        async with self._db.transaction() as conn:
            record = await storage.revoke_api_key(conn, key_id)
            if record is not None:
                await session_storage.delete_key_sessions(conn, key_id)
                if actor is not None:
                    await _record(conn, actor, AuditAction.KEY_REVOKE, record)
        if record is None:
            raise NotFound("no API key has that id")
        self._apply(KeyEvent(KeyEventKind.REVOKED, record.id, record.key_hash))  # here at once, without the listener
        return record

    async def count(self) -> int:
        async with self._db.connection() as conn:
            return await storage.count_api_keys(conn)


async def _record(conn: asyncpg.Connection, actor: Actor, action: AuditAction, record: ApiKeyRecord) -> None:
    await key_events.record_event(conn, actor, action, AuditOutcome.OK, key_events.key_detail(record))


def key_shaped(token: str | None) -> TypeIs[str]:
    """Whether a credential could be a key at all (worth a lookup)."""
    return token is not None and token.startswith(API_KEY_PREFIX) and len(token) <= _MAX_KEY_CHARS


def _or_default(own: int | None, default: int) -> int:
    return default if own is None else own
