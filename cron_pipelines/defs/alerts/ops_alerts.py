"""`send_ops_alerts`: operators' alerts, by mail (OPS_ALERT_EMAIL) and by webhook (OPS_ALERT_WEBHOOK_URL).

Two sensors launch it: `run_failure_alert_sensor` for every failed run of this code location
(but its own), `stuck_claims_sensor` for every run that left notifications `claimed`. Each
alert goes through the delivery step like every notification: claimed per channel under a
key of its own (`ops_alert:{run_id}` for the mail, the contract's; `…:webhook` beside it),
so a tick evaluated again, a retry or a re-run never sends it twice. The webhook does not
need the mail server: when the mail server is what failed, the webhook still reports it,
and the alert run fails for the mail it could not send (visible in the UI; it does not
alert about itself).
"""

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from cron_pipelines.defs.services_data import NOTIFICATION_LEDGER
from cron_pipelines.delivery.channels.base import ChannelUnavailable
from cron_pipelines.delivery.ledger.stale import StaleClaimPolicy, is_stale_claim
from cron_pipelines.factory.checks import DeliveryConfig
from cron_pipelines.factory.daily import DailyOptions
from cron_pipelines.factory.notification_asset import Deliver, Delivery, NotificationAssetSpec, notification_asset
from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import PLANNED_MESSAGE_ID, NotificationRecord, format_instant
from cron_pipelines.resources import MongoServiceResource, OpsWebhookResource
from cron_pipelines.safe_text import printable

if TYPE_CHECKING:  # the public API has no name for the type define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

JOB = "send_ops_alerts"
OPS_ALERTS = dg.AssetKey("ops_alerts")
RUN_FAILURE_SENSOR = "run_failure_alert_sensor"
STUCK_CLAIMS_SENSOR = "stuck_claims_sensor"
MAX_ALERT_ERROR_CHARACTERS = 4000
# The webhook's alert beside the mail's: the same alert, claimed on its own channel.
WEBHOOK_SUFFIX = ":webhook"


class OpsAlertConfig(DeliveryConfig):
    """One alert about one run, as a sensor wrote it into the run's config."""

    key: str = ""  # ops_alert:{run_id}, ops_alert:stuck_claims:{run_id}
    headline: str = ""
    summary: str = ""
    details: str = ""
    run_id: str = ""
    job_name: str = ""
    partition_key: str | None = None
    run_url: str = ""


def alert_notifications(
    config: OpsAlertConfig, email: str | None, webhook: str | None
) -> list[tuple[str, Notification]]:
    """The alert for each configured channel: (channel, notification)."""
    context = {
        "headline": config.headline,
        "summary": config.summary,
        "job_name": config.job_name,
        "partition_key": config.partition_key,
        "run_id": config.run_id,
        "run_url": config.run_url,
        "error": config.details,
    }
    channels = [("webhook", f"{config.key}{WEBHOOK_SUFFIX}", webhook), ("email", config.key, email)]
    return [
        (
            channel,
            Notification(
                key=key,
                kind=NotificationKind.OPS_ALERT,
                user_id=None,
                address=address,
                name=None,
                context=context,
                metadata={"failed_job": config.job_name, "alert_for_run": config.run_id},
            ),
        )
        for channel, key, address in channels
        if address is not None
    ]


def _ops_alerts(email: str | None) -> Deliver:
    def ops_alerts(delivery: Delivery, config: OpsAlertConfig, ops_webhook: OpsWebhookResource) -> None:
        """Each channel is tried even when another failed: the webhook reports a mail outage."""
        failures: list[ChannelUnavailable] = []
        webhook = ops_webhook.origin if ops_webhook.configured else None
        for channel, notification in alert_notifications(config, email, webhook):
            try:
                delivery.pipeline(channel=channel).deliver_chunk([notification])
            except ChannelUnavailable as exc:
                failures.append(exc)
        delivery.report(alert=config.key, alert_for_run=config.run_id)
        if failures:
            raise failures[0]

    return ops_alerts


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


def _alert_request(
    key: str, run: dg.DagsterRun, sensor: str, webserver_url: str, headline: str, summary: str, details: str
) -> dg.RunRequest:
    config = OpsAlertConfig(
        key=key,
        headline=headline,
        summary=summary,
        details=details,
        run_id=run.run_id,
        job_name=run.job_name,
        partition_key=run.tags.get("dagster/partition"),
        run_url=f"{webserver_url}/runs/{run.run_id}",
    )
    return dg.RunRequest(
        run_key=key,
        run_config={"ops": {OPS_ALERTS.to_python_identifier(): {"config": config.model_dump(exclude_defaults=True)}}},
        tags={"cron_pipelines/trigger": sensor, "cron_pipelines/alert_for": run.run_id},
    )


def build_run_failure_alert_sensor(
    job: "UnresolvedAssetJobDefinition", alerting: bool, webserver_url: str
) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        request_job=job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Alerts the operators (mail and webhook) once per failed run of this code location.",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> dg.RunRequest | dg.SkipReason:
        run = context.dagster_run
        if run.job_name == JOB:  # an alert that failed is not alerted about (its webhook part says why)
            return dg.SkipReason(f"run {run.run_id} of {JOB} failed: see its page; no alert about an alert")
        if not alerting:
            return dg.SkipReason(f"run {run.run_id} failed; OPS_ALERT_EMAIL and OPS_ALERT_WEBHOOK_URL are unset")
        return _alert_request(
            f"ops_alert:{run.run_id}",
            run,
            RUN_FAILURE_SENSOR,
            webserver_url,
            "run failed",
            "A run of the cron_pipelines code location failed.",
            failure_summary(context),
        )

    return run_failure_alert_sensor


# Ledger records scanned per tick: a bound on the tick's time; the report says when it was reached.
MAX_STUCK_CLAIMS_SCANNED = 10_000


def build_stuck_claims_sensor(
    job: "UnresolvedAssetJobDefinition", alerting: bool, webserver_url: str, policy: StaleClaimPolicy
) -> dg.SensorDefinition:
    @dg.sensor(
        name=STUCK_CLAIMS_SENSOR,
        job=job,
        minimum_interval_seconds=120,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Reports notifications left `claimed` longer than the threshold (a run died between claim and outcome) "
            "and alerts the operators once per run that left them, with how to settle them."
        ),
    )
    def stuck_claims_sensor(
        context: dg.SensorEvaluationContext, mongo_service: MongoServiceResource
    ) -> Iterator[dg.RunRequest | dg.SkipReason]:
        cutoff = policy.cutoff(datetime.now(UTC))
        stuck = StuckClaims(sample_size=policy.sample_size)
        records = mongo_service.client.iter_notifications(status="claimed", until=cutoff)
        for record in itertools.islice(records, MAX_STUCK_CLAIMS_SCANNED):
            if isinstance(record, NotificationRecord) and is_stale_claim(record, cutoff):
                stuck.add(record)
        if not stuck.by_run:
            yield dg.SkipReason(f"no notification claimed before {format_instant(cutoff)} is still `claimed`")
            return
        context.log.warning("stuck claims: %s", stuck.describe())
        runs = [(run_id, context.instance.get_run_by_id(run_id)) for run_id in stuck.by_run if run_id != NO_RUN]
        if not alerting:
            yield dg.SkipReason(f"{stuck.describe()}; OPS_ALERT_EMAIL and OPS_ALERT_WEBHOOK_URL are unset")
            return
        for run_id, run in runs:
            if run is None:
                continue
            yield _alert_request(
                f"ops_alert:stuck_claims:{run_id}",
                run,
                STUCK_CLAIMS_SENSOR,
                webserver_url,
                "notifications stuck in `claimed`",
                f"Run {run_id} ({run.status.value}) left {stuck.count_by_run[run_id]} notification(s) `claimed` "
                f"for more than {policy.stale_after_minutes} minutes: it died between claiming and recording "
                "them, or lost a session before the server's answer. Nothing resends them by itself. Find out "
                "which were delivered (their planned Message-IDs, in the mail server's log), then settle them.",
                stuck.details(run_id, stuck.by_run[run_id]),
            )

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
    asset = notification_asset(
        _ops_alerts(settings.ops_alert_email),
        specs=[
            NotificationAssetSpec(
                OPS_ALERTS,
                "Operators' alerts about failed runs and stuck claims, by mail and by webhook, once each.",
                deps=[NOTIFICATION_LEDGER],
                kinds=frozenset({"python", "email", "slack"}),
            )
        ],
        config=OpsAlertConfig,
        options=options,
        group_name="maintenance",
        owners=["team:platform"],
        resources=["ops_webhook"],
        channels=("email", "webhook"),
        partitioned=False,
    )
    job = dg.define_asset_job(JOB, selection=[OPS_ALERTS], description="Send one operators' alert.")
    alerting = settings.ops_alert_email is not None or settings.ops_alert_webhook_url is not None
    url = settings.dagster_webserver_url
    return dg.Definitions(
        assets=[asset],
        jobs=[job],
        sensors=[
            build_run_failure_alert_sensor(job, alerting, url),
            build_stuck_claims_sensor(job, alerting, url, StaleClaimPolicy()),
        ],
    )
