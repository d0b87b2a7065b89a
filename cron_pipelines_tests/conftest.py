"""Fixtures shared by the whole suite: a token issuer, a demo store, and both stand-in services on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cron_pipelines.clients.tokens import TokenIssuer
from cron_pipelines_tests.support.services import ServiceWorld, start_service_world
from demo_services.store import DemoStore

TEST_JWT_SECRET = "test-secret-" + "0123456789abcdef0123456789abcdef"


@pytest.fixture
def token_issuer() -> TokenIssuer:
    return TokenIssuer(algorithm="HS256", signing_key=TEST_JWT_SECRET, issuer="cron-pipelines")


@pytest.fixture
def demo_store(tmp_path: Path) -> DemoStore:
    return DemoStore(tmp_path / "demo_services.sqlite3")


@pytest.fixture
def services(demo_store: DemoStore, token_issuer: TokenIssuer) -> Iterator[ServiceWorld]:
    """Both stand-ins on real loopback ports, sharing `demo_store`, accepting `token_issuer`'s tokens."""
    with start_service_world(demo_store, token_issuer) as world:
        yield world
