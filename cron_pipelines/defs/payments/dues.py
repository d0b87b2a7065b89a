"""What the two due-driven notification assets share: stream the day's dues through a rule, deliver."""

from collections.abc import Callable, Iterable
from datetime import date

import dagster as dg

from cron_pipelines.defs.delivery import (
    Stopwatch,
    business_day_of,
    delivery_step,
    summary_metadata,
)
from cron_pipelines.models.notification import Notification
from cron_pipelines.models.payloads import Due, DueStatus
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines.resources import MailerResource, MetricsResource, MongoServiceResource, SqlServiceResource

DueRule = Callable[[Iterable[Due | InvalidRecord], date], Iterable[Notification | InvalidRecord]]


def notify_about_dues(
    context: dg.AssetExecutionContext,
    status: DueStatus,
    window: Callable[[date], tuple[date, date]],
    rule: DueRule,
    sql_service: SqlServiceResource,
    mongo_service: MongoServiceResource,
    mailer: MailerResource,
    metrics: MetricsResource,
) -> dg.MaterializeResult:
    """Stream the dues of `status` in the day's window through `rule` and deliver what it decides.

    Its metadata holds the delivery's counts; the asset's check is made from them (defs/sharding.py).
    """
    stopwatch = Stopwatch()
    metrics.observe(sql_service.client, mongo_service.client)
    business_day = business_day_of(context)
    due_from, due_to = window(business_day.day)
    with delivery_step(context, mongo_service, mailer, metrics) as step:
        pipeline = step.pipeline()
        dues = sql_service.client.iter_dues(statuses=[status], due_from=due_from, due_to=due_to)
        # A shard reads the whole listing and keeps its users' dues: a due's user decides its shard.
        pipeline.deliver(rule(step.shard.select(dues), business_day.day))
    return dg.MaterializeResult(
        metadata=summary_metadata(
            business_day, stopwatch, due_from=due_from.isoformat(), due_to=due_to.isoformat(), **pipeline.metadata()
        )
    )
