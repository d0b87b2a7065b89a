"""`cron-pipelines health` tells the truth: each check against a real peer, up and down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._daemon.types import DaemonHeartbeat

from cron_pipelines.health import report, run_health_checks
from cron_pipelines.settings import load_settings
from cron_pipelines_tests.support.job_world import job_environment
from cron_pipelines_tests.support.services import ServiceWorld
from cron_pipelines_tests.support.smtp_sink import SmtpSink, free_port


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def _beat(instance: dg.DagsterInstance, age_seconds: float = 0.0) -> None:
    daemons = instance.get_required_daemon_types()
    assert daemons  # the test instance runs a scheduler, sensors, a run queue...
    for daemon in daemons:
        instance.add_daemon_heartbeat(DaemonHeartbeat(time.time() - age_seconds, daemon, "test-daemon"))


def _checks(environment: dict[str, str], instance: dg.DagsterInstance) -> dict[str, tuple[bool, str]]:
    results = run_health_checks(load_settings(environment), instance)
    return {result.name: (result.ok, result.detail) for result in results}


def test_everything_up_is_healthy(
    services: ServiceWorld, smtp: SmtpSink, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    _beat(instance)
    environment = job_environment(services, smtp, str(tmp_path))
    results = run_health_checks(load_settings(environment), instance)
    assert report(results)["healthy"], results
    assert [result.name for result in results] == [
        "instance storage",
        "daemon heartbeats",
        "sql-service",
        "mongo-service",
        "mail (smtp)",
    ]
    assert "greeted" in results[-1].detail


def test_each_failure_is_reported(
    services: ServiceWorld, smtp: SmtpSink, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    _beat(instance, age_seconds=120)
    environment = job_environment(
        services,
        smtp,
        str(tmp_path),
        INTERNAL_JWT_SECRET="a-different-secret-that-is-long-enough!!",
        SMTP_PORT=str(free_port()),
    )
    checks = _checks(environment, instance)
    assert checks["instance storage"][0]
    assert not checks["daemon heartbeats"][0] and "stale or missing heartbeats" in checks["daemon heartbeats"][1]
    assert not checks["sql-service"][0] and "status=401" in checks["sql-service"][1]
    assert not checks["mongo-service"][0] and "status=401" in checks["mongo-service"][1]
    assert not checks["mail (smtp)"][0] and "ConnectionRefusedError" in checks["mail (smtp)"][1]
    assert "a-different-secret" not in json.dumps(checks)


def test_a_service_that_is_down_and_the_outbox(
    services: ServiceWorld, smtp: SmtpSink, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    _beat(instance)
    environment = job_environment(
        services,
        smtp,
        str(tmp_path),
        MONGO_SERVICE_URL=f"http://127.0.0.1:{free_port()}",
        MAILER_BACKEND="outbox",
        MAIL_OUTBOX_DIR=str(tmp_path / "outbox"),
    )
    checks = _checks(environment, instance)
    assert checks["sql-service"][0]
    assert not checks["mongo-service"][0] and "connection failed" in checks["mongo-service"][1]
    assert checks["mail (outbox)"] == (True, f"outbox {tmp_path / 'outbox'} is writable")


def test_the_command_exits_1_with_json_when_no_daemon_runs(tmp_path: Path) -> None:
    environment = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    for name in ("SQL_SERVICE_URL", "MONGO_SERVICE_URL", "MAILER_BACKEND"):
        environment.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "cron_pipelines.cli", "health", "--json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["healthy"] is False
    by_name = {check["name"]: check for check in summary["checks"]}
    assert by_name["daemon heartbeats"]["ok"] is False
    assert by_name["sql-service"]["ok"] and by_name["mongo-service"]["ok"] and by_name["mail (outbox)"]["ok"]
