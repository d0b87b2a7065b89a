"""`verify_employees`: decide pending verifications and remind the open ones; new attempts trigger it too."""

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import Field

from cron_pipelines.batching import chunked
from cron_pipelines.clients.sql_service import SqlServiceClient
from cron_pipelines.defs.services_data import NOTIFICATION_LEDGER, VERIFICATION_ATTEMPTS, VERIFICATIONS
from cron_pipelines.delivery.pipeline import Gate
from cron_pipelines.delivery.stats import DeliveryStats
from cron_pipelines.factory.checks import DeliveryConfig
from cron_pipelines.factory.confirmations import resend_failed_confirmations
from cron_pipelines.factory.daily import SCHEDULED_RUN_PRIORITY, DailyOptions, daily_job
from cron_pipelines.factory.notification_asset import Delivery, NotificationAssetSpec, notification_asset
from cron_pipelines.factory.summary import prefixed
from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import (
    ClaimResult,
    Verification,
    VerificationAttempt,
    VerificationDecision,
    format_instant,
    parse_instant,
)
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines.resources import MongoServiceResource, SqlServiceResource
from cron_pipelines.rules import verifications as rules
from cron_pipelines.rules.confirmations import claimed_before, confirmation_skip_reason

JOB = "verify_employees"
STEP = "verify_employees_assets"
SENSOR = "verification_attempts_sensor"
DECISIONS = dg.AssetKey("verification_decisions")
REMINDERS = dg.AssetKey("verification_reminders")


class VerifyEmployeesConfig(DeliveryConfig, rules.VerificationPolicy):
    verification_ids: list[str] = Field(
        default=[],
        description="Only these verifications (set by verification_attempts_sensor); empty: every pending one.",
    )


def verify_employees(
    delivery: Delivery,
    config: VerifyEmployeesConfig,
    sql_service: SqlServiceResource,
    mongo_service: MongoServiceResource,
) -> None:
    """Decides pending verifications (verified, rejected, expired) and reminds the undecided ones on the configured days."""
    day = delivery.day
    as_of = day.as_of(datetime.now(UTC))
    only = set(config.verification_ids)
    decided: Counter[str] = Counter()
    write_outcomes: Counter[str] = Counter()
    unassessed = 0
    gate = _decision_gate(sql_service.client, write_outcomes)
    decisions, reminders = delivery.pipeline(DECISIONS), delivery.pipeline(REMINDERS)
    pending = sql_service.client.iter_verifications(statuses=["pending"])
    for chunk in chunked(pending, delivery.source_chunk_size):
        verifications = []
        for verification in chunk:
            if isinstance(verification, InvalidRecord):
                decisions.stats.count_invalid(verification)
            elif not only or verification.id in only:
                verifications.append(verification)
        if not verifications:
            continue
        attempts, unreadable = _attempts_by_verification(mongo_service, verifications, decisions.stats)
        results, reminder_notifications = [], []
        for verification in verifications:
            if verification.id in unreadable:
                unassessed += 1  # a malformed attempt might be the success: decide next time
                continue
            verdict = rules.assess_verification(verification, attempts[verification.id], day, as_of, config)
            if isinstance(verdict, rules.Decision):
                decided[verdict.status] += 1
                results.append((verification, verdict))
            elif isinstance(verdict, rules.Reminder):
                reminder_notifications.append(rules.verification_reminder(verification, verdict, day, config))
        decisions.deliver_chunk(
            [rules.verification_result(verification, decision, day) for verification, decision in results], gate=gate
        )
        reminders.deliver_chunk(reminder_notifications)
    resent = resend_failed_confirmations(decisions, mongo_service, NotificationKind.VERIFICATION_RESULT, gate)
    common = {"only_verification_ids": len(only), "unassessed": unassessed}
    delivery.report(
        DECISIONS,
        **prefixed("decision", decided, ("verified", "rejected", "expired")),
        **prefixed("write", write_outcomes, ("updated", "unchanged", "invalid_state", "not_found")),
        failed_confirmations_retried=resent,
        **common,
    )
    delivery.report(REMINDERS, **common)


def _attempts_by_verification(
    mongo_service: MongoServiceResource, verifications: Sequence[Verification], stats: DeliveryStats
) -> tuple[dict[str, list[VerificationAttempt]], set[str]]:
    """Every attempt of these verifications, and the ids that had an unreadable attempt."""
    attempts: dict[str, list[VerificationAttempt]] = defaultdict(list)
    unreadable: set[str] = set()
    ids = [verification.id for verification in verifications]
    for attempt in mongo_service.client.iter_verification_attempts(verification_ids=ids):
        if isinstance(attempt, InvalidRecord):
            stats.count_invalid(attempt)
            raw = attempt.raw if isinstance(attempt.raw, dict) else {}
            unreadable.add(str(raw.get("verification_id")))
        else:
            attempts[attempt.verification_id].append(attempt)
    return attempts, unreadable


def _decision_gate(client: SqlServiceClient, write_outcomes: Counter[str]) -> Gate:
    """Writes the decisions whose `verification_result` email this run claimed; sends it where that worked."""

    def decide(owned: Sequence[tuple[Notification, ClaimResult]]) -> list[str | None]:
        requests = [
            VerificationDecision(
                verification_id=notification.metadata["verification_id"],
                status=notification.metadata["status"],
                reason=notification.metadata["reason"],
            )
            for notification, _ in owned
        ]
        reasons = []
        for (notification, claim), (_, result) in zip(owned, client.decide_verifications(requests), strict=True):
            write_outcomes[result.outcome] += 1
            reasons.append(
                confirmation_skip_reason(
                    result.outcome,
                    applied="updated",
                    already="unchanged",
                    claimed_before=claimed_before(notification, claim),
                )
            )
        return reasons

    return decide


# One tick launches one run for at most this many new attempts; the next tick continues.
MAX_ATTEMPTS_PER_TICK = 5000


@dataclass(frozen=True, order=True)
class AttemptCursor:
    """The last attempt a tick launched a run for, in the service's (attempted_at, id) order."""

    attempted_at: datetime
    id: str

    def to_json(self) -> str:
        return json.dumps({"attempted_at": format_instant(self.attempted_at), "id": self.id})

    @classmethod
    def from_json(cls, value: str) -> "AttemptCursor":
        data = json.loads(value)
        return cls(parse_instant(data["attempted_at"]), str(data["id"]))

    @classmethod
    def of(cls, attempt: VerificationAttempt) -> "AttemptCursor":
        return cls(attempt.attempted_at_dt, attempt.id)


def attempts_run_key(attempts: list[VerificationAttempt]) -> str:
    """The same attempts always give the same key, so they never launch twice."""
    digest = hashlib.sha256(",".join(sorted(attempt.id for attempt in attempts)).encode()).hexdigest()
    return f"verify_employees:attempts:{digest[:32]}"


def build_verification_attempts_sensor(cron_timezone: str, lookback_hours: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR,
        job_name=JOB,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launches verify_employees for the verifications that new attempts touched.",
    )
    def verification_attempts_sensor(
        context: dg.SensorEvaluationContext, mongo_service: MongoServiceResource
    ) -> dg.SensorResult | dg.SkipReason:
        now = datetime.now(UTC)
        cursor = (
            AttemptCursor.from_json(context.cursor)
            if context.cursor
            else AttemptCursor(now - timedelta(hours=lookback_hours), "")
        )
        new_attempts: list[VerificationAttempt] = []
        malformed = 0
        for attempt in mongo_service.client.iter_verification_attempts(since=cursor.attempted_at):
            if isinstance(attempt, InvalidRecord):
                malformed += 1
            elif AttemptCursor.of(attempt) > cursor:
                new_attempts.append(attempt)
                if len(new_attempts) >= MAX_ATTEMPTS_PER_TICK:
                    break
        if malformed:
            context.log.warning("%d malformed verification attempt(s) ignored", malformed)
        if not new_attempts:
            return dg.SkipReason(f"no verification attempts after {cursor.to_json()}")
        touched = sorted({attempt.verification_id for attempt in new_attempts})
        today = now.astimezone(ZoneInfo(cron_timezone)).date().isoformat()
        request = dg.RunRequest(
            run_key=attempts_run_key(new_attempts),
            partition_key=today,
            run_config={"ops": {STEP: {"config": {"verification_ids": touched}}}},
            tags={
                "dagster/priority": SCHEDULED_RUN_PRIORITY,
                "cron_pipelines/trigger": SENSOR,
                "cron_pipelines/attempts": str(len(new_attempts)),
            },
        )
        # The cursor moves only with the request built: a failed tick re-reads the same attempts.
        last = max(AttemptCursor.of(attempt) for attempt in new_attempts)
        return dg.SensorResult(run_requests=[request], cursor=last.to_json())

    return verification_attempts_sensor


def definitions(options: DailyOptions) -> dg.Definitions:
    deps = [VERIFICATIONS, VERIFICATION_ATTEMPTS, NOTIFICATION_LEDGER]
    assets = notification_asset(
        verify_employees,
        name=STEP,
        specs=[
            NotificationAssetSpec(
                DECISIONS,
                "Pending verifications decided verified, rejected or expired, and the result emails.",
                deps=deps,
                kinds=frozenset({"python", "email", "sql"}),
            ),
            NotificationAssetSpec(
                REMINDERS,
                "Reminders to employees whose verification is still open on the configured days.",
                deps=deps,
            ),
        ],
        config=VerifyEmployeesConfig,
        options=options,
        group_name="verifications",
        owners=["team:people"],
        resources=["sql_service", "mongo_service"],
    )
    sensor = build_verification_attempts_sensor(
        options.settings.cron_timezone, options.settings.verification_sensor_lookback_hours
    )
    return daily_job(
        JOB,
        [assets],
        at=(8, 0),
        options=options,
        sensors=[sensor],
        description="Decide pending verifications and remind the open ones.",
    )
