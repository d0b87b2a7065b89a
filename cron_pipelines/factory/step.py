"""A step that sends notifications: its pipelines, their transports and journal, and how it ends.

Before anything else the step records what an earlier attempt of it could not (its journal,
in the run's event log); if it fails, it journals what the ledger could not take for the
next attempt; if it is interrupted (Terminate, SIGTERM, SIGINT, or, for a shard's step, its
run turning CANCELING), its pipelines stop sending at once and record every claim, and the
step fails without retries so that the run ends CANCELED.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

import dagster as dg

from cron_pipelines.delivery.channels.base import Channel, Transport
from cron_pipelines.delivery.ledger.journal import Journal, latest_journal, write_journal
from cron_pipelines.delivery.pipeline import NotificationPipeline
from cron_pipelines.factory.sharding import Shard
from cron_pipelines.factory.summary import run_info
from cron_pipelines.resources import DeliveryResource, MetricsResource, MongoServiceResource

INTERRUPTIONS = (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)
StepContext = dg.AssetExecutionContext | dg.OpExecutionContext


class ChannelResource(Protocol):
    """A channel's resource (`mailer`, `ops_webhook`): its composer and its transports."""

    max_connections: int
    rate_limit_per_second: float | None

    @property
    def channel(self) -> Channel: ...

    def open_transport(self, connections: int, rate: float | None) -> Transport: ...


class DeliveryStep:
    """The notification pipelines of one step: one per asset and channel, sharing a transport per channel and a journal."""

    def __init__(
        self,
        context: StepContext,
        mongo_service: MongoServiceResource,
        channels: Mapping[str, ChannelResource],
        delivery: DeliveryResource,
        metrics: MetricsResource,
        inherited: Journal,
        shard: Shard,
    ) -> None:
        self.shard = shard
        self._context = context
        self._mongo_service = mongo_service
        self._channels = channels
        self._delivery = delivery
        self._metrics = metrics
        self._inherited = inherited
        self._inherited_tokens = dict(inherited.unanswered_claims)
        self._transports: dict[str, Transport] = {}
        self._pipelines: list[NotificationPipeline] = []
        self._stop_requested = False

    def request_stop(self) -> None:
        """The run is being terminated: every pipeline of the step stops sending now (any thread)."""
        for transport in list(self._transports.values()):
            transport.stop()
        for pipeline in list(self._pipelines):
            pipeline.request_stop()
        self._stop_requested = True

    def pipeline(self, channel: str = "email") -> NotificationPipeline:
        resource = self._channels[channel]
        transport = self._transports.get(channel)
        if transport is None:
            transport = self._transports[channel] = resource.open_transport(
                self.shard.connections(resource.max_connections), self.shard.rate(resource.rate_limit_per_second)
            )
        pipeline = NotificationPipeline(
            ledger=self._mongo_service.client,
            channel=resource.channel,
            transport=transport,
            run=run_info(self._context),
            log=self._context.log,
            batch_size=self._delivery.batch_size,
            max_attempts=self._delivery.max_attempts,
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
    def sent(self) -> int:
        return sum(pipeline.stats.counts["sent"] for pipeline in self._pipelines)

    def journal(self) -> Journal:
        """Everything this step still owes the ledger."""
        owed = Journal(unanswered_claims=dict(self._inherited_tokens))
        for pipeline in self._pipelines:
            owed.outcomes.extend(pipeline.journal.outcomes)
            owed.unanswered_claims.update(pipeline.journal.unanswered_claims)
        return owed

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()


def journal_asset(context: StepContext) -> dg.AssetKey:
    """The asset a step's journal is an observation of: the first of its assets."""
    keys: list[dg.AssetKey] = sorted(context.assets_def.keys, key=lambda key: key.to_user_string())
    return keys[0]


def step_shard(context: StepContext) -> Shard:
    """The shard this step delivers: the whole day, unless it is one step of a fanned-out delivery."""
    op_context = context.op_execution_context if isinstance(context, dg.AssetExecutionContext) else context
    return Shard.from_mapping_key(op_context.get_mapping_key())


# How often a shard's step looks whether its run is being terminated.
RUN_STATUS_POLL_SECONDS = 1.0
STOPPING_STATUSES = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


@contextmanager
def _stopped_with_the_run(context: StepContext, step: DeliveryStep) -> Iterator[None]:
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


def _stopped(context: StepContext, journal: Journal, sent_before_stop: int) -> dg.Failure:
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
            "before it; every notification claimed and not sent was recorded `released` for a later run"
            + (f", except {unrecorded} the ledger could not take now (in the run's journal)" if unrecorded else "")
            + "."
        ),
        allow_retries=False,
        metadata={"sent": sent_before_stop, "left_claimed": unrecorded},
    )


@contextmanager
def delivery_step(
    context: StepContext,
    mongo_service: MongoServiceResource,
    channels: Mapping[str, ChannelResource],
    delivery: DeliveryResource,
    metrics: MetricsResource,
) -> Iterator[DeliveryStep]:
    """A step that sends notifications: settles an earlier attempt's journal first, and ends cleanly."""
    shard = step_shard(context)
    if not shard.is_whole:
        metrics.label_shard(shard.mapping_key)
    asset_key = journal_asset(context)
    inherited = latest_journal(context.instance, context.run.run_id, asset_key, shard.mapping_key) or Journal()
    step = DeliveryStep(context, mongo_service, channels, delivery, metrics, inherited, shard)
    try:
        with contextlib.nullcontext() if shard.is_whole else _stopped_with_the_run(context, step):
            step.settle_inherited()
            yield step
            step.release_inherited()
    except BaseException as exc:
        journal = step.journal()
        if journal or inherited:
            write_journal(context, asset_key, journal, shard.mapping_key)
        if isinstance(exc, INTERRUPTIONS):
            raise _stopped(context, journal, step.sent) from None
        raise
    else:
        if inherited:
            write_journal(
                context, asset_key, Journal(), shard.mapping_key
            )  # settled: a later attempt must not replay it
    finally:
        step.close()
