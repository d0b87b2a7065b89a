"""A complete world for running the jobs end to end: the stand-in services on loopback,
a real SMTP server, the project's Definitions built from test settings, and a Dagster instance."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from cron_pipelines.defs import build_definitions
from cron_pipelines.settings import Settings, load_settings
from cron_pipelines_tests.support.keys import TEST_JWT_SECRET
from cron_pipelines_tests.support.services import ServiceWorld
from cron_pipelines_tests.support.smtp_sink import ReceivedMail, SmtpSink


def job_environment(services: ServiceWorld, smtp: SmtpSink, dagster_home: str, **overrides: str) -> dict[str, str]:
    """The variables a deployment would set to point this project at the test peers."""
    return {
        "DAGSTER_HOME": dagster_home,
        "SQL_SERVICE_URL": services.sql_url,
        "MONGO_SERVICE_URL": services.mongo_url,
        "INTERNAL_JWT_SECRET": TEST_JWT_SECRET,
        "MAILER_BACKEND": "smtp",
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "SMTP_TIMEOUT_SECONDS": "5",
        "MAIL_FROM": "Cron Pipelines <no-reply@example.com>",
        "MAIL_MAX_CONNECTIONS": "2",
        "SERVICE_MAX_ATTEMPTS": "4",
        "SERVICE_READ_TIMEOUT_SECONDS": "5",
        "STEP_MAX_RETRIES": "0",
        "OPS_ALERT_EMAIL": "ops@example.com",
        "PARTITIONS_START_DATE": "2026-01-01",
        **overrides,
    }


# The CLI, reporting its own peak resident memory when it exits.
_MEASURED_CLI = """
import atexit, re, runpy, sys
def report():
    status = open("/proc/self/status").read()
    print("peak_rss_kb=" + re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1), flush=True)
atexit.register(report)
sys.argv = ["cron-pipelines", *sys.argv[1:]]
runpy.run_module("cron_pipelines.cli", run_name="__main__")
"""


@dataclass(frozen=True)
class MeasuredRun:
    returncode: int
    output: str
    peak_rss_mb: float
    seconds: float


@dataclass
class JobWorld:
    services: ServiceWorld
    smtp: SmtpSink
    environment: dict[str, str]
    instance: dg.DagsterInstance
    settings: Settings = field(init=False)
    defs: dg.Definitions = field(init=False)

    def __post_init__(self) -> None:
        self.configure()

    def configure(self, **overrides: str) -> None:
        """Definitions built from the environment plus these overrides (same peers and instance)."""
        self.environment = {**self.environment, **overrides}
        self.settings = load_settings(self.environment)
        self.defs = build_definitions(self.settings)

    def run_in_subprocess(self, job: str, day: str, **popen_options: Any) -> subprocess.Popen:
        """`cron-pipelines run JOB --date DAY` in its own process, on this world's instance and peers."""
        environment = {**os.environ, **self.environment, "DAGSTER_HOME": self.instance.root_directory}
        return subprocess.Popen(
            [sys.executable, "-m", "cron_pipelines.cli", "run", job, "--date", day],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **popen_options,
        )

    def run_measured(self, job: str, day: str, *, timeout: float = 120.0) -> MeasuredRun:
        """`cron-pipelines run` in its own process: its output, wall time and peak memory.

        The peak is the process's own VmHWM, read as it exits: rusage would count the
        test process's pages the child held between fork and exec.
        """
        started = time.monotonic()
        environment = {**os.environ, **self.environment, "DAGSTER_HOME": self.instance.root_directory}
        completed = subprocess.run(
            [sys.executable, "-c", _MEASURED_CLI, "run", job, "--date", day],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        peak = re.search(r"^peak_rss_kb=(\d+)$", completed.stdout, re.MULTILINE)
        assert peak is not None, completed.stdout[-2000:]
        return MeasuredRun(
            completed.returncode, completed.stdout, int(peak.group(1)) / 1024, time.monotonic() - started
        )

    def run(self, job: str, day: str, *, run_config: Mapping[str, Any] | None = None) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(job).execute_in_process(
            partition_key=day, instance=self.instance, run_config=run_config or {}, raise_on_error=False
        )

    def mails(self) -> list[ReceivedMail]:
        return self.smtp.received

    def sent_keys(self) -> list[str]:
        return sorted(key for mail in self.smtp.received for key in mail.notification_ids)

    def ledger(self) -> dict[str, dict[str, Any]]:
        return {record["idempotency_key"]: record for record in self.services.store.list_notifications()}


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The materialization metadata of `asset` in this run, as plain values."""
    events = [event for event in result.get_asset_materialization_events() if event.asset_key.to_user_string() == asset]
    assert len(events) == 1, f"expected one materialization of {asset}, got {len(events)}"
    return {name: value.value for name, value in events[0].event_specific_data.materialization.metadata.items()}


def check_result(result: dg.ExecuteInProcessResult, asset: str, check: str) -> dg.AssetCheckEvaluation:
    evaluations = [
        event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
        and event.event_specific_data.asset_key.to_user_string() == asset
        and event.event_specific_data.check_name == check
    ]
    assert len(evaluations) == 1
    return evaluations[0]


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    """Every failure event's message and error, causes included."""
    parts = []
    for event in result.all_events:
        if event.is_failure:
            parts.append(event.message or "")
            error = getattr(event.event_specific_data, "error", None)
            if error is not None:
                parts.append(error.to_string())
    return "\n".join(parts)
