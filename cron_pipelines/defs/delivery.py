"""What every business asset shares: its business day, its delivery step, its metadata and checks."""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import BaseModel, Field

from cron_pipelines.clients.errors import (
    ServiceAuthError,
    ServiceBudgetExhausted,
    ServiceError,
    ServiceProtocolError,
    ServiceRequestError,
)
from cron_pipelines.clients.http import ServiceBudget
from cron_pipelines.delivery.channels.base import ChannelUnavailable, Transport
from cron_pipelines.delivery.ledger.journal import Journal
from cron_pipelines.delivery.ledger.session import RunInfo
from cron_pipelines.delivery.pipeline import Gate, NotificationPipeline
from cron_pipelines.delivery.stats import SAMPLE_EMAIL
from cron_pipelines.factory.sharding import Shard
from cron_pipelines.models.notification import NotificationKind
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines.resources import MailerResource, MetricsResource, MongoServiceResource, ServiceResource
from cron_pipelines.rules.calendar import BusinessDay
from cron_pipelines.rules.confirmations import confirmation_from_record

DELIVERY_CHECK = "delivery_within_thresholds"


class DeliveryThresholds(BaseModel):
    """When the delivery check of a notification asset fails."""

    max_failed: int = Field(0, ge=0, description="The check fails when more notifications than this failed.")
    max_skipped_ratio: float = Field(
        0.05, ge=0, le=1, description="The check warns when more than this share of claimed notifications was skipped."
    )


PERMANENT_ERRORS = (ServiceAuthError, ServiceRequestError, ServiceProtocolError, ServiceBudgetExhausted)
# What an attempt of a step that failed on a service leaves for its retry: the time it lost.
SERVICE_TIME_LOST = "service_seconds_lost"


@contextmanager
def _guarded(context: Any, services: Sequence[ServiceResource]) -> Iterator[None]:
    """One budget for the step's calls to every service, carried over to the step's retries.

    Permanent errors (a refused token or request, a protocol violation, the budget spent, a
    mail server refusing our login or sender) fail the same way on every retry: they fail
    the step now, clearly, without retries.
    """
    op_context = context.op_execution_context if isinstance(context, dg.AssetExecutionContext) else context
    budget = None
    if services:
        lost_before = _service_time_lost_before(op_context) if op_context.retry_number else 0.0
        budget = ServiceBudget(services[0].step_deadline_seconds, spent=lost_before)
        for service in services:
            service.client.budget = budget
    try:
        yield
    except PERMANENT_ERRORS as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except ChannelUnavailable as exc:
        if exc.permanent:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        raise
    except ServiceError:
        if budget is not None:
            op_context.log_event(
                dg.AssetObservation(
                    asset_key=_first_asset(op_context),
                    partition=op_context.partition_key if op_context.has_partition_key else None,
                    description="Time this step lost to failing service calls; its retry has the rest of the budget.",
                    metadata={SERVICE_TIME_LOST: round(budget.spent, 3)},
                )
            )
        raise


def _first_asset(context: dg.OpExecutionContext) -> dg.AssetKey:
    keys: list[dg.AssetKey] = sorted(context.assets_def.keys, key=lambda key: key.to_user_string())
    return keys[0]


def _service_time_lost_before(context: dg.OpExecutionContext) -> float:
    """What the earlier attempts of this step lost to failing service calls (their latest report)."""
    step_key = context.get_step_execution_context().step.key
    records = context.instance.get_records_for_run(
        context.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION, ascending=False
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key != step_key:
            continue
        entry = event.asset_observation_data.asset_observation.metadata.get(SERVICE_TIME_LOST)
        if entry is not None and isinstance(entry.value, float | int):
            return float(entry.value)
    return 0.0


def guarded_step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An asset or op body whose service calls share one budget (SERVICE_STEP_DEADLINE_SECONDS) and whose
    permanent errors fail at once: the step's RetryPolicy applies to transient failures only."""

    def services_of(kwargs: Mapping[str, Any]) -> list[ServiceResource]:
        return [value for value in kwargs.values() if isinstance(value, ServiceResource)]

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(context: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with _guarded(context, services_of(kwargs)):
                yield from fn(context, *args, **kwargs)

        return generator

    @functools.wraps(fn)
    def function(context: Any, *args: Any, **kwargs: Any) -> Any:
        with _guarded(context, services_of(kwargs)):
            return fn(context, *args, **kwargs)

    return function


def business_day_of(context: dg.AssetExecutionContext) -> BusinessDay:
    partitions_def = context.assets_def.partitions_def
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    return BusinessDay.from_partition_key(context.partition_key, partitions_def.timezone)


def run_info(context: dg.AssetExecutionContext) -> RunInfo:
    return RunInfo(run_id=context.run.run_id, job_name=context.job_name, partition_key=context.partition_key)


JOURNAL_METADATA_KEY = "delivery_journal"
# Which shard's journal it is: each shard's step settles its own (notifications/sharding.py).
JOURNAL_SHARD_KEY = "delivery_shard"
INTERRUPTIONS = (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)


class DeliveryStep:
    """The notification pipelines of one step, sharing a mail transport and one journal.

    The journal is what an attempt owes the ledger and could not record (the ledger was
    down): outcomes, and claims sent without an answer. It lives in the run's event log,
    as an observation of the step's asset, so the step's next attempt (in any process)
    records it first and owns those claims. The latest journal of a step is the whole
    debt: an attempt that settles it writes an empty one.
    """

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        mongo_service: MongoServiceResource,
        mailer: MailerResource,
        metrics: MetricsResource,
        transport: Transport,
        inherited: Journal,
        shard: Shard,
    ) -> None:
        self.shard = shard
        self._context = context
        self._mongo_service = mongo_service
        self._mailer = mailer
        self._metrics = metrics
        self._transport = transport
        self._inherited = inherited
        self._inherited_tokens = dict(inherited.unanswered_claims)
        self._pipelines: list[NotificationPipeline] = []
        self._stop_requested = False

    def request_stop(self) -> None:
        """The run is being terminated: every pipeline of the step stops sending now (any thread)."""
        self._transport.stop()
        for pipeline in list(self._pipelines):
            pipeline.request_stop()
        self._stop_requested = True

    def pipeline(self) -> NotificationPipeline:
        pipeline = NotificationPipeline(
            ledger=self._mongo_service.client,
            channel=self._mailer.composer,
            transport=self._transport,
            run=run_info(self._context),
            log=self._context.log,
            batch_size=self._mailer.delivery_batch_size,
            max_attempts=self._mailer.max_attempts,
            inherited_tokens=self._inherited_tokens,
        )
        self._metrics.track(pipeline.stats)
        self._pipelines.append(pipeline)
        if self._stop_requested:
            pipeline.request_stop()
        return pipeline

    def settle_inherited(self) -> None:
        """Record the outcomes an earlier attempt could not (raises if the ledger still cannot)."""
        if self._inherited.outcomes:
            self._context.log.warning(
                "recording %d outcome(s) an earlier attempt could not", len(self._inherited.outcomes)
            )
            self.pipeline().session.record_journaled(self._inherited.outcomes)

    def release_inherited(self) -> None:
        if self._inherited_tokens:
            (self._pipelines[0] if self._pipelines else self.pipeline()).session.release_inherited()

    @property
    def left_claimed(self) -> int:
        """Notifications this step claimed whose outcome the ledger does not have."""
        return len(self.journal())

    @property
    def sent(self) -> int:
        return sum(pipeline.stats.counts["sent"] for pipeline in self._pipelines)

    def journal(self) -> Journal:
        """Everything this step still owes the ledger."""
        owed = Journal(unanswered_claims=dict(self._inherited_tokens))
        for pipeline in self._pipelines:
            owed.outcomes.extend(pipeline.journal.outcomes)
            owed.unanswered_claims.update(pipeline.journal.unanswered_claims)
        return owed


def _journal_asset(context: dg.AssetExecutionContext) -> dg.AssetKey:
    keys: list[dg.AssetKey] = sorted(context.assets_def.keys, key=lambda key: key.to_user_string())
    return keys[0]


def step_shard(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> Shard:
    """The shard this step delivers: the whole day, unless it is one step of a fanned-out delivery."""
    op_context = context.op_execution_context if isinstance(context, dg.AssetExecutionContext) else context
    return Shard.from_mapping_key(op_context.get_mapping_key())


def latest_journal(
    instance: dg.DagsterInstance, run_id: str, asset_key: dg.AssetKey, shard: Shard = Shard()
) -> Journal | None:
    """The latest delivery journal the step of this run delivering `shard` of `asset_key` wrote, if any."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION, ascending=False
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        observation = event.asset_observation_data.asset_observation if event is not None else None
        if observation is not None and observation.asset_key == asset_key:
            written_by = observation.metadata.get(JOURNAL_SHARD_KEY)
            if (written_by.value if written_by is not None else Shard().mapping_key) != shard.mapping_key:
                continue
            entry = observation.metadata.get(JOURNAL_METADATA_KEY)
            if isinstance(entry, dg.JsonMetadataValue) and isinstance(entry.data, Mapping):
                return Journal.from_json(entry.data)
    return None


def _write_journal(context: dg.AssetExecutionContext, journal: Journal, shard: Shard) -> None:
    context.log_event(
        dg.AssetObservation(
            asset_key=_journal_asset(context),
            partition=context.partition_key,
            description="Deliveries the ledger has not recorded yet; the step's next attempt records them first.",
            metadata={
                JOURNAL_METADATA_KEY: dg.MetadataValue.json(journal.to_json()),
                "unrecorded_outcomes": len(journal.outcomes),
                "unanswered_claims": len(journal.unanswered_claims),
                **({} if shard.is_whole else {JOURNAL_SHARD_KEY: shard.mapping_key}),
            },
        )
    )


# How often a shard's step looks whether its run is being terminated.
RUN_STATUS_POLL_SECONDS = 1.0
STOPPING_STATUSES = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


@contextmanager
def _stopped_with_the_run(context: dg.AssetExecutionContext, step: DeliveryStep) -> Iterator[None]:
    """Stop the step's sending when its run is terminated, even if no signal reaches this process.

    A shard's step may run on a Celery worker: Terminate revokes the run's queued tasks, but
    a step already running gets no signal. It watches the run's status instead.
    """
    done = threading.Event()
    instance, run_id = context.instance, context.run.run_id

    def watch() -> None:
        while not done.wait(RUN_STATUS_POLL_SECONDS):
            try:
                run = instance.get_run_by_id(run_id)
            except Exception:  # the instance's database hiccups: the next poll asks again
                continue
            if run is not None and run.status in STOPPING_STATUSES:
                context.log.warning("the run is being terminated: this shard stops sending now")
                step.request_stop()
                return

    watcher = threading.Thread(target=watch, name="run-status-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _stopped(context: dg.AssetExecutionContext, journal: Journal, sent_before_stop: int) -> dg.Failure:
    """The failure that ends a step after Terminate, SIGTERM or SIGINT: no retry, and the run ends CANCELED."""
    run = context.instance.get_run_by_id(context.run.run_id)
    if run is not None and run.status == dg.DagsterRunStatus.STARTED:
        # A signal from outside the UI (a deploy, an operator's kill): treated as Terminate,
        # so that neither the step's retry policy nor run retries resume the mailing.
        context.instance.report_run_canceling(run, message="Stopping: the run worker received an interrupt.")
    unrecorded = len(journal.outcomes) + len(journal.unanswered_claims)
    return dg.Failure(
        description=(
            f"Stopped: no message was handed to the mail server after the interrupt. {sent_before_stop} sent "
            "before it; every notification claimed and not sent was recorded `failed` for a later run"
            + (f", except {unrecorded} the ledger could not take now (in the run's journal)" if unrecorded else "")
            + "."
        ),
        allow_retries=False,
        metadata={"sent": sent_before_stop, "left_claimed": unrecorded},
    )


@contextmanager
def delivery_step(
    context: dg.AssetExecutionContext,
    mongo_service: MongoServiceResource,
    mailer: MailerResource,
    metrics: MetricsResource,
) -> Iterator[DeliveryStep]:
    """A step that sends notifications: settles an earlier attempt's journal first, and ends cleanly.

    If it fails, whatever the ledger could not record is journaled for the next attempt.
    If it is interrupted (Terminate, SIGTERM, SIGINT; for a shard's step, also its run's
    status turning CANCELING), the pipelines have stopped sending
    and recorded every claim; the step then fails without retries and the run is canceled.
    """
    shard = step_shard(context)
    if not shard.is_whole:
        metrics.label_shard(shard.mapping_key)
    inherited = latest_journal(context.instance, context.run.run_id, _journal_asset(context), shard) or Journal()
    transport = mailer.open_transport(
        connections=shard.connections(mailer.max_connections), rate=shard.rate(mailer.rate_limit_per_second)
    )
    step = DeliveryStep(context, mongo_service, mailer, metrics, transport, inherited, shard)
    try:
        with contextlib.nullcontext() if shard.is_whole else _stopped_with_the_run(context, step):
            step.settle_inherited()
            yield step
            step.release_inherited()
    except BaseException as exc:
        journal = step.journal()
        if journal or inherited:
            _write_journal(context, journal, shard)
        if isinstance(exc, INTERRUPTIONS):
            raise _stopped(context, journal, step.sent) from None
        raise
    else:
        if inherited:
            _write_journal(context, Journal(), shard)  # settled: a later attempt must not replay it
    finally:
        transport.close()


# Failed confirmations taken up per run. They are few (sends that failed after their
# write); the bound keeps memory flat after a long mail outage, and the next run goes on.
FAILED_CONFIRMATIONS_PER_RUN = 5_000


def resend_failed_confirmations(
    pipeline: NotificationPipeline, mongo_service: MongoServiceResource, kind: NotificationKind, gate: Gate
) -> int:
    """Claim, write again and send the confirmations of `kind` recorded `failed` or `released`; how many.

    Their subjects have left the service's lists once the write is done, so the ledger is
    where they are found. The gate repeats the write (idempotent): its `already` answer on
    a retried claim sends the email. Collected before delivering, because claiming changes
    the status the listing filters on.
    """
    failed = []
    records = mongo_service.client.iter_retryable(kind=kind)
    for record in itertools.islice(records, FAILED_CONFIRMATIONS_PER_RUN):
        if isinstance(record, InvalidRecord):
            pipeline.stats.count_invalid(record)
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


def prefixed(prefix: str, counts: Mapping[str, int], names: Iterable[str]) -> dict[str, int]:
    """Counts under one prefix (`write.marked`, `decision.expired`), every name present, zero or not."""
    return {f"{prefix}.{name}": counts.get(name, 0) for name in names}


def summary_metadata(business_day: BusinessDay, stopwatch: Stopwatch, **extra: Any) -> dict[str, Any]:
    return {
        "business_date": business_day.day.isoformat(),
        "timezone": str(business_day.timezone),
        "duration_seconds": stopwatch.seconds,
        # The UI renders it as Markdown: what a recipient of this run read.
        **{name: dg.MetadataValue.md(value) if name == SAMPLE_EMAIL else value for name, value in extra.items()},
    }


def delivery_check_spec(asset_key: dg.AssetKey | str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        DELIVERY_CHECK,
        asset=asset_key,
        description=(
            "Fails when notifications failed or were left claimed without an outcome; "
            "warns when too many were skipped (bad recipients, malformed records)."
        ),
    )


def delivery_check_result(
    asset_key: dg.AssetKey | str, counts: Mapping[str, Any], thresholds: DeliveryThresholds
) -> dg.AssetCheckResult:
    """The check of a delivery from its counts (a pipeline's `metadata()`, or the sum over shards)."""
    failed, skipped, claimed = counts.get("failed", 0), counts.get("skipped", 0), counts.get("claimed", 0)
    invalid, left_claimed = counts.get("invalid", 0), counts.get("left_claimed", 0)
    # A user's own opt-out is not a delivery problem.
    skipped_ratio = (skipped - counts.get("opted_out", 0) + invalid) / max(claimed + invalid, 1)
    # Claimed with no outcome recorded: each is an email nobody knows the fate of.
    too_many_failed = failed > thresholds.max_failed or left_claimed > 0
    too_many_skipped = skipped_ratio > thresholds.max_skipped_ratio
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey.from_coercible(asset_key),
        check_name=DELIVERY_CHECK,
        passed=not (too_many_failed or too_many_skipped),
        severity=dg.AssetCheckSeverity.ERROR if too_many_failed else dg.AssetCheckSeverity.WARN,
        metadata={
            "failed": failed,
            "left_claimed": left_claimed,
            "skipped": skipped,
            "opted_out": counts.get("opted_out", 0),
            "invalid": invalid,
            "skipped_ratio": round(skipped_ratio, 4),
            "max_failed": thresholds.max_failed,
            "max_skipped_ratio": thresholds.max_skipped_ratio,
        },
    )
