"""Stand-ins for the native vendors: the real `fakellm` server (Anthropic's Messages API), started
once per session with its rules reset for each test, and the loopback fake of every vendor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_vendors import VENDORS, FakeVendors, endpoint
from tests.support.fakellm import FakeLLM


@pytest.fixture(scope="session")
def fakellm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeLLM]:
    with FakeLLM(Path(tmp_path_factory.mktemp("fakellm"))).running() as server:
        yield server


@pytest.fixture
def fakellm(fakellm_server: FakeLLM) -> Iterator[FakeLLM]:
    fakellm_server.rules([])
    yield fakellm_server
    fakellm_server.rules([])


@pytest.fixture
def vendors() -> Iterator[FakeVendors]:
    with FakeVendors().running() as fake:
        yield fake


@pytest.fixture
def vendor_settings(vendors: FakeVendors, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("NATIVE_TEST_KEY", "test-key-not-real")
    return {
        "provider_endpoints": [endpoint(kind, vendors.base_url) for kind in VENDORS],
        # Bedrock endpoints without a key sign with these (SigV4); the fake does not check them.
        "aws_access_key_id": "AKIDNOTAREALKEY",
        "aws_secret_access_key": "not-a-real-secret",
    }
