"""The rules a secret the service is given must pass: the prompt hash key, the result encryption
keys. Kept apart from the settings so the rules read (and are tested) on their own; errors name
the rule, never the value."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter

# Values people paste from examples; refusing them beats running with a known secret.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "please-change-me", "xxx", "example"})
# Words that give a secret away wherever they stand in it (compared without case or punctuation).
# Five letters or more: a random key contains one by chance with a probability below one in a million.
PLACEHOLDER_WORDS = (
    "changeme",
    "secret",
    "example",
    "password",
    "passwd",
    "placeholder",
    "default",
    "dummy",
    "sample",
    "insecure",
    "replaceme",
    "qwerty",
    "letmein",
)
MIN_HASH_KEY_CHARS = 32
MIN_SECRET_DISTINCT_CHARS = 8
# A character-frequency (Shannon) estimate: `openssl rand -hex 16`, the weakest generated key
# we accept, never came under 92 bits in 100,000 draws; a key of one character repeated is 0.
MIN_SECRET_ESTIMATED_BITS = 64
GOOD_SECRET_HINT = "generate one with `openssl rand -hex 32`"
_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]")


def secret_weakness(value: str, *, min_chars: int = MIN_HASH_KEY_CHARS) -> str | None:
    """Why `value` is too guessable to be a key, or None when it is not.

    Length alone let `"a" * 32` and `changemechangemechangemechangeme` through (issue 12):
    a key also needs variety (distinct characters, no short pattern repeated, a plausible
    entropy estimate) and no placeholder word. The reason names the rule, never the value.
    For any secret the service takes: the prompt hash key now, an encryption key later.
    """
    if value.strip().lower() in PLACEHOLDER_SECRETS:
        return "is a placeholder"
    if len(value) < min_chars:
        return f"must be at least {min_chars} characters"
    words = _NOT_ALPHANUMERIC.sub("", value.lower())
    if found := next((word for word in PLACEHOLDER_WORDS if word in words), None):
        return f"contains the placeholder word {found!r}"
    distinct = len(set(value))
    if distinct < MIN_SECRET_DISTINCT_CHARS:
        return f"has too little variety: {distinct} distinct characters (at least {MIN_SECRET_DISTINCT_CHARS})"
    period = _period(value)
    if period <= len(value) // 2:
        return f"repeats a pattern of {period} characters"
    bits = _estimated_bits(value)
    if bits < MIN_SECRET_ESTIMATED_BITS:
        return (
            f"is too predictable: about {bits:.0f} bits by its character frequencies "
            f"(at least {MIN_SECRET_ESTIMATED_BITS})"
        )
    return None


def _period(value: str) -> int:
    """The length of the shortest pattern that `value` repeats (its own length when none)."""
    n = len(value)
    border = [0] * n  # Knuth-Morris-Pratt failure function: the longest proper prefix that is also a suffix
    for i in range(1, n):
        k = border[i - 1]
        while k and value[i] != value[k]:
            k = border[k - 1]
        border[i] = k + 1 if value[i] == value[k] else k
    period = n - border[-1] if n else 0
    return period if period and n % period == 0 else n


def _estimated_bits(value: str) -> float:
    """Shannon entropy of the character frequencies, times the length: a ceiling, never a proof."""
    n = len(value)
    return -sum(count * math.log2(count / n) for count in Counter(value).values())


RESULT_KEY_BYTES = 32
RESULT_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
RESULT_KEY_ID_RULE = "1 to 32 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
# 32 random bytes show about 30 distinct values; fewer than 16 is a made-up key, not a drawn one.
MIN_DISTINCT_RESULT_KEY_BYTES = 16
GOOD_RESULT_KEY_HINT = "generate one with `openssl rand -base64 32`"


def parse_result_keys(value: str, *, name: str = "RESULT_ENCRYPTION_KEYS") -> list[tuple[str, bytes]]:
    """`id:base64,id:base64,…` as (id, 32-byte key) pairs, the first the active one. Errors name
    the rule, the entry's position and its id, never a key's bytes."""
    keys: list[tuple[str, bytes]] = []
    for position, item in enumerate((part.strip() for part in value.split(",")), start=1):
        key_id, sep, encoded = item.partition(":")
        if not sep:
            raise ValueError(f"{name}: entry {position} must be id:base64-of-32-bytes")
        if not RESULT_KEY_ID.match(key_id):
            raise ValueError(f"{name}: entry {position} has an id that is not {RESULT_KEY_ID_RULE}")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{name}: key {key_id!r} is not base64") from None
        if len(secret) != RESULT_KEY_BYTES:
            raise ValueError(f"{name}: key {key_id!r} is {len(secret)} bytes; AES-256 needs {RESULT_KEY_BYTES}")
        if len(set(secret)) < MIN_DISTINCT_RESULT_KEY_BYTES:
            raise ValueError(f"{name}: key {key_id!r} is too regular to be random; {GOOD_RESULT_KEY_HINT}")
        if any(known == key_id for known, _ in keys):
            raise ValueError(f"{name}: the id {key_id!r} is used twice")
        keys.append((key_id, secret))
    if not keys:
        raise ValueError(f"{name} lists no key")
    return keys


GOOD_SIGNING_KEY_HINT = "generate one with `openssl genpkey -algorithm ed25519 -outform DER | tail -c 32 | base64`"


def signing_key_weakness(value: str) -> str | None:
    """Why `value` is not an Ed25519 private key made by a generator, or None when it is one."""
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        return "is not base64"
    if len(raw) != 32:
        return f"must be the base64 of 32 bytes (it is {len(raw)})"
    return secret_weakness(raw.hex(), min_chars=64)
