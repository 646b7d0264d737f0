"""An example key-provider plugin: where a KMS or Vault Transit plugin would unwrap data keys,
it derives them from its own setting, `EXAMPLE_KMS_SECRET` (hex), with HKDF.

The service finds it through the entry point `example` in the group
`agent_service.key_providers` when `RESULT_KEY_PROVIDER=example`, and calls
`create_key_provider(settings)` once at start-up.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.access.encryption import ResultKey
from app.settings import Settings

KEY_IDS = ("kms-2", "kms-1")  # the first seals new rows


class ExampleKeyProvider:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def keys(self) -> list[ResultKey]:
        return [ResultKey(key_id, _derive(self._secret, key_id)) for key_id in KEY_IDS]


def _derive(secret: bytes, key_id: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=key_id.encode()).derive(secret)


def create_key_provider(settings: Settings) -> ExampleKeyProvider:
    """The plugin reads its own configuration; a missing one is an error the service reports."""
    return ExampleKeyProvider(bytes.fromhex(os.environ["EXAMPLE_KMS_SECRET"]))
