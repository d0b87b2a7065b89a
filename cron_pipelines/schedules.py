"""One daily schedule per job, at a local hour outside the 02:00–03:00 DST window.

Each tick requests that day's partition. After daemon downtime Dagster 1.13 runs
only the latest missed tick of a schedule, so each tick also requests the earlier
days of a bounded window (SCHEDULE_CATCHUP_DAYS) that have no successful or
in-flight run; the ledger makes a repeated day harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import dagster as dg

if TYPE_CHECKING:  # the public API has no name for the type define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# Local (hour, minute) of each job's daily run.
SCHEDULE_TIMES: dict[str, tuple[int, int]] = {
    "maintenance": (4, 30),
    "mark_overdue_dues": (6, 0),
    "verify_employees": (8, 0),
    "send_payment_reminders": (9, 0),
    "notify_inactive_users": (10, 0),
    "deactivate_inactive_users": (11, 0),
}
# Scheduled and sensor runs leave the run queue before backfill runs (priority 0).
SCHEDULED_RUN_PRIORITY = "5"
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def days_to_request(today: date, first_day: date, catchup_days: int, is_settled: Callable[[date], bool]) -> list[date]:
    """Today, plus each earlier day of the window that is not settled, oldest first."""
    window = [today - timedelta(days=offset) for offset in range(catchup_days - 1, 0, -1)]
    return [day for day in window if day >= first_day and not is_settled(day)] + [today]


def run_key(job_name: str, day: date) -> str:
    return f"{job_name}:{day.isoformat()}"


def build_daily_schedule(
    job: UnresolvedAssetJobDefinition,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    catchup_days: int,
) -> dg.ScheduleDefinition:
    hour, minute = SCHEDULE_TIMES[job.name]
    timezone = partitions_def.timezone

    @dg.schedule(
        name=f"{job.name}_daily",
        cron_schedule=f"{minute} {hour} * * *",
        execution_timezone=timezone,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{job.name} for the day, at {hour:02d}:{minute:02d} {timezone}; catches up {catchup_days - 1} missed day(s).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
        today = context.scheduled_execution_time.astimezone(ZoneInfo(timezone)).date()

        def is_settled(day: date) -> bool:
            try:
                instance = context.instance
            except dg.DagsterInvariantViolationError:  # evaluated without an instance: no history to check
                return True
            records = instance.get_run_records(
                dg.RunsFilter(
                    job_name=job.name, tags={"dagster/partition": day.isoformat()}, statuses=ACTIVE_RUN_STATUSES
                ),
                limit=1,
            )
            return bool(records)

        first_day = partitions_def.start.date()
        for day in days_to_request(today, first_day, catchup_days, is_settled):
            yield dg.RunRequest(
                run_key=run_key(job.name, day),
                partition_key=day.isoformat(),
                tags={"dagster/priority": SCHEDULED_RUN_PRIORITY, "cron_pipelines/trigger": "schedule"},
            )

    return _schedule


def build_schedules(
    jobs: dict[str, UnresolvedAssetJobDefinition],
    partitions_def: dg.TimeWindowPartitionsDefinition,
    catchup_days: int,
) -> list[dg.ScheduleDefinition]:
    return [build_daily_schedule(jobs[name], partitions_def, catchup_days) for name in SCHEDULE_TIMES]
