"""The deployment on one machine, as an operator starts it: deploy/start.sh runs supervisord with
deploy/supervisord.conf, which runs the code server, the webserver and the daemon on PostgreSQL.

Runs launched through the webserver's GraphQL API are queued, dequeued by the daemon, and two runs
of one partition never overlap; a crashed process is restarted; stopping supervisord stops all."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import httpx
import pytest

from cron_pipelines.observability.health import check_daemon
from cron_pipelines_tests.deploy.conftest import PROJECT, PostgresHome
from cron_pipelines_tests.support.smtp_sink import SmtpSink, free_port
from cron_pipelines_tests.support.webserver import JOB_NAMES, LAUNCH_PARTITION, graphql, wait_until

PROGRAMS = ("code-server", "webserver", "daemon")

DAEMON_HEALTH = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"


def _alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


class Stack:
    """deploy/start.sh with free ports, its logs under DAGSTER_HOME, and a slow real SMTP server."""

    def __init__(self, home: PostgresHome, smtp: SmtpSink) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = home.path / "supervisor" / "logs"  # deploy/env.sh's default, under DAGSTER_HOME
        self.environment = {
            **home.environment,
            "DAGSTER_CODE_SERVER_PORT": str(free_port()),
            "DAGSTER_WEBSERVER_HOST": "127.0.0.1",
            "DAGSTER_WEBSERVER_PORT": str(self.port),
            "CRON_PIPELINES_BIN": str(Path(sys.executable).parent),
            # supervisord's control socket: a short path, as a Unix socket needs.
            "CRON_PIPELINES_RUN_DIR": tempfile.mkdtemp(prefix="cron-pipelines-"),
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
        return graphql(self.url, query, **variables)

    def supervisorctl(self, *args: str) -> str:
        """deploy/ctl.sh, as an operator runs it: only DAGSTER_HOME and the overridden settings set."""
        return subprocess.run(
            [str(PROJECT / "deploy" / "ctl.sh"), *args],
            env=self.environment, capture_output=True, text=True, timeout=30,
        ).stdout

    def pids(self) -> dict[str, int]:
        return {program: int(self.supervisorctl("pid", program).strip()) for program in PROGRAMS}

    def stop(self) -> int:
        """SIGTERM to supervisord (what systemd or Ctrl-C does): it stops its programs, then exits."""
        os.kill(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=90)

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink(latency=0.1) as sink:
        yield sink


@pytest.fixture
def stack(postgres_home: PostgresHome, smtp: SmtpSink) -> Iterator[Stack]:
    running = Stack(postgres_home, smtp)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            try:
                running.stop()
            except subprocess.TimeoutExpired:
                os.killpg(running.process.pid, signal.SIGKILL)
        shutil.rmtree(running.environment["CRON_PIPELINES_RUN_DIR"], ignore_errors=True)


def test_supervisord_runs_the_deployment_on_postgres(stack: Stack, smtp: SmtpSink) -> None:
    try:
        _exercise(stack, smtp)
    except BaseException:
        print(stack.logs())  # shown by pytest on failure: the three programs' own logs
        raise


def _exercise(stack: Stack, smtp: SmtpSink) -> None:
    # Up: the webserver's health endpoint, the code location over gRPC, fresh daemon heartbeats
    # (read from PostgreSQL directly, and as the webserver reports them).
    wait_until(lambda: httpx.get(f"{stack.url}/server_info", timeout=2).status_code == 200, 120, "the webserver")
    wait_until(lambda: "send_payment_reminders" in json.dumps(stack.graphql(JOB_NAMES)), 120, "the code location")
    with dg.DagsterInstance.get() as instance:
        wait_until(lambda: check_daemon(instance).ok, 120, "fresh daemon heartbeats")

    def daemons_healthy() -> bool:
        daemons = stack.graphql(DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
        required = [daemon for daemon in daemons if daemon["required"]]
        return bool(required) and all(daemon["healthy"] for daemon in required)

    wait_until(daemons_healthy, 60, "the webserver to report every daemon healthy")
    daemon_types = {d["daemonType"] for d in stack.graphql(DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]}
    assert {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= daemon_types

    def all_running() -> bool:
        # supervisord calls a program RUNNING once it has stayed up for startsecs (5 s).
        status = stack.supervisorctl("status")
        return all("RUNNING" in status.split(program, 1)[1].splitlines()[0] for program in PROGRAMS)

    wait_until(all_running, 30, "supervisord to report all three programs RUNNING")

    # Two launches of one job and day through the webserver: both are queued (the webserver
    # never starts a run itself), the daemon starts them one after the other.
    today = datetime.now(timezone.utc).date().isoformat()
    launched = [stack.graphql(LAUNCH_PARTITION, job="send_payment_reminders", partition=today)["launchRun"] for _ in range(2)]
    assert [answer["__typename"] for answer in launched] == ["LaunchRunSuccess"] * 2, launched
    assert [answer["run"]["status"] for answer in launched] == ["QUEUED", "QUEUED"]
    run_ids = [answer["run"]["runId"] for answer in launched]
    with dg.DagsterInstance.get() as instance:
        def finished() -> list[dg.RunRecord] | None:
            records = [instance.get_run_record_by_id(run_id) for run_id in run_ids]
            return records if all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records) else None

        first, second = sorted(wait_until(finished, 180, "both runs to succeed"), key=lambda r: r.start_time)
        assert first.end_time - first.start_time > 2  # long enough to have overlapped...
        assert second.start_time >= first.end_time  # ...but never at the same time
        for record in (first, second):
            events = instance.get_records_for_run(record.dagster_run.run_id, of_type=dg.DagsterEventType.PIPELINE_ENQUEUED)
            assert len(events.records) == 1  # through the run queue
        summaries = [
            record.asset_materialization.metadata
            for record in instance.fetch_materializations(dg.AssetKey("payment_reminders"), limit=10).records
        ]
        # The sensors run too (verify_employees may send on the demo data): count the reminders.
        reminders = [mail for mail in smtp.received if mail.notification_id.startswith("payment_reminder:")]
        assert sorted(summary["sent"].value for summary in summaries) == [0, len(reminders)]
    keys = [mail.notification_id for mail in smtp.received]
    assert keys and len(keys) == len(set(keys))

    # A crashed daemon is restarted by supervisord, and beats again.
    old_pid = stack.pids()["daemon"]
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: stack.pids()["daemon"] not in (0, old_pid), 60, "the daemon to be restarted")

    # Stopped cleanly: supervisord exits 0 after stopping all three, nothing is left behind.
    pids = stack.pids()
    assert all(pids.values()), pids
    assert stack.stop() == 0
    wait_until(lambda: not any(_alive(pid) for pid in pids.values()), 10, "every program to exit")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{stack.url}/server_info", timeout=2)
