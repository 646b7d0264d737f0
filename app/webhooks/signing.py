"""Standard Webhooks signatures (https://www.standardwebhooks.com), through the `standardwebhooks` package.

Each key has its own secret (`whsec_` and 32 random bytes in base64), shown once. During a
rotation's grace period a message carries two signatures, the new secret's and the old one's,
space-separated as the specification allows, so receivers can switch over without losing any.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signed_headers(message_id: str, timestamp: datetime, body: bytes, signing_secrets: Sequence[str]) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, signed with each secret given."""
    signatures = " ".join(Webhook(secret).sign(message_id, timestamp, body) for secret in signing_secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
    }
