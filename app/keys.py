"""API keys: creation (shown once), listing, revocation, and authenticating a bearer token."""

from __future__ import annotations

import uuid

from cachetools import TTLCache

from app import repository
from app.db import Database
from app.errors import NotFound, Unauthenticated
from app.models import Role
from app.records import ApiKeyRecord
from app.security import API_KEY_PREFIX, Principal, display_prefix, hash_api_key, new_api_key

_MAX_KEY_CHARS = 256


class KeyStore:
    """API keys over the repository, with a short in-process cache of valid keys.

    Authenticating every request against the database would double the hot path's
    round trips; a revocation made elsewhere takes effect within AUTH_CACHE_SECONDS
    (at once in the process that revoked it).
    """

    def __init__(self, db: Database, cache_seconds: float) -> None:
        self._db = db
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
            record = await repository.find_active_key(conn, key_hash)
        if record is None:
            raise Unauthenticated("the API key is unknown or revoked")
        principal = Principal(record.id, record.name, Role(record.role))
        if self._cache is not None:
            self._cache[key_hash] = principal
        return principal

    async def create(self, name: str, role: Role) -> tuple[ApiKeyRecord, str]:
        """A new key; the plain key is returned here and never again."""
        plain = new_api_key()
        async with self._db.transaction() as conn:
            record = await repository.insert_api_key(
                conn, name=name, role=role, key_hash=hash_api_key(plain), key_prefix=display_prefix(plain)
            )
        return record, plain

    async def list(self) -> list[ApiKeyRecord]:
        async with self._db.connection() as conn:
            return await repository.list_api_keys(conn)

    async def revoke(self, key_id: uuid.UUID) -> ApiKeyRecord:
        async with self._db.transaction() as conn:
            record = await repository.revoke_api_key(conn, key_id)
        if record is None:
            raise NotFound("no API key has that id")
        if self._cache is not None:
            self._cache.clear()
        return record

    async def count(self) -> int:
        async with self._db.connection() as conn:
            return await repository.count_api_keys(conn)
