"""Builds the code location's Definitions from validated settings.

A factory rather than module-level objects because the time zone of every
partition and schedule, and every resource, come from the environment: tests build
the same definitions from their own settings.
"""

from __future__ import annotations

import dagster as dg

from cron_pipelines.assets.common import AssetFactoryOptions
from cron_pipelines.assets.external import external_assets
from cron_pipelines.assets.inactivity import build_inactivity_assets
from cron_pipelines.assets.ledger import build_ledger_assets
from cron_pipelines.assets.payments import build_payment_assets
from cron_pipelines.assets.verifications import build_verification_assets
from cron_pipelines.jobs import build_jobs
from cron_pipelines.resources import build_resources
from cron_pipelines.schedules import build_schedules
from cron_pipelines.rules.ledger import StaleClaimPolicy
from cron_pipelines.sensors import (
    build_run_failure_alert_sensor,
    build_stuck_claims_sensor,
    build_verification_attempts_sensor,
)
from cron_pipelines.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    # end_offset=1: today's partition exists, so today's run can be launched (and scheduled).
    return dg.DailyPartitionsDefinition(
        start_date=settings.partitions_start_date.isoformat(),
        timezone=settings.cron_timezone,
        end_offset=1,
    )


def step_retry_policy(settings: Settings) -> dg.RetryPolicy:
    # Safe because every send goes through the ledger: a retried step re-claims,
    # gets `duplicate` for what it sent, and sends only what is still owed.
    return dg.RetryPolicy(
        max_retries=settings.step_max_retries,
        delay=settings.step_retry_delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions_def = daily_partitions(settings)
    options = AssetFactoryOptions(partitions_def=partitions_def, retry_policy=step_retry_policy(settings))
    jobs = build_jobs()
    return dg.Definitions(
        assets=[
            *external_assets,
            *build_payment_assets(options),
            *build_inactivity_assets(options),
            *build_verification_assets(options),
            *build_ledger_assets(options),
        ],
        jobs=list(jobs.values()),
        schedules=build_schedules(jobs, partitions_def, settings.schedule_catchup_days),
        sensors=[
            build_verification_attempts_sensor(
                jobs["verify_employees"], settings.cron_timezone, settings.verification_sensor_lookback_hours
            ),
            build_run_failure_alert_sensor(settings.ops_alert_email, settings.dagster_webserver_url),
            build_stuck_claims_sensor(settings.ops_alert_email, settings.dagster_webserver_url, StaleClaimPolicy()),
        ],
        resources=build_resources(settings),
    )
