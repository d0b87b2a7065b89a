"""The deployment on one machine, as an operator starts it: deploy/start.sh runs supervisord with
deploy/supervisord.conf, which runs the code server, the webserver and the daemon on PostgreSQL.

Runs launched through the webserver's GraphQL API are queued, dequeued by the daemon, and two runs
of one partition never overlap; a crashed process is restarted; stopping supervisord stops all."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import httpx
import pytest

from cron_pipelines.health import check_daemon
from cron_pipelines_tests.deploy.conftest import PostgresHome
from cron_pipelines_tests.deploy.stack import PROGRAMS, Stack, alive, running_stack
from cron_pipelines_tests.support.smtp_sink import SmtpSink
from cron_pipelines_tests.support.webserver import JOB_NAMES, LAUNCH_PARTITION, wait_until

DAEMON_HEALTH = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink(latency=0.1) as sink:
        yield sink


@pytest.fixture
def stack(postgres_home: PostgresHome, smtp: SmtpSink) -> Iterator[Stack]:
    with running_stack(postgres_home, smtp) as running:
        yield running


def test_supervisord_runs_the_deployment_on_postgres(stack: Stack, smtp: SmtpSink) -> None:
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
    daemon_types = {
        d["daemonType"] for d in stack.graphql(DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
    }
    assert {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= daemon_types

    def all_running() -> bool:
        # supervisord calls a program RUNNING once it has stayed up for startsecs (5 s).
        status = stack.supervisorctl("status")
        return all("RUNNING" in status.split(program, 1)[1].splitlines()[0] for program in PROGRAMS)

    wait_until(all_running, 30, "supervisord to report every program RUNNING")

    # Two launches of one job and day through the webserver: both are queued (the webserver
    # never starts a run itself), the daemon starts them one after the other.
    today = datetime.now(UTC).date().isoformat()
    launched = [
        stack.graphql(LAUNCH_PARTITION, job="send_payment_reminders", partition=today)["launchRun"] for _ in range(2)
    ]
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
            events = instance.get_records_for_run(
                record.dagster_run.run_id, of_type=dg.DagsterEventType.PIPELINE_ENQUEUED
            )
            assert len(events.records) == 1  # through the run queue
        summaries = [
            record.asset_materialization.metadata
            for record in instance.fetch_materializations(dg.AssetKey("payment_reminders"), limit=10).records
        ]
        # The sensors run too (verify_employees may send on the demo data): count the reminders.
        # `sent` counts keys; a digest is one email carrying several.
        reminders = [
            key for mail in smtp.received for key in mail.notification_ids if key.startswith("payment_reminder:")
        ]
        assert sorted(summary["sent"].value for summary in summaries) == [0, len(reminders)]
    keys = [key for mail in smtp.received for key in mail.notification_ids]
    assert keys and len(keys) == len(set(keys))

    # A crashed daemon is restarted by supervisord, and beats again.
    old_pid = stack.pids()["daemon"]
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: stack.pids()["daemon"] not in (0, old_pid), 60, "the daemon to be restarted")

    # Stopped cleanly: supervisord exits 0 after stopping all three, nothing is left behind.
    pids = stack.pids()
    assert all(pids.values()), pids
    assert stack.stop() == 0
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), 10, "every program to exit")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{stack.url}/server_info", timeout=2)
