"""`mark_overdue_dues`: mark past-due dues overdue, then tell their users on the configured days."""

from collections import Counter
from collections.abc import Iterator

import dagster as dg

from cron_pipelines.defs.payments._dues import deliver_dues
from cron_pipelines.defs.services_data import DUES, NOTIFICATION_LEDGER
from cron_pipelines.factory.checks import DeliveryConfig
from cron_pipelines.factory.daily import DailyOptions, daily_job
from cron_pipelines.factory.guard import guarded_step
from cron_pipelines.factory.notification_asset import Delivery, NotificationAssetSpec, notification_asset
from cron_pipelines.factory.summary import Stopwatch, business_day_of, prefixed, summary_metadata
from cron_pipelines.models.records import InvalidRecord, InvalidTally
from cron_pipelines.resources import MetricsResource, SqlServiceResource
from cron_pipelines.rules import payments as rules

JOB = "mark_overdue_dues"
OVERDUE_MARKS = dg.AssetKey("overdue_marks")
OVERDUE_NOTICES = dg.AssetKey("overdue_notices")


class OverdueNoticesConfig(DeliveryConfig, rules.OverduePolicy):
    pass


def overdue_marks(
    context: dg.AssetExecutionContext, sql_service: SqlServiceResource, metrics: MetricsResource
) -> dg.MaterializeResult:
    """Marks every pending due whose date has passed as overdue; one paid meanwhile is skipped."""
    stopwatch = Stopwatch()
    metrics.observe(sql_service.client)
    business_day = business_day_of(context)
    invalid = InvalidTally()

    def due_ids_to_mark() -> Iterator[str]:
        for due in sql_service.client.iter_dues(statuses=["pending"], due_to=business_day.plus_days(-1)):
            if isinstance(due, InvalidRecord):
                invalid.add(due)
            elif rules.must_mark_overdue(due, business_day.day):
                yield due.id

    outcomes: Counter[str] = Counter()
    sample: list[str] = []
    for mark, result in sql_service.client.mark_overdue(due_ids_to_mark()):
        outcomes[result.outcome] += 1
        if result.outcome == "marked" and len(sample) < 10:
            sample.append(mark.due_id)
    if invalid.count:
        context.log.warning("%d malformed pending due(s) not marked, e.g. %s", invalid.count, invalid.sample[0])
    return dg.MaterializeResult(
        metadata=summary_metadata(
            business_day,
            stopwatch,
            **prefixed("write", outcomes, ("marked", "already_overdue", "invalid_state", "not_found")),
            invalid=invalid.count,
            sample_marked_due_ids=sample,
            invalid_records_sample=invalid.sample,
        )
    )


def overdue_notices(delivery: Delivery, config: OverdueNoticesConfig, sql_service: SqlServiceResource) -> None:
    deliver_dues(
        delivery,
        "overdue",
        config.notice_window,
        lambda dues, day: rules.overdue_notices(dues, day, config),
        sql_service,
    )


def definitions(options: DailyOptions) -> dg.Definitions:
    marks = dg.asset(
        key=OVERDUE_MARKS,
        deps=[DUES],
        kinds={"python", "sql"},
        partitions_def=options.partitions_def,
        retry_policy=options.retry_policy,
        group_name="payments",
        owners=["team:payments"],
    )(guarded_step(overdue_marks))
    notices = notification_asset(
        overdue_notices,
        specs=[
            NotificationAssetSpec(
                OVERDUE_NOTICES,
                "Tells users their due is overdue, on the configured days past due (notice_days_past_due).",
                deps=[OVERDUE_MARKS, NOTIFICATION_LEDGER],
            )
        ],
        config=OverdueNoticesConfig,
        options=options,
        group_name="payments",
        owners=["team:payments"],
        resources=["sql_service"],
        shardable=True,
    )
    return daily_job(
        JOB,
        [marks, notices],
        at=(6, 0),
        options=options,
        description="Mark past-due dues overdue, then send notices on the configured days past due.",
    )
