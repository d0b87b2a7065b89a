"""What every daily job shares: its partitions, its step retry policy, its schedule.

A job is daily-partitioned on the business day D (docs/services.md, "The business
rules") and scheduled at a local hour outside the 02:00–03:00 DST window. Each tick
requests that day's partition. After daemon downtime Dagster 1.13 runs only the latest
missed tick of a schedule, so each tick also requests the earlier days of a bounded
window (SCHEDULE_CATCHUP_DAYS) that have no successful or in-flight run; the ledger
makes a repeated day harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import dagster as dg

from cron_pipelines.deployment.executors import delivery_executor
from cron_pipelines.factory.sharding import SHARDS_TAG
from cron_pipelines.settings import Settings

if TYPE_CHECKING:  # the public API has no name for the type define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

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
    at: tuple[int, int],
    catchup_days: int,
) -> dg.ScheduleDefinition:
    hour, minute = at
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


@dataclass(frozen=True)
class DailyOptions:
    """What the settings decide for every daily job: partitions, step retries, catch-up."""

    partitions_def: dg.TimeWindowPartitionsDefinition
    retry_policy: dg.RetryPolicy
    catchup_days: int
    settings: Settings
    # Sharded notification jobs (factory/sharding.py): the default S, and where their steps run.
    delivery_shards: int = 1
    delivery_executor: dg.ExecutorDefinition = dg.in_process_executor

    @classmethod
    def from_settings(cls, settings: Settings) -> DailyOptions:
        return cls(
            # end_offset=1: today's partition exists, so today's run can be launched (and scheduled).
            partitions_def=dg.DailyPartitionsDefinition(
                start_date=settings.partitions_start_date.isoformat(), timezone=settings.cron_timezone, end_offset=1
            ),
            # Safe because every send goes through the ledger: a retried step re-claims,
            # gets `duplicate` for what it sent, and sends only what is still owed.
            retry_policy=dg.RetryPolicy(
                max_retries=settings.step_max_retries,
                delay=settings.step_retry_delay_seconds,
                backoff=dg.Backoff.EXPONENTIAL,
                jitter=dg.Jitter.PLUS_MINUS,
            ),
            catchup_days=settings.schedule_catchup_days,
            settings=settings,
            delivery_shards=settings.delivery_shards,
            delivery_executor=delivery_executor(settings) if settings.delivery_shards > 1 else dg.in_process_executor,
        )


def daily_job(
    name: str,
    assets: Sequence[dg.AssetsDefinition],
    *,
    at: tuple[int, int],
    description: str,
    options: DailyOptions,
    sensors: Sequence[dg.SensorDefinition] = (),
) -> dg.Definitions:
    """A job that materializes `assets` for one business day, with its daily schedule at local `at`.

    A notification asset the factory fanned out over shards (a graph of steps) gets the
    delivery executor, and the shard count as a tag a run may change.
    """
    fanned_out = any(isinstance(asset.node_def, dg.GraphDefinition) for asset in assets)
    # Otherwise one process per run: every job has one or two steps, and the multiprocess
    # executor would spend seconds starting a process per step.
    job = dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*(key for asset in assets for key in asset.keys)),
        executor_def=options.delivery_executor if fanned_out else dg.in_process_executor,
        tags={SHARDS_TAG: str(options.delivery_shards)} if fanned_out else None,
        description=description,
    )
    return dg.Definitions(
        assets=assets,
        jobs=[job],
        schedules=[build_daily_schedule(job, options.partitions_def, at, options.catchup_days)],
        sensors=sensors,
    )
