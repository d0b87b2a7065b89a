"""Operators' alerts: a failed run, and notifications stuck `claimed`, mailed to OPS_ALERT_EMAIL once each."""

import itertools
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from cron_pipelines.delivery.ledger.session import RunInfo
from cron_pipelines.delivery.ledger.stale import StaleClaimPolicy, is_stale_claim
from cron_pipelines.delivery.pipeline import NotificationPipeline
from cron_pipelines.factory.daily import DailyOptions
from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import PLANNED_MESSAGE_ID, NotificationRecord, format_instant
from cron_pipelines.resources import MailerResource, MongoServiceResource
from cron_pipelines.safe_text import printable

RUN_FAILURE_SENSOR = "run_failure_alert_sensor"
STUCK_CLAIMS_SENSOR = "stuck_claims_sensor"
MAX_ALERT_ERROR_CHARACTERS = 4000


def failure_summary(context: dg.RunFailureSensorContext) -> str:
    """The run's failure message and each failed step's error, bounded in length."""
    parts = [context.failure_event.message or "run failed"]
    for event in context.get_step_failure_events():
        # A STEP_FAILURE event's data carries the step's error (dagster exports no name for its type).
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            parts.append(f"{event.step_key}: {error.message.strip()}")
    # Errors may quote a service or mail server: each line printable, nothing raw.
    return "\n".join(printable(part, MAX_ALERT_ERROR_CHARACTERS) for part in parts)[:MAX_ALERT_ERROR_CHARACTERS]


def send_ops_alert(
    log: logging.Logger,
    mongo_service: MongoServiceResource,
    mailer: MailerResource,
    *,
    key: str,
    recipient: str,
    run: dg.DagsterRun,
    sender: str,
    headline: str,
    summary: str,
    details: str,
    webserver_url: str,
) -> Counter[str]:
    """Mail one alert about `run`, exactly once per `key` (the ledger's claim); the counts by outcome."""
    partition_key = run.tags.get("dagster/partition")
    alert = Notification(
        key=key,
        kind=NotificationKind.OPS_ALERT,
        user_id=None,
        address=recipient,
        name=None,
        context={
            "headline": headline,
            "summary": summary,
            "job_name": run.job_name,
            "partition_key": partition_key,
            "run_id": run.run_id,
            "run_url": f"{webserver_url}/runs/{run.run_id}",
            "error": details,
        },
        metadata={"failed_job": run.job_name},
    )
    transport = mailer.open_transport(mailer.max_connections, mailer.rate_limit_per_second)
    try:
        pipeline = NotificationPipeline(
            ledger=mongo_service.client,
            channel=mailer.channel,
            transport=transport,
            run=RunInfo(run_id=run.run_id, job_name=sender, partition_key=partition_key),
            log=log,
        )
        pipeline.deliver_chunk([alert])
    finally:
        transport.close()
    return pipeline.stats.counts


def build_run_failure_alert_sensor(ops_alert_email: str | None, webserver_url: str) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Mails OPS_ALERT_EMAIL once per failed run of this code location.",
    )
    def run_failure_alert_sensor(
        context: dg.RunFailureSensorContext, mongo_service: MongoServiceResource, mailer: MailerResource
    ) -> None:
        run = context.dagster_run
        if not ops_alert_email:
            context.log.info("run %s failed; OPS_ALERT_EMAIL is unset, so no alert mail", run.run_id)
            return
        counts = send_ops_alert(
            context.log,
            mongo_service,
            mailer,
            key=f"ops_alert:{run.run_id}",
            recipient=ops_alert_email,
            run=run,
            sender=RUN_FAILURE_SENSOR,
            headline="run failed",
            summary="A run of the cron_pipelines code location failed.",
            details=failure_summary(context),
            webserver_url=webserver_url,
        )
        context.log.info("ops alert for run %s: %s", run.run_id, dict(counts))

    return run_failure_alert_sensor


# Ledger records scanned per tick: a bound on the tick's time; the report says when it was reached.
MAX_STUCK_CLAIMS_SCANNED = 10_000


def build_stuck_claims_sensor(
    ops_alert_email: str | None, webserver_url: str, policy: StaleClaimPolicy
) -> dg.SensorDefinition:
    @dg.sensor(
        name=STUCK_CLAIMS_SENSOR,
        minimum_interval_seconds=120,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Reports notifications left `claimed` longer than the threshold (a run died between claim and outcome) "
            "and mails OPS_ALERT_EMAIL once per run that left them, with the command that settles them."
        ),
    )
    def stuck_claims_sensor(
        context: dg.SensorEvaluationContext, mongo_service: MongoServiceResource, mailer: MailerResource
    ) -> dg.SkipReason:
        cutoff = policy.cutoff(datetime.now(UTC))
        stuck = StuckClaims(sample_size=policy.sample_size)
        records = mongo_service.client.iter_notifications(status="claimed", until=cutoff)
        for record in itertools.islice(records, MAX_STUCK_CLAIMS_SCANNED):
            if isinstance(record, NotificationRecord) and is_stale_claim(record, cutoff):
                stuck.add(record)
        if not stuck.by_run:
            return dg.SkipReason(f"no notification claimed before {format_instant(cutoff)} is still `claimed`")
        context.log.warning("stuck claims: %s", stuck.describe())
        alerted = []
        for run_id, keys in stuck.by_run.items():
            run = context.instance.get_run_by_id(run_id) if run_id != NO_RUN else None
            if run is None or not ops_alert_email:
                continue
            counts = send_ops_alert(
                context.log,
                mongo_service,
                mailer,
                key=f"ops_alert:stuck_claims:{run_id}",
                recipient=ops_alert_email,
                run=run,
                sender=STUCK_CLAIMS_SENSOR,
                headline="notifications stuck in `claimed`",
                summary=(
                    f"Run {run_id} ({run.status.value}) left {stuck.count_by_run[run_id]} notification(s) `claimed` "
                    f"for more than {policy.stale_after_minutes} minutes: it died between claiming and recording "
                    "them. Nothing resends them by itself. Check the mail server's logs for their planned "
                    "Message-IDs, then settle them."
                ),
                details=stuck.details(run_id, keys),
                webserver_url=webserver_url,
            )
            if counts["sent"]:
                alerted.append(run_id)
        return dg.SkipReason(f"{stuck.describe()}; alert mailed for run(s) {alerted or 'none new'}")

    return stuck_claims_sensor


NO_RUN = "<no run>"


@dataclass
class StuckClaims:
    """Stuck claims grouped by run, with a bounded sample of keys and planned Message-IDs per run."""

    sample_size: int
    count_by_run: Counter[str] = field(default_factory=Counter)
    by_run: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def add(self, record: NotificationRecord) -> None:
        run_id = record.run_id or NO_RUN
        self.count_by_run[run_id] += 1
        sample = self.by_run.setdefault(run_id, [])
        if len(sample) < self.sample_size:
            planned = record.metadata.get(PLANNED_MESSAGE_ID)
            sample.append((record.idempotency_key, planned if isinstance(planned, str) else "unknown"))

    def describe(self) -> str:
        return ", ".join(f"{count} in run {run_id}" for run_id, count in self.count_by_run.most_common(10))

    def details(self, run_id: str, keys: list[tuple[str, str]]) -> str:
        lines = [f"{printable(key, 200)}  Message-ID {printable(message_id, 200)}" for key, message_id in keys]
        more = self.count_by_run[run_id] - len(keys)
        if more > 0:
            lines.append(f"... and {more} more (cron-pipelines audit --run {run_id} --status claimed)")
        lines += [
            "",
            "Some of them may have been delivered before the run died. Find out which first: look each",
            "Message-ID above up in the mail server's log (e.g. grep -F '<id>' /var/log/mail.log on Postfix,",
            "or the provider's message search). Then settle each one:",
            "  cron-pipelines settle --key KEY --as sent     # in the mail log: delivered, never sent again",
            "  cron-pipelines settle --key KEY --as failed   # not in the mail log: a later run sends it",
            f"Settling the whole run `--as failed` (cron-pipelines settle --run {run_id} --as failed",
            "--i-accept-duplicates) sends every one of them again: the delivered ones arrive twice.",
        ]
        return "\n".join(lines)


def definitions(options: DailyOptions) -> dg.Definitions:
    settings = options.settings
    return dg.Definitions(
        sensors=[
            build_run_failure_alert_sensor(settings.ops_alert_email, settings.dagster_webserver_url),
            build_stuck_claims_sensor(settings.ops_alert_email, settings.dagster_webserver_url, StaleClaimPolicy()),
        ]
    )
