"""`maintenance`: report notifications claimed and never finished; nothing resends them."""

from collections import Counter
from datetime import UTC, datetime

import dagster as dg

from cron_pipelines.defs.services_data import NOTIFICATION_LEDGER
from cron_pipelines.delivery.ledger.stale import StaleClaimPolicy, is_stale_claim
from cron_pipelines.factory.daily import DailyOptions, daily_job
from cron_pipelines.factory.guard import guarded_step
from cron_pipelines.factory.summary import Stopwatch, business_day_of, summary_metadata
from cron_pipelines.models.records import InvalidRecord, InvalidTally
from cron_pipelines.resources import MetricsResource, MongoServiceResource

JOB = "maintenance"
LEDGER_HEALTH = dg.AssetKey("ledger_health")
STALE_CLAIMS_CHECK = "no_stale_claims"


class LedgerHealthConfig(dg.Config, StaleClaimPolicy):
    pass


def ledger_health(
    context: dg.AssetExecutionContext,
    config: LedgerHealthConfig,
    mongo_service: MongoServiceResource,
    metrics: MetricsResource,
) -> dg.MaterializeResult:
    """Counts ledger records still `claimed` stale_after_minutes after their claim: a run died between claim and send.

    They are at-most-once by design: nothing resends them. The report names them and
    their runs so an operator can check the mail server's logs and settle each one.
    """
    stopwatch = Stopwatch()
    metrics.observe(mongo_service.client)
    business_day = business_day_of(context)
    cutoff = config.cutoff(business_day.as_of(datetime.now(UTC)))
    by_kind: Counter[str] = Counter()
    by_run: Counter[str] = Counter()
    sample: list[str] = []
    invalid = InvalidTally()
    oldest: str | None = None
    for record in mongo_service.client.iter_notifications(status="claimed", until=cutoff):
        if isinstance(record, InvalidRecord):
            invalid.add(record)
            continue
        if not is_stale_claim(record, cutoff):
            continue
        by_kind[record.kind] += 1
        by_run[record.run_id or "<none>"] += 1
        oldest = record.claimed_at if oldest is None else min(oldest, record.claimed_at)
        if len(sample) < config.sample_size:
            sample.append(record.idempotency_key)
    stale = sum(by_kind.values())
    if stale:
        context.log.warning("%d notification(s) claimed but never finished, in %d run(s)", stale, len(by_run))
    return dg.MaterializeResult(
        metadata=summary_metadata(
            business_day,
            stopwatch,
            stale_claims=stale,
            claimed_before=cutoff.isoformat(),
            oldest_stale_claim=oldest or "none",
            stale_by_kind=dict(by_kind),
            stale_by_run=dict(by_run.most_common(config.sample_size)),
            sample_stale_keys=sample,
            invalid=invalid.count,
        ),
        check_results=[
            dg.AssetCheckResult(
                check_name=STALE_CLAIMS_CHECK,
                passed=stale == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"stale_claims": stale, "sample_stale_keys": sample[:10]},
            )
        ],
    )


def definitions(options: DailyOptions) -> dg.Definitions:
    asset = dg.asset(
        key=LEDGER_HEALTH,
        deps=[NOTIFICATION_LEDGER],
        partitions_def=options.partitions_def,
        retry_policy=options.retry_policy,
        group_name="maintenance",
        kinds={"python", "mongodb"},
        owners=["team:platform"],
        check_specs=[
            dg.AssetCheckSpec(
                STALE_CLAIMS_CHECK,
                asset=LEDGER_HEALTH,
                description="Warns when notifications were claimed and never sent, failed or skipped.",
            )
        ],
    )(guarded_step(ledger_health))
    return daily_job(
        JOB,
        [asset],
        at=(4, 30),
        options=options,
        description="Report notifications claimed and never finished.",
    )
