"""Results sealed at rest: AES-256-GCM under a key ring, each ciphertext bound to its row.

An answer often quotes its prompt (a summary of an email is the email), so `output` and
`context` are stored sealed, never plain: a database reader, a replica or a backup holds
ciphertext only. Each ciphertext names the key that sealed it, so keys rotate (a new key
first seals new rows; old rows still open under theirs) and retire (once no live row needs
a key, removing it makes every backup copy of those rows unreadable: retention then holds in
backups too).

The associated data binds a ciphertext to its task, its owner and its field: moved to another
row, or from `context` to `output`, it no longer opens.

Keys come from a `KeyProvider`. The built-in one reads `RESULT_ENCRYPTION_KEYS`
(`id:base64-32-bytes`, comma-separated, the first one active); a KMS or a HashiCorp Vault
Transit provider can be installed as a plugin: an entry point in the group
`agent_service.key_providers` whose object is `factory(settings) -> KeyProvider`, chosen by
`RESULT_KEY_PROVIDER=<its name>`. Unlike a provider plugin, a key provider that fails stops
the start: the service cannot read or write a result without its keys.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.domain import OpenedResult, TaskRecord
from app.settings import Settings
from app.settings.secrets import (
    GOOD_RESULT_KEY_HINT,
    RESULT_KEY_BYTES,
    RESULT_KEY_ID,
    parse_result_keys,
)

KEY_PROVIDER_GROUP = "agent_service.key_providers"
FORMAT_VERSION = 1
KEY_BYTES = RESULT_KEY_BYTES
NONCE_BYTES = 12
GOOD_KEY_HINT = GOOD_RESULT_KEY_HINT
_AD_PREFIX = b"agent-service result v1"


class KeyRetired(Exception):
    """The key that sealed this ciphertext is no longer in the ring (retired on purpose)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"the key {key_id!r} that sealed this result is retired")
        self.key_id = key_id


class SealBroken(Exception):
    """The ciphertext does not open under its key: altered, truncated, or moved from another row."""


@dataclass(frozen=True, slots=True)
class ResultKey:
    id: str
    secret: bytes

    def __repr__(self) -> str:
        return f"ResultKey(id={self.id!r}, secret=<{len(self.secret)} bytes>)"


class KeyProvider(Protocol):
    """Where the key ring comes from. `keys()` is called once at start-up; the first is active.

    A plugin (a KMS, Vault Transit) returns the same: key ids and 32-byte data keys it has
    unwrapped. Ids must stay stable: every ciphertext carries the id that sealed it.
    """

    def keys(self) -> Sequence[ResultKey]: ...


def parse_keys(value: str, *, name: str = "RESULT_ENCRYPTION_KEYS") -> list[ResultKey]:
    """`id:base64,id:base64,…` as keys, the first active (the rules: `app.settings.parse_result_keys`)."""
    return [ResultKey(key_id, secret) for key_id, secret in parse_result_keys(value, name=name)]


def valid_key_id(key_id: str) -> bool:
    return RESULT_KEY_ID.match(key_id) is not None


def new_key_entry(key_id: str) -> str:
    """A fresh `id:base64` entry, for the development default and `encryption new-key`."""
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


class StaticKeyProvider:
    """The built-in provider: the keys given in the settings."""

    def __init__(self, keys: Sequence[ResultKey]) -> None:
        self._keys = list(keys)

    def keys(self) -> Sequence[ResultKey]:
        return self._keys


class ResultCipher:
    """Seals and opens results under the key ring; the first key seals, any key opens.

    Ciphertext layout: version (1 byte), key id length (1 byte), key id (ASCII), nonce
    (12 random bytes), AES-GCM ciphertext and tag. A random nonce per seal: at 2^32 seals per
    key the collision risk is still below 2^-32; rotate keys long before that.
    """

    def __init__(self, provider: KeyProvider) -> None:
        keys = list(provider.keys())
        if not keys:
            raise ValueError("the key provider gave no result encryption key")
        self._aead = {key.id: AESGCM(key.secret) for key in keys}
        self.active_key_id = keys[0].id
        self.key_ids = tuple(key.id for key in keys)

    def seal(self, plaintext: bytes, *, task_id: uuid.UUID, owner_id: uuid.UUID, field: str) -> bytes:
        key_id = self.active_key_id.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self.active_key_id].encrypt(nonce, plaintext, _associated(task_id, owner_id, field))
        return bytes([FORMAT_VERSION, len(key_id)]) + key_id + nonce + sealed

    def open(self, ciphertext: bytes, *, task_id: uuid.UUID, owner_id: uuid.UUID, field: str) -> bytes:
        key_id, nonce, sealed = _split(ciphertext)
        aead = self._aead.get(key_id)
        if aead is None:
            raise KeyRetired(key_id)
        try:
            return aead.decrypt(nonce, sealed, _associated(task_id, owner_id, field))
        except InvalidTag:
            raise SealBroken("the result does not open under its key: altered or moved") from None

    def is_active(self, ciphertext: bytes) -> bool:
        return key_id_of(ciphertext) == self.active_key_id


def key_id_of(ciphertext: bytes) -> str:
    """The id of the key that sealed `ciphertext`."""
    return _split(ciphertext)[0]


def _split(ciphertext: bytes) -> tuple[str, bytes, bytes]:
    if len(ciphertext) < 2 or ciphertext[0] != FORMAT_VERSION:
        raise SealBroken("not a sealed result of a known format")
    end = 2 + ciphertext[1]
    if len(ciphertext) < end + NONCE_BYTES + 16:
        raise SealBroken("the sealed result is truncated")
    return (
        ciphertext[2:end].decode("ascii", "replace"),
        ciphertext[end : end + NONCE_BYTES],
        ciphertext[end + NONCE_BYTES :],
    )


def _associated(task_id: uuid.UUID, owner_id: uuid.UUID, field: str) -> bytes:
    return b"|".join((_AD_PREFIX, task_id.bytes, owner_id.bytes, field.encode()))


OUTPUT, CONTEXT = "output", "context"
KEY_RETIRED = "key_retired"
RESULT_UNREADABLE = "result_unreadable"


class ResultVault:
    """A task's output and context as the service writes and reads them: sealed for their row
    on the way in, opened on the way out. A copy (a cache hit, a single-flight follower) is
    opened from its source row and sealed again for its own: a ciphertext opens only where it
    was written."""

    def __init__(self, cipher: ResultCipher) -> None:
        self.cipher = cipher

    @property
    def key_id(self) -> str:
        return self.cipher.active_key_id

    def seal_context(self, task_id: uuid.UUID, owner_id: uuid.UUID, context: dict[str, Any]) -> bytes | None:
        if not context:
            return None
        text = json.dumps(context, separators=(",", ":"), ensure_ascii=False).encode()
        return self.cipher.seal(text, task_id=task_id, owner_id=owner_id, field=CONTEXT)

    def seal_output(self, task_id: uuid.UUID, owner_id: uuid.UUID, output: str | None) -> bytes | None:
        if output is None:
            return None
        return self.cipher.seal(output.encode(), task_id=task_id, owner_id=owner_id, field=OUTPUT)

    def open(self, task: TaskRecord) -> OpenedResult:
        try:
            output = None if task.output is None else self._open(task, task.output, OUTPUT).decode()
            context = {} if task.context is None else json.loads(self._open(task, task.context, CONTEXT))
        except KeyRetired:
            return OpenedResult(None, {}, KEY_RETIRED)
        except SealBroken:
            return OpenedResult(None, {}, RESULT_UNREADABLE)
        return OpenedResult(output, context)

    def reseal_output(self, source: TaskRecord, task_id: uuid.UUID, owner_id: uuid.UUID) -> bytes | None:
        """The source's answer sealed for another row (its copy). Raises if it cannot be opened."""
        if source.output is None:
            return None
        return self.seal_output(task_id, owner_id, self._open(source, source.output, OUTPUT).decode())

    def reseal(
        self, task_id: uuid.UUID, owner_id: uuid.UUID, output: bytes | None, context: bytes | None
    ) -> tuple[bytes | None, bytes | None]:
        """A row's fields opened under whichever key sealed them and sealed again under the active
        one (re-encryption). Raises `KeyRetired` or `SealBroken` when one cannot be opened."""

        def again(sealed: bytes | None, field: str) -> bytes | None:
            if sealed is None or self.cipher.is_active(sealed):
                return sealed
            plain = self.cipher.open(bytes(sealed), task_id=task_id, owner_id=owner_id, field=field)
            return self.cipher.seal(plain, task_id=task_id, owner_id=owner_id, field=field)

        return again(output, OUTPUT), again(context, CONTEXT)

    def _open(self, task: TaskRecord, sealed: bytes, field: str) -> bytes:
        return self.cipher.open(bytes(sealed), task_id=task.id, owner_id=task.owner_id, field=field)


KeyProviderFactory = Callable[[Settings], KeyProvider]


class KeyProviderError(Exception):
    """The configured key provider could not be found or gave no usable key (the message names
    the provider and the rule, never a key)."""


def key_provider(settings: Settings) -> KeyProvider:
    """The key provider the settings choose: a plugin by name, else RESULT_ENCRYPTION_KEYS."""
    name = settings.result_key_provider
    if name is None:
        if settings.result_encryption_keys is None:
            raise KeyProviderError("RESULT_ENCRYPTION_KEYS is not set")
        return StaticKeyProvider(parse_keys(settings.result_encryption_keys.get_secret_value()))
    found = [ep for ep in entry_points(group=KEY_PROVIDER_GROUP) if ep.name == name]
    if not found:
        raise KeyProviderError(f"no key provider plugin named {name!r} is installed (group {KEY_PROVIDER_GROUP})")
    try:
        factory: KeyProviderFactory = found[0].load()
        return factory(settings)
    except Exception as exc:  # the type only: a plugin's message could carry key material
        raise KeyProviderError(f"the key provider {name!r} failed to start ({type(exc).__name__})") from None


def build_vault(settings: Settings) -> ResultVault:
    """The vault for these settings; `KeyProviderError` when its keys cannot be had or are unfit."""
    provider = key_provider(settings)
    try:
        keys = list(provider.keys())
    except Exception as exc:
        raise KeyProviderError(f"the key provider failed to give its keys ({type(exc).__name__})") from None
    for key in keys:
        if len(key.secret) != KEY_BYTES:
            raise KeyProviderError(f"the key provider gave key {key.id!r} of {len(key.secret)} bytes, not {KEY_BYTES}")
    if not keys:
        raise KeyProviderError("the key provider gave no key")
    return ResultVault(ResultCipher(StaticKeyProvider(keys)))
