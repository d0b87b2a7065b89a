"""What the two due-driven notification assets share: stream the day's dues through a rule, deliver."""

from collections.abc import Callable, Iterable
from datetime import date

from cron_pipelines.factory.notification_asset import Delivery
from cron_pipelines.models.notification import Notification
from cron_pipelines.models.payloads import Due, DueStatus
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines.resources import SqlServiceResource

DueRule = Callable[[Iterable[Due | InvalidRecord], date], Iterable[Notification | InvalidRecord]]


def deliver_dues(
    delivery: Delivery,
    status: DueStatus,
    window: Callable[[date], tuple[date, date]],
    rule: DueRule,
    sql_service: SqlServiceResource,
) -> None:
    """Stream the dues of `status` in the day's window through `rule` and deliver what it decides."""
    due_from, due_to = window(delivery.day.day)
    dues = sql_service.client.iter_dues(statuses=[status], due_from=due_from, due_to=due_to)
    # A shard reads the whole listing and keeps its users' dues: a due's user decides its shard.
    delivery.pipeline().deliver(rule(delivery.shard.select(dues), delivery.day.day))
    delivery.report(due_from=due_from.isoformat(), due_to=due_to.isoformat())
