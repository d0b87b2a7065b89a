"""Fixtures shared by the whole suite: a token issuer, a demo store, both stand-in services on loopback,
a real SMTP server, and the job world that runs the jobs end to end against them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cron_pipelines.clients.tokens import TokenIssuer
from cron_pipelines_tests.support.job_world import JobWorld, job_environment
from cron_pipelines_tests.support.keys import TEST_JWT_SECRET
from cron_pipelines_tests.support.services import ServiceWorld, start_service_world
from cron_pipelines_tests.support.smtp_sink import SmtpSink
from demo_services.store import DemoStore


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


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def world(services: ServiceWorld, smtp: SmtpSink, tmp_path: Path) -> Iterator[JobWorld]:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    # As the shipped dagster.yaml: the project's own warnings land in the run's event log.
    python_logs = {"python_logs": {"managed_python_loggers": ["cron_pipelines"], "python_log_level": "INFO"}}
    with dg.instance_for_test(temp_dir=str(dagster_home), overrides=python_logs) as instance:
        yield JobWorld(services, smtp, job_environment(services, smtp, str(dagster_home)), instance)
