"""`send_payment_reminders`: remind users of pending dues shortly before they are due."""

import dagster as dg

from cron_pipelines.defs.daily import DailyOptions, daily_job
from cron_pipelines.defs.delivery import DeliveryThresholds
from cron_pipelines.defs.payments.dues import notify_about_dues
from cron_pipelines.defs.services_data import DUES, NOTIFICATION_LEDGER
from cron_pipelines.defs.sharding import delivery_asset
from cron_pipelines.resources import MailerResource, MetricsResource, MongoServiceResource, SqlServiceResource
from cron_pipelines.rules import payments as rules

JOB = "send_payment_reminders"
PAYMENT_REMINDERS = dg.AssetKey("payment_reminders")


class PaymentRemindersConfig(dg.Config, rules.PaymentReminderPolicy, DeliveryThresholds):
    pass


def payment_reminders(
    context: dg.AssetExecutionContext,
    config: PaymentRemindersConfig,
    sql_service: SqlServiceResource,
    mongo_service: MongoServiceResource,
    mailer: MailerResource,
    metrics: MetricsResource,
) -> dg.MaterializeResult:
    """Reminds users of pending dues due a configured number of days ahead (reminder_days_before)."""
    return notify_about_dues(
        context,
        "pending",
        config.window,
        lambda dues, day: rules.payment_reminders(dues, day, config),
        sql_service,
        mongo_service,
        mailer,
        metrics,
    )


def definitions(options: DailyOptions) -> dg.Definitions:
    asset = delivery_asset(
        payment_reminders,
        key=PAYMENT_REMINDERS,
        shards=options.delivery_shards,
        retry_policy=options.retry_policy,
        deps=[DUES, NOTIFICATION_LEDGER],
        kinds={"python", "email"},
        partitions_def=options.partitions_def,
        group_name="payments",
        owners=["team:payments"],
    )
    return daily_job(
        JOB,
        [asset],
        at=(9, 0),
        options=options,
        sharded=True,
        description="Remind users of pending dues due in the configured number of days.",
    )
