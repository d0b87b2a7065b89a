"""Stop means stop, a crash loses nothing silently: the production set-up as an operator drives it.

deploy/start.sh runs the code server, webserver and daemon under supervisord on PostgreSQL; the
stand-in services run in a process of their own; mail goes to a real SMTP server. Runs are
launched and terminated through the webserver's GraphQL API, as the UI does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cron_pipelines.deployment.run_launcher import worker_pid
from cron_pipelines_tests.demo_services.helpers import due, user
from cron_pipelines_tests.deploy.conftest import PostgresHome
from cron_pipelines_tests.deploy.stack import ServicesProcess, Stack, alive, running_stack
from cron_pipelines_tests.support.keys import TEST_JWT_SECRET
from cron_pipelines_tests.support.postgres import restart_postgres
from cron_pipelines_tests.support.smtp_sink import SmtpSink
from cron_pipelines_tests.support.webserver import JOB_NAMES, LAUNCH_PARTITION, wait_until
from demo_services.store import DemoStore

D = "2026-11-28"  # every due is due on 2026-12-01: a reminder 3 days ahead
COUNT = 2000
CONNECTIONS = 2
TERMINATE = """mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) { __typename ... on TerminateRunSuccess { run { runId } } ... on PythonError { message } }
}"""
ACTIVE = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink(latency=0.005) as sink:  # a remote provider's pace: a run lasts tens of seconds
        yield sink


@pytest.fixture
def services(tmp_path: Path) -> Iterator[ServicesProcess]:
    store = DemoStore(tmp_path / "services.sqlite3")
    store.add_users([user(f"usr_{n:04d}") for n in range(COUNT)])
    store.add_dues([due(f"due_{n:04d}", user_id=f"usr_{n:04d}", due_date="2026-12-01") for n in range(COUNT)])
    with ServicesProcess(store.path, TEST_JWT_SECRET) as process:
        yield process


@pytest.fixture
def stack(postgres_home: PostgresHome, smtp: SmtpSink, services: ServicesProcess) -> Iterator[Stack]:
    settings = {
        **services.environment(),
        "MAIL_MAX_CONNECTIONS": str(CONNECTIONS),
        "STEP_MAX_RETRIES": "3",
        "STEP_RETRY_DELAY_SECONDS": "3",
        "SERVICE_MAX_ATTEMPTS": "3",
        "SERVICE_READ_TIMEOUT_SECONDS": "5",
    }
    with running_stack(postgres_home, smtp, **settings) as running:
        wait_until(lambda: "send_payment_reminders" in json.dumps(running.graphql(JOB_NAMES)), 120, "the code location")
        yield running


def _launch(stack: Stack, job: str = "send_payment_reminders") -> str:
    answer = stack.graphql(LAUNCH_PARTITION, job=job, partition=D)["launchRun"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def _status(run_id: str) -> dg.DagsterRunStatus:
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        return run.status


def _wait_for_status(run_id: str, statuses: tuple[dg.DagsterRunStatus, ...], timeout: float) -> dg.DagsterRunStatus:
    return wait_until(
        lambda: (status := _status(run_id)) in statuses and status, timeout, f"run {run_id} in {statuses}"
    )


def _ledger(services: ServicesProcess) -> dict[str, dict]:
    return {record["idempotency_key"]: record for record in DemoStore(services.database).list_notifications()}


def _reminders(smtp: SmtpSink) -> list:
    return [mail for mail in smtp.received if mail.notification_id.startswith("payment_reminder:")]


def _interrupt_seen_at(run_id: str) -> float:
    with dg.DagsterInstance.get() as instance:
        (entry,) = [entry for entry in instance.all_logs(run_id) if entry.user_message.startswith("interrupted: ")]
        return entry.timestamp


def _assert_stopped_cleanly(run_id: str, smtp: SmtpSink, services: ServicesProcess) -> None:
    """CANCELED; no message handed over after the interrupt beyond one per session; every claim recorded."""
    assert (
        _wait_for_status(
            run_id, (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE), 60
        )
        == dg.DagsterRunStatus.CANCELED
    )
    seen = _interrupt_seen_at(run_id)
    after = [mail for mail in _reminders(smtp) if mail.received_at > seen]
    assert len(after) <= CONNECTIONS, len(after)
    ledger = _ledger(services)
    assert [key for key, record in ledger.items() if record["status"] == "claimed"] == []
    mailed = Counter(key for mail in _reminders(smtp) for key in mail.notification_ids)
    assert set(mailed.values()) == {1}
    assert {key for key, record in ledger.items() if record["status"] == "sent"} == set(mailed), [
        ledger.get(key) for key in set(mailed) if ledger.get(key, {}).get("status") != "sent"
    ]
    with dg.DagsterInstance.get() as instance:  # neither a step retry nor a run retry resumed it
        assert not [
            event
            for event in instance.all_logs(run_id)
            if event.dagster_event and event.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
        ]
        retries = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
        assert retries == []


def test_terminate_and_sigterm_stop_sending_at_once_and_a_rerun_sends_the_rest_once(
    stack: Stack, smtp: SmtpSink, services: ServicesProcess
) -> None:
    # Terminate in the UI.
    first = _launch(stack)
    wait_until(lambda: len(_reminders(smtp)) >= 100, 120, "100 reminders")
    answer = stack.graphql(TERMINATE, runId=first)["terminateRun"]
    assert answer["__typename"] == "TerminateRunSuccess", answer
    _assert_stopped_cleanly(first, smtp, services)
    sent_before = len(_reminders(smtp))
    assert sent_before < COUNT

    # SIGTERM to the run worker (a deploy, an operator's kill): the same.
    second = _launch(stack)
    wait_until(lambda: len(_reminders(smtp)) >= sent_before + 100, 120, "100 more reminders")
    with dg.DagsterInstance.get() as instance:
        found = worker_pid(instance, second)
    assert found is not None
    os.kill(found[0], signal.SIGTERM)
    _assert_stopped_cleanly(second, smtp, services)

    # A re-run sends the rest, each exactly once.
    third = _launch(stack)
    assert (
        _wait_for_status(third, (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE), 180)
        == dg.DagsterRunStatus.SUCCESS
    )
    mailed = Counter(key for mail in _reminders(smtp) for key in mail.notification_ids)
    assert len(mailed) == COUNT and set(mailed.values()) == {1}
    assert {record["status"] for record in _ledger(services).values()} == {"sent"}


def test_a_killed_run_worker_is_failed_at_once_and_its_bounded_window_is_settled(
    stack: Stack, smtp: SmtpSink, services: ServicesProcess
) -> None:
    first = _launch(stack)
    wait_until(lambda: len(_reminders(smtp)) >= 100, 120, "100 reminders")
    with dg.DagsterInstance.get() as instance:
        found = worker_pid(instance, first)
    assert found is not None
    os.kill(found[0], signal.SIGKILL)
    assert _wait_for_status(first, (dg.DagsterRunStatus.FAILURE,), 90) == dg.DagsterRunStatus.FAILURE

    stuck = {key: record for key, record in _ledger(services).items() if record["status"] == "claimed"}
    assert 0 < len(stuck) <= 100  # two batches of DELIVERY_BATCH_SIZE (50), by default
    assert {record["run_id"] for record in stuck.values()} == {first}

    # Run retries re-launch the day; the stuck claims wait for the operator, never resent by themselves.
    with dg.DagsterInstance.get() as instance:

        def retries_done() -> bool:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": D}))
            return len(runs) > 1 and all(run.status not in ACTIVE for run in runs)

        wait_until(retries_done, 240, "the run retry to finish")
    mailed = Counter(key for mail in _reminders(smtp) for key in mail.notification_ids)
    assert set(mailed.values()) == {1}

    # The operator looks the planned Message-IDs up in the mail log, then settles each key by what it found.
    delivered_ids = {mail.message["Message-ID"] for mail in _reminders(smtp)}
    delivered = [key for key, record in stuck.items() if record["metadata"]["planned_message_id"] in delivered_ids]
    undelivered = [key for key in stuck if key not in delivered]
    if delivered:
        assert (
            _cli(stack, "settle", *[arg for key in delivered for arg in ("--key", key)], "--as", "sent").returncode == 0
        )
    assert _cli(stack, "settle", "--run", first, "--as", "failed").returncode == 2  # it would resend delivered ones
    settled = _cli(stack, "settle", *[arg for key in undelivered for arg in ("--key", key)], "--as", "failed")
    assert settled.returncode == 0, settled.stdout + settled.stderr

    last = _launch(stack)
    assert (
        _wait_for_status(last, (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE), 180)
        == dg.DagsterRunStatus.SUCCESS
    )
    mailed = Counter(key for mail in _reminders(smtp) for key in mail.notification_ids)
    assert len(mailed) == COUNT and set(mailed.values()) == {1}
    assert {record["status"] for record in _ledger(services).values()} == {"sent"}


@pytest.fixture
def paced_stack(postgres_home: PostgresHome, smtp: SmtpSink, services: ServicesProcess) -> Iterator[Stack]:
    """The stack with the relay's pace set low: 0.5 messages a second."""
    settings = {**services.environment(), "MAIL_MAX_CONNECTIONS": str(CONNECTIONS), "MAIL_RATE_LIMIT_PER_SECOND": "0.5"}
    with running_stack(postgres_home, smtp, **settings) as running:
        wait_until(lambda: "send_payment_reminders" in json.dumps(running.graphql(JOB_NAMES)), 120, "the code location")
        yield running


def test_terminate_stops_a_run_waiting_on_the_rate_limit_within_two_seconds(
    paced_stack: Stack, smtp: SmtpSink, services: ServicesProcess
) -> None:
    run = _launch(paced_stack)
    wait_until(lambda: len(_reminders(smtp)) >= 2, 120, "the first paced reminders")
    answer = paced_stack.graphql(TERMINATE, runId=run)["terminateRun"]
    assert answer["__typename"] == "TerminateRunSuccess", answer
    asked = time.monotonic()
    assert _wait_for_status(run, (dg.DagsterRunStatus.CANCELED,), 30) == dg.DagsterRunStatus.CANCELED
    assert time.monotonic() - asked < 2.0
    _assert_stopped_cleanly(run, smtp, services)
    assert {record["status"] for record in _ledger(services).values()} <= {"sent", "released"}


def test_services_down_for_12_seconds_mid_run_lose_nothing(
    stack: Stack, smtp: SmtpSink, services: ServicesProcess
) -> None:
    run = _launch(stack)
    wait_until(lambda: len(_reminders(smtp)) >= 100, 120, "100 reminders")
    services.kill()
    time.sleep(12)
    services.start()

    status = _wait_for_status(run, (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE), 300)
    ledger = _ledger(services)
    assert [key for key, record in ledger.items() if record["status"] == "claimed"] == []
    assert status == dg.DagsterRunStatus.SUCCESS  # the step's retries recorded the journal, then finished
    mailed = Counter(key for mail in _reminders(smtp) for key in mail.notification_ids)
    assert len(mailed) == COUNT and set(mailed.values()) == {1}
    assert {record["status"] for record in ledger.values()} == {"sent"}


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cron_pipelines.cli", *args],
        env=stack.environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_code_server_restart_hands_the_run_off_and_terminate_still_stops_it(
    stack: Stack, smtp: SmtpSink, services: ServicesProcess
) -> None:
    # A run longer than the code server's stop timeout (30 s): the restart does not wait for it.
    smtp.latency = 0.015
    run = _launch(stack)
    wait_until(lambda: len(_reminders(smtp)) >= 50, 120, "50 reminders")
    with dg.DagsterInstance.get() as instance:
        found = worker_pid(instance, run)
    assert found is not None
    old_code_server = stack.pids()["code-server"]
    stack.supervisorctl("restart", "code-server")
    assert stack.pids()["code-server"] not in (0, old_code_server)

    # The worker lives on (its code server no longer stops it), and keeps sending.
    mailed_at_restart = len(_reminders(smtp))
    wait_until(lambda: len(_reminders(smtp)) >= mailed_at_restart + 50, 60, "sending to go on after the restart")
    assert alive(found[0]) and _status(run) == dg.DagsterRunStatus.STARTED

    # Terminate reaches it although the new code server never heard of it.
    answer = stack.graphql(TERMINATE, runId=run)["terminateRun"]
    assert answer["__typename"] == "TerminateRunSuccess", answer
    _assert_stopped_cleanly(run, smtp, services)
    with dg.DagsterInstance.get() as instance:
        messages = [entry.message for entry in instance.all_logs(run)]
    direct = f"Interrupted run worker pid {found[0]} directly: its code server no longer knows the run."
    assert any(message.endswith(direct) for message in messages)

    # The day goes on: the next job of that day runs, and a re-run sends the rest exactly once.
    smtp.latency = 0.0
    other = _launch(stack, "mark_overdue_dues")
    assert (
        _wait_for_status(other, (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE), 180)
        == dg.DagsterRunStatus.SUCCESS
    )
    rerun = _launch(stack)
    assert (
        _wait_for_status(rerun, (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE), 180)
        == dg.DagsterRunStatus.SUCCESS
    )
    mailed = Counter(key for mail in _reminders(smtp) for key in mail.notification_ids)
    assert len(mailed) == COUNT and set(mailed.values()) == {1}


def test_a_launch_right_after_a_postgres_restart_succeeds(stack: Stack, smtp: SmtpSink) -> None:
    first = _launch(stack, "maintenance")  # the webserver now holds pooled connections
    assert (
        _wait_for_status(first, (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE), 120)
        == dg.DagsterRunStatus.SUCCESS
    )
    restart_postgres()
    answers = [stack.graphql(LAUNCH_PARTITION, job="maintenance", partition=D)["launchRun"] for _ in range(3)]
    assert [answer["__typename"] for answer in answers] == ["LaunchRunSuccess"] * 3, answers
    for answer in answers:
        run_id = answer["run"]["runId"]
        assert (
            _wait_for_status(run_id, (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE), 180)
            == dg.DagsterRunStatus.SUCCESS
        )
