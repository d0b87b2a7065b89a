"""The deployment on one machine: supervisord runs the code server, webserver and daemon on PostgreSQL;
runs launched through the webserver go through the daemon's queue, never overlap for one partition,
and a crashed process is restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import httpx
import pytest

from cron_pipelines.observability.health import check_daemon
from cron_pipelines_tests.deploy.conftest import PROJECT, PostgresHome
from cron_pipelines_tests.support.smtp_sink import SmtpSink, free_port

LAUNCH = """mutation Launch($partition: String!) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: "cron_pipelines", repositoryName: "__repository__", jobName: "send_payment_reminders"},
    executionMetadata: {tags: [{key: "dagster/partition", value: $partition}]}
  }) { __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } }
}"""


JOBS = "{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }"


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (httpx.HTTPError, KeyError, TypeError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Stack:
    def __init__(self, home: PostgresHome, tmp_path: Path, smtp: SmtpSink) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.environment = {
            **home.environment,
            "DAGSTER_CODE_SERVER_PORT": str(free_port()),
            "DAGSTER_WEBSERVER_HOST": "127.0.0.1",
            "DAGSTER_WEBSERVER_PORT": str(self.port),
            "CRON_PIPELINES_BIN": str(Path(sys.executable).parent),
            "CRON_PIPELINES_LOG_DIR": str(tmp_path / "logs"),
            "CRON_PIPELINES_RUN_DIR": str(tmp_path / "run"),
            # A slow mail server (one session, latency per command) makes each run last
            # seconds, so two runs of one partition would overlap without the queue's limit.
            "MAILER_BACKEND": "smtp",
            "SMTP_HOST": smtp.host,
            "SMTP_PORT": str(smtp.port),
            "MAIL_MAX_CONNECTIONS": "1",
        }
        self.process = subprocess.Popen(
            [str(PROJECT / "deploy" / "start.sh")], env=self.environment, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def graphql(self, query: str, **variables: str) -> dict:
        answer = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30)
        answer.raise_for_status()
        return answer.json()["data"]

    def supervisorctl(self, *args: str) -> str:
        return subprocess.run(
            [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(PROJECT / "deploy" / "supervisord.conf"), *args],
            env=self.environment, capture_output=True, text=True, timeout=30,
        ).stdout

    def stop(self) -> int:
        os.killpg(self.process.pid, signal.SIGTERM)  # supervisord stops its programs, then exits
        return self.process.wait(timeout=90)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink(latency=0.1) as sink:
        yield sink


@pytest.fixture
def stack(postgres_home: PostgresHome, tmp_path: Path, smtp: SmtpSink) -> Iterator[Stack]:
    running = Stack(postgres_home, tmp_path, smtp)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


def test_three_processes_serve_queue_and_restart(stack: Stack, smtp: SmtpSink) -> None:
    _wait(lambda: httpx.get(f"{stack.url}/server_info", timeout=2).status_code == 200, 120, "the webserver")
    with dg.DagsterInstance.get() as instance:  # the same PostgreSQL the daemon writes its heartbeats to
        _wait(lambda: check_daemon(instance).ok, 120, "fresh daemon heartbeats")
    # The webserver loads the code location from the code server over gRPC.
    _wait(lambda: "send_payment_reminders" in json.dumps(stack.graphql(JOBS)), 120, "the code location")
    status = stack.supervisorctl("status")
    for program in ("code-server", "webserver", "daemon"):
        assert f"{program}" in status and "RUNNING" in status.split(program, 1)[1].splitlines()[0]

    # Two launches of one job and day, through the webserver: the queue runs them one after the other.
    today = datetime.now(timezone.utc).date().isoformat()
    launched = [stack.graphql(LAUNCH, partition=today)["launchRun"] for _ in range(2)]
    assert [answer["__typename"] for answer in launched] == ["LaunchRunSuccess"] * 2, launched
    run_ids = [answer["run"]["runId"] for answer in launched]
    with dg.DagsterInstance.get() as instance:
        def finished():
            records = [instance.get_run_record_by_id(run_id) for run_id in run_ids]
            return records if all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records) else None

        first, second = sorted(_wait(finished, 180, "both runs to succeed"), key=lambda r: r.start_time)
        assert first.end_time - first.start_time > 2  # long enough to have overlapped...
        assert second.start_time >= first.end_time  # ...but never at the same time
        records = instance.fetch_materializations(dg.AssetKey("payment_reminders"), limit=10).records
        summaries = [record.asset_materialization.metadata for record in records]
        assert sorted(summary["sent"].value for summary in summaries) == [0, len(smtp.received)]
    keys = [mail.notification_id for mail in smtp.received]
    assert keys and len(keys) == len(set(keys))

    # A crashed daemon is restarted by supervisord.
    old_pid = int(stack.supervisorctl("pid", "daemon").strip())
    os.kill(old_pid, signal.SIGKILL)
    _wait(lambda: (pid := stack.supervisorctl("pid", "daemon").strip()).isdigit() and int(pid) not in (0, old_pid),
          60, "the daemon to be restarted")

    assert stack.stop() == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{stack.url}/server_info", timeout=2)
