"""API keys: creation (shown once), listing, revocation, and authenticating a bearer token."""

from __future__ import annotations

import uuid

from cachetools import TTLCache

from app.access.hashing import API_KEY_PREFIX, display_prefix, hash_api_key, new_api_key
from app.domain import ApiKeyRecord, NotFound, Principal, Role, Unauthenticated
from app.storage import keys as storage
from app.storage.database import Database

_MAX_KEY_CHARS = 256


class KeyStore:
    """API keys over the repository, with a short in-process cache of valid keys.

    Authenticating every request against the database would double the hot path's
    round trips; a revocation made elsewhere takes effect within AUTH_CACHE_SECONDS
    (at once in the process that revoked it).
    """

    def __init__(
        self, db: Database, cache_seconds: float, *, rate_limit_per_minute: int = 0, max_running_tasks: int = 0
    ) -> None:
        self._db = db
        self._default_rate = rate_limit_per_minute
        self._default_running = max_running_tasks
        self._cache: TTLCache[str, Principal] | None = (
            TTLCache(maxsize=10_000, ttl=cache_seconds) if cache_seconds > 0 else None
        )

    async def authenticate(self, token: str | None) -> Principal:
        if not token or not token.startswith(API_KEY_PREFIX) or len(token) > _MAX_KEY_CHARS:
            raise Unauthenticated
        key_hash = hash_api_key(token)
        if self._cache is not None and (cached := self._cache.get(key_hash)) is not None:
            return cached
        async with self._db.connection() as conn:
            record = await storage.find_active_key(conn, key_hash)
        if record is None:
            raise Unauthenticated("the API key is unknown or revoked")
        principal = Principal(
            record.id,
            record.name,
            record.role,
            rate_limit_per_minute=_or_default(record.rate_limit_per_minute, self._default_rate),
            max_running_tasks=_or_default(record.max_running_tasks, self._default_running),
        )
        if self._cache is not None:
            self._cache[key_hash] = principal
        return principal

    async def create(
        self, name: str, role: Role, *, rate_limit_per_minute: int | None = None, max_running_tasks: int | None = None
    ) -> tuple[ApiKeyRecord, str]:
        """A new key; the plain key is returned here and never again."""
        plain = new_api_key()
        async with self._db.transaction() as conn:
            record = await storage.insert_api_key(
                conn,
                name=name,
                role=role,
                key_hash=hash_api_key(plain),
                key_prefix=display_prefix(plain),
                rate_limit_per_minute=rate_limit_per_minute,
                max_running_tasks=max_running_tasks,
            )
        return record, plain

    async def set_limits(
        self, key_id: uuid.UUID, *, rate_limit_per_minute: int | None, max_running_tasks: int | None
    ) -> ApiKeyRecord:
        """Replace a key's own limits (None: the server's default)."""
        async with self._db.transaction() as conn:
            record = await storage.set_key_limits(
                conn, key_id, rate_limit_per_minute=rate_limit_per_minute, max_running_tasks=max_running_tasks
            )
        if record is None:
            raise NotFound("no API key has that id")
        if self._cache is not None:
            self._cache.clear()
        return record

    async def list(self) -> list[ApiKeyRecord]:
        async with self._db.connection() as conn:
            return await storage.list_api_keys(conn)

    async def revoke(self, key_id: uuid.UUID) -> ApiKeyRecord:
        async with self._db.transaction() as conn:
            record = await storage.revoke_api_key(conn, key_id)
        if record is None:
            raise NotFound("no API key has that id")
        if self._cache is not None:
            self._cache.clear()
        return record

    async def count(self) -> int:
        async with self._db.connection() as conn:
            return await storage.count_api_keys(conn)


def _or_default(own: int | None, default: int) -> int:
    return default if own is None else own
