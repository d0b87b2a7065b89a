"""Authenticated HTTP clients of the two stand-ins, for the demo_services tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cron_pipelines_tests.support.services import ServiceWorld


@pytest.fixture
def sql(services: ServiceWorld) -> Iterator[httpx.Client]:
    """A client of the sql-service stand-in presenting a valid token."""
    with httpx.Client(base_url=services.sql_url, headers=services.auth_headers("sql-service")) as client:
        yield client


@pytest.fixture
def mongo(services: ServiceWorld) -> Iterator[httpx.Client]:
    """A client of the mongo-service stand-in presenting a valid token."""
    with httpx.Client(base_url=services.mongo_url, headers=services.auth_headers("mongo-service")) as client:
        yield client
