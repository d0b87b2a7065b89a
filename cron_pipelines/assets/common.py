"""What every business asset shares: its business day, its delivery pipeline, its metadata and checks."""

from __future__ import annotations

import functools
import inspect
import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import BaseModel, Field

from cron_pipelines.clients.errors import ServiceAuthError, ServiceProtocolError, ServiceRequestError
from cron_pipelines.clients.http import RejectedRecord
from cron_pipelines.notifications.messages import NotificationKind
from cron_pipelines.notifications.pipeline import Gate, NotificationPipeline, RunInfo
from cron_pipelines.notifications.transports import MailTransport
from cron_pipelines.resources import MailerResource, MetricsResource, MongoServiceResource
from cron_pipelines.rules.calendar import BusinessDay
from cron_pipelines.rules.confirmations import confirmation_from_record

DELIVERY_CHECK = "delivery_within_thresholds"


@dataclass(frozen=True)
class AssetFactoryOptions:
    """What the factories need from the settings: the partitions and the step retry policy."""

    partitions_def: dg.TimeWindowPartitionsDefinition
    retry_policy: dg.RetryPolicy


class DeliveryThresholds(BaseModel):
    """When the delivery check of a notification asset fails."""

    max_failed: int = Field(0, ge=0, description="The check fails when more notifications than this failed.")
    max_skipped_ratio: float = Field(
        0.05, ge=0, le=1, description="The check warns when more than this share of claimed notifications was skipped."
    )


PERMANENT_ERRORS = (ServiceAuthError, ServiceRequestError, ServiceProtocolError)


@contextmanager
def _permanent_errors_fail_at_once() -> Iterator[None]:
    try:
        yield
    except PERMANENT_ERRORS as exc:
        # A refused token or request fails the same way on every retry: fail now, clearly.
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def no_retry_on_permanent_errors(fn: Callable) -> Callable:
    """Asset bodies: the step RetryPolicy applies to transient failures only."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            with _permanent_errors_fail_at_once():
                yield from fn(*args, **kwargs)

        return generator

    @functools.wraps(fn)
    def function(*args, **kwargs):
        with _permanent_errors_fail_at_once():
            return fn(*args, **kwargs)

    return function


def business_day(context: dg.AssetExecutionContext) -> BusinessDay:
    partitions_def = context.assets_def.partitions_def
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    return BusinessDay.from_partition_key(context.partition_key, partitions_def.timezone)


def run_info(context: dg.AssetExecutionContext) -> RunInfo:
    return RunInfo(run_id=context.run.run_id, job_name=context.job_name, partition_key=context.partition_key)


@contextmanager
def mail_transport(mailer: MailerResource) -> Iterator[MailTransport]:
    transport = mailer.open_transport()
    try:
        yield transport
    finally:
        transport.close()


def new_pipeline(
    context: dg.AssetExecutionContext,
    mongo_service: MongoServiceResource,
    mailer: MailerResource,
    transport: MailTransport,
    metrics: MetricsResource,
) -> NotificationPipeline:
    pipeline = NotificationPipeline(
        ledger=mongo_service.client,
        composer=mailer.composer,
        transport=transport,
        run=run_info(context),
        log=context.log,
    )
    metrics.track(pipeline.stats)
    return pipeline


# Failed confirmations taken up per run. They are few (sends that failed after their
# write); the bound keeps memory flat after a long mail outage, and the next run goes on.
FAILED_CONFIRMATIONS_PER_RUN = 5_000


def resend_failed_confirmations(
    pipeline: NotificationPipeline, mongo_service: MongoServiceResource, kind: NotificationKind, gate: Gate
) -> int:
    """Claim, write again and send the confirmations of `kind` recorded `failed`; how many.

    Their subjects have left the service's lists once the write is done, so the ledger is
    where they are found. The gate repeats the write (idempotent): its `already` answer on
    a retried claim sends the email. Collected before delivering, because claiming changes
    the status the listing filters on.
    """
    failed = []
    records = mongo_service.client.iter_notifications(kind=kind, status="failed")
    for record in itertools.islice(records, FAILED_CONFIRMATIONS_PER_RUN):
        if isinstance(record, RejectedRecord):
            pipeline.stats.count_rejected(record)
        else:
            failed.append(confirmation_from_record(record))
    pipeline.deliver(failed, gate=gate)
    return len(failed)


class Stopwatch:
    def __init__(self) -> None:
        self._started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self._started, 3)


def summary_metadata(day: BusinessDay, stopwatch: Stopwatch, **extra: Any) -> dict[str, Any]:
    return {
        "business_date": day.day.isoformat(),
        "timezone": str(day.timezone),
        "duration_seconds": stopwatch.seconds,
        **extra,
    }


def delivery_check_spec(asset_key: dg.AssetKey | str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        DELIVERY_CHECK,
        asset=asset_key,
        description="Fails when notifications failed; warns when too many were skipped (bad recipients, malformed records).",
    )


def delivery_check_result(
    asset_key: dg.AssetKey | str, counts: Mapping[str, int], thresholds: DeliveryThresholds
) -> dg.AssetCheckResult:
    failed, skipped, claimed = counts.get("failed", 0), counts.get("skipped", 0), counts.get("claimed", 0)
    rejected = counts.get("rejected", 0)
    skipped_ratio = (skipped + rejected) / max(claimed + rejected, 1)
    too_many_failed = failed > thresholds.max_failed
    too_many_skipped = skipped_ratio > thresholds.max_skipped_ratio
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey.from_coercible(asset_key),
        check_name=DELIVERY_CHECK,
        passed=not (too_many_failed or too_many_skipped),
        severity=dg.AssetCheckSeverity.ERROR if too_many_failed else dg.AssetCheckSeverity.WARN,
        metadata={
            "failed": failed,
            "skipped": skipped,
            "rejected_records": rejected,
            "skipped_ratio": round(skipped_ratio, 4),
            "max_failed": thresholds.max_failed,
            "max_skipped_ratio": thresholds.max_skipped_ratio,
        },
    )
