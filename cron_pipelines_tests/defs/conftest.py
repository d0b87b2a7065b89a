"""Every job test runs against the stand-ins on loopback and a real SMTP server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cron_pipelines_tests.support.job_world import JobWorld, job_environment
from cron_pipelines_tests.support.services import ServiceWorld
from cron_pipelines_tests.support.smtp_sink import SmtpSink


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
