"""Payment reminders, overdue marks and overdue notices for the business day."""

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import date

import dagster as dg

from cron_pipelines.assets.common import (
    AssetFactoryOptions,
    DeliveryThresholds,
    Stopwatch,
    business_day,
    delivery_check_result,
    delivery_check_spec,
    delivery_step,
    no_retry_on_permanent_errors,
    summary_metadata,
)
from cron_pipelines.assets.external import DUES, NOTIFICATION_LEDGER
from cron_pipelines.clients.http import RejectedRecord, RejectedTally
from cron_pipelines.clients.models import Due, DueStatus
from cron_pipelines.notifications.messages import Notification
from cron_pipelines.resources import MailerResource, MetricsResource, MongoServiceResource, SqlServiceResource
from cron_pipelines.rules import payments as rules


class PaymentRemindersConfig(dg.Config, rules.PaymentReminderPolicy, DeliveryThresholds):
    pass


class OverdueNoticesConfig(dg.Config, rules.OverduePolicy, DeliveryThresholds):
    pass


def _notify_about_dues(
    context: dg.AssetExecutionContext,
    thresholds: DeliveryThresholds,
    status: DueStatus,
    window: Callable[[date], tuple[date, date]],
    notifications: Callable[[Iterable[Due | RejectedRecord], date], Iterable[Notification | RejectedRecord]],
    sql_service: SqlServiceResource,
    mongo_service: MongoServiceResource,
    mailer: MailerResource,
    metrics: MetricsResource,
) -> dg.MaterializeResult:
    """Stream the dues of `status` in the day's window through a rule and deliver what it decides."""
    stopwatch = Stopwatch()
    metrics.observe(sql_service.client, mongo_service.client)
    day = business_day(context)
    due_from, due_to = window(day.day)
    with delivery_step(context, mongo_service, mailer, metrics) as step:
        pipeline = step.pipeline()
        dues = sql_service.client.iter_dues(statuses=[status], due_from=due_from, due_to=due_to)
        pipeline.deliver(notifications(dues, day.day))
    return dg.MaterializeResult(
        metadata=summary_metadata(
            day, stopwatch, due_from=due_from.isoformat(), due_to=due_to.isoformat(), **pipeline.metadata()
        ),
        check_results=[delivery_check_result(context.asset_key, pipeline, thresholds)],
    )


def payment_reminders(
    context: dg.AssetExecutionContext,
    config: PaymentRemindersConfig,
    sql_service: SqlServiceResource,
    mongo_service: MongoServiceResource,
    mailer: MailerResource,
    metrics: MetricsResource,
) -> dg.MaterializeResult:
    """Reminds users of pending dues due in 7, 3, 1 and 0 days."""
    return _notify_about_dues(
        context, config, "pending", config.window,
        lambda dues, day: rules.payment_reminders(dues, day, config),
        sql_service, mongo_service, mailer, metrics,
    )


def overdue_marks(
    context: dg.AssetExecutionContext, sql_service: SqlServiceResource, metrics: MetricsResource
) -> dg.MaterializeResult:
    """Marks every pending due whose date has passed as overdue; one paid meanwhile is skipped."""
    stopwatch = Stopwatch()
    metrics.observe(sql_service.client)
    day = business_day(context)
    rejected = RejectedTally()

    def due_ids_to_mark() -> Iterator[str]:
        for due in sql_service.client.iter_dues(statuses=["pending"], due_to=day.plus_days(-1)):
            if isinstance(due, RejectedRecord):
                rejected.add(due)
            elif rules.must_mark_overdue(due, day.day):
                yield due.id

    outcomes: Counter[str] = Counter()
    sample: list[str] = []
    for mark, result in sql_service.client.mark_overdue(due_ids_to_mark()):
        outcomes[result.outcome] += 1
        if result.outcome == "marked" and len(sample) < 10:
            sample.append(mark.due_id)
    if rejected.count:
        context.log.warning("%d malformed pending due(s) not marked, e.g. %s", rejected.count, rejected.sample[0])
    return dg.MaterializeResult(
        metadata=summary_metadata(
            day,
            stopwatch,
            marked=outcomes["marked"],
            already_overdue=outcomes["already_overdue"],
            invalid_state=outcomes["invalid_state"],
            not_found=outcomes["not_found"],
            rejected=rejected.count,
            sample_marked_due_ids=sample,
            rejected_records_sample=rejected.sample,
        )
    )


def overdue_notices(
    context: dg.AssetExecutionContext,
    config: OverdueNoticesConfig,
    sql_service: SqlServiceResource,
    mongo_service: MongoServiceResource,
    mailer: MailerResource,
    metrics: MetricsResource,
) -> dg.MaterializeResult:
    """Tells users their due is 1, 7, 14 and 30 days overdue."""
    return _notify_about_dues(
        context, config, "overdue", config.notice_window,
        lambda dues, day: rules.overdue_notices(dues, day, config),
        sql_service, mongo_service, mailer, metrics,
    )


def build_payment_assets(options: AssetFactoryOptions) -> list[dg.AssetsDefinition]:
    common = dict(
        partitions_def=options.partitions_def,
        retry_policy=options.retry_policy,
        group_name="payments",
        owners=["team:payments"],
    )
    return [
        dg.asset(
            name="payment_reminders", deps=[DUES, NOTIFICATION_LEDGER], kinds={"python", "email"},
            check_specs=[delivery_check_spec("payment_reminders")], **common,
        )(no_retry_on_permanent_errors(payment_reminders)),
        dg.asset(name="overdue_marks", deps=[DUES], kinds={"python", "sql"}, **common)(no_retry_on_permanent_errors(overdue_marks)),
        dg.asset(
            name="overdue_notices", deps=["overdue_marks", NOTIFICATION_LEDGER], kinds={"python", "email"},
            check_specs=[delivery_check_spec("overdue_notices")], **common,
        )(no_retry_on_permanent_errors(overdue_notices)),
    ]
