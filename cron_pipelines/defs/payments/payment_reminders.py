"""`send_payment_reminders`: remind users of pending dues shortly before they are due."""

import dagster as dg

from cron_pipelines.defs.payments._dues import deliver_dues
from cron_pipelines.defs.services_data import DUES, NOTIFICATION_LEDGER
from cron_pipelines.factory.checks import DeliveryConfig
from cron_pipelines.factory.daily import DailyOptions, daily_job
from cron_pipelines.factory.notification_asset import Delivery, NotificationAssetSpec, notification_asset
from cron_pipelines.resources import SqlServiceResource
from cron_pipelines.rules import payments as rules

JOB = "send_payment_reminders"
PAYMENT_REMINDERS = dg.AssetKey("payment_reminders")


class PaymentRemindersConfig(DeliveryConfig, rules.PaymentReminderPolicy):
    pass


def payment_reminders(delivery: Delivery, config: PaymentRemindersConfig, sql_service: SqlServiceResource) -> None:
    deliver_dues(
        delivery, "pending", config.window, lambda dues, day: rules.payment_reminders(dues, day, config), sql_service
    )


def definitions(options: DailyOptions) -> dg.Definitions:
    asset = notification_asset(
        payment_reminders,
        specs=[
            NotificationAssetSpec(
                PAYMENT_REMINDERS,
                "Reminds users of pending dues due a configured number of days ahead (reminder_days_before).",
                deps=[DUES, NOTIFICATION_LEDGER],
            )
        ],
        config=PaymentRemindersConfig,
        options=options,
        group_name="payments",
        owners=["team:payments"],
        resources=["sql_service"],
        shardable=True,
    )
    return daily_job(
        JOB,
        [asset],
        at=(9, 0),
        options=options,
        description="Remind users of pending dues due in the configured number of days.",
    )
