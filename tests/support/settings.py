"""The settings the tests run the service with."""

from __future__ import annotations

from typing import Any

from app.settings import Settings

TEST_HASH_KEY = "test-prompt-hash-key-" + "0123456789abcdef" * 2
# Bytes 0 to 31, base64: a fixed key the tests can name (`test1`), distinct enough to pass the checks.
TEST_RESULT_KEYS = "test1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
# A fixed Ed25519 private key (base64 of 32 bytes) for the audit seals: tests only.
TEST_SIGNING_KEY = "uwIEpqD2ptw2HDDLyXArqBsj/7k77CWvMZT5DKi9oUY="
# Nobody connects to this database: the settings of tests that stop at start-up need one.
UNUSED_DB = "postgresql://nobody:nothing@127.0.0.1:9/none"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "prompt_hash_key": TEST_HASH_KEY,
        "result_encryption_keys": TEST_RESULT_KEYS,
        "audit_signing_key": TEST_SIGNING_KEY,
        "openai_api_key": None,
        "openai_base_url": None,
        # The native vendors' short forms: off whatever the machine's environment holds.
        "anthropic_api_key": None,
        "anthropic_base_url": None,
        "gemini_api_key": None,
        "google_api_key": None,
        "groq_api_key": None,
        "mistral_api_key": None,
        "co_api_key": None,
        "aws_region": None,
        "aws_access_key_id": None,
        "aws_secret_access_key": None,
        "aws_session_token": None,
        "aws_bearer_token_bedrock": None,
        "default_model": None,
        "auth_cache_seconds": 0,
        # Tests send many wrong keys from one address; tests/integration/access/test_throttle.py sets its own.
        "auth_failure_limit": 0,
        "db_pool_min_size": 1,
        "db_pool_max_size": 5,
        "db_connect_timeout_seconds": 2,
        "trace_requests": True,  # the tests read the spans
        "trace_sql": True,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
