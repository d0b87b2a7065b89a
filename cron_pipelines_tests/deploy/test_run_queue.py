"""The run queue of deploy/dagster.yaml, decided by Dagster's own queue daemon on PostgreSQL.

Runs of the real code location are submitted through the instance's QueuedRunCoordinator and
dequeued by QueuedRunCoordinatorDaemon iterations, as dagster-daemon does. Only the launcher is
Dagster's recording test launcher, so the test decides when a run finishes and steps the daemon
one iteration at a time (as Dagster's own tests of tag concurrency limits do). The whole stack,
with real runs, is tested in test_processes.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.test_utils import create_run_for_test, create_test_daemon_workspace_context
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from cron_pipelines_tests.deploy.conftest import PROJECT, PostgresHome

RECORDING_LAUNCHER = """
# Added by the test: record launches instead of starting processes.
run_launcher:
  module: dagster._core.test_utils
  class: MockedRunLauncher
"""

DAY = date(2026, 11, 28)


class Queue:
    """The production instance's queue with a daemon to step through."""

    def __init__(self, instance: dg.DagsterInstance, context: WorkspaceProcessContext) -> None:
        self.instance = instance
        self.context = context
        self.daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        config = instance.get_concurrency_config().run_queue_config
        assert config is not None
        self.max_concurrent_runs = config.max_concurrent_runs
        self.limits = {limit["key"]: limit for limit in config.tag_concurrency_limits}

    def submit(self, job: str, day: date, **tags: str) -> str:
        workspace = self.context.create_request_context()
        remote_job = workspace.get_code_location("cron_pipelines").get_repository("__repository__").get_full_job(job)
        run = create_run_for_test(
            self.instance,
            job_name=job,
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={"dagster/partition": day.isoformat(), **tags},
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
        )
        submitted = self.instance.submit_run(run.run_id, workspace)
        assert submitted.status == dg.DagsterRunStatus.QUEUED
        return run.run_id

    def dequeue(self) -> set[str]:
        """One iteration of the daemon; the runs it started."""
        before = self.started()
        list(self.daemon.run_iteration(self.context))
        return self.started() - before

    def started(self) -> set[str]:
        return {run.run_id for run in self.instance.run_launcher.queue()}  # type: ignore[attr-defined]

    def queued(self) -> set[str]:
        return {run.run_id for run in self.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))}

    def finish(self, run_id: str) -> None:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.STARTING
        self.instance.report_dagster_event(
            DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name), run_id=run_id
        )


@pytest.fixture
def queue(postgres_home: PostgresHome) -> Iterator[Queue]:
    config = postgres_home.path / "dagster.yaml"
    assert config.read_text() == (PROJECT / "deploy" / "dagster.yaml").read_text()
    config.write_text(config.read_text() + RECORDING_LAUNCHER)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        code_location = ModuleTarget(
            module_name="cron_pipelines.definitions",
            attribute="defs",
            working_directory=None,
            location_name="cron_pipelines",
        )
        with create_test_daemon_workspace_context(code_location, instance) as context:
            yield Queue(instance, context)


def test_one_run_per_partition_at_a_time(queue: Queue) -> None:
    first = queue.submit("send_payment_reminders", DAY)
    second = queue.submit("send_payment_reminders", DAY)  # the same job and day again
    maintenance = queue.submit("maintenance", DAY)  # another job, the same day
    yesterday = queue.submit("send_payment_reminders", DAY - timedelta(days=1))

    assert queue.dequeue() == {first, yesterday}
    assert queue.dequeue() == set()  # nothing finished: the day stays blocked
    assert queue.queued() == {second, maintenance}

    queue.finish(first)
    assert queue.dequeue() == {second}  # first in, first out
    queue.finish(second)
    assert queue.dequeue() == {maintenance}
    assert queue.queued() == set()


def test_backfills_leave_room_for_scheduled_runs_and_the_total_is_capped(queue: Queue) -> None:
    backfill_limit = queue.limits["dagster/backfill"]["limit"]
    assert backfill_limit < queue.max_concurrent_runs
    backfill = [
        queue.submit("send_payment_reminders", DAY - timedelta(days=30 + offset), **{"dagster/backfill": "bf1"})
        for offset in range(backfill_limit + 2)
    ]
    # Submitted after the backfill, but with the schedules' priority.
    scheduled = [
        queue.submit(job, DAY - timedelta(days=offset), **{"dagster/priority": "5"})
        for offset, job in enumerate(["maintenance", "mark_overdue_dues", "verify_employees"])
    ]

    started = queue.dequeue()
    assert set(scheduled) <= started
    assert started & set(backfill) == set(backfill[:backfill_limit])  # the oldest, up to the limit
    assert len(started) == backfill_limit + len(scheduled) < queue.max_concurrent_runs
    assert queue.dequeue() == set()  # a slot is free, but not for another backfill run

    # Manual runs take the free slots, up to the cap.
    free = queue.max_concurrent_runs - len(started)
    manual = [queue.submit("notify_inactive_users", DAY - timedelta(days=10 + offset)) for offset in range(free + 2)]
    assert queue.dequeue() == set(manual[:free])
    assert len(queue.started()) == queue.max_concurrent_runs
    assert queue.dequeue() == set()

    # A finished backfill run frees a slot under both limits: the oldest run in line takes it.
    queue.finish(backfill[0])
    assert queue.dequeue() == {backfill[backfill_limit]}
    queue.finish(scheduled[0])
    assert queue.dequeue() == {manual[free]}  # the backfill is at its limit again
