"""`notify_inactive_users`: warn users inactive for a while, once per inactive stretch."""

import dagster as dg

from cron_pipelines.defs.services_data import NOTIFICATION_LEDGER, USER_ACTIVITY
from cron_pipelines.factory.checks import DeliveryConfig
from cron_pipelines.factory.daily import DailyOptions, daily_job
from cron_pipelines.factory.notification_asset import Delivery, NotificationAssetSpec, notification_asset
from cron_pipelines.resources import MongoServiceResource
from cron_pipelines.rules import inactivity as rules

JOB = "notify_inactive_users"
INACTIVITY_WARNINGS = dg.AssetKey("inactivity_warnings")


class InactivityConfig(DeliveryConfig, rules.InactivityPolicy):
    pass


def inactivity_warnings(delivery: Delivery, config: InactivityConfig, mongo_service: MongoServiceResource) -> None:
    cutoff = delivery.day.days_before_start(config.warn_after_days)
    users = mongo_service.client.iter_inactive_users(last_active_before=cutoff)
    delivery.pipeline().deliver(rules.inactivity_warnings(users, delivery.day, config))
    delivery.report(inactive_before=cutoff.isoformat())


def definitions(options: DailyOptions) -> dg.Definitions:
    asset = notification_asset(
        inactivity_warnings,
        specs=[
            NotificationAssetSpec(
                INACTIVITY_WARNINGS,
                "Warns each user inactive for warn_after_days, once per inactive stretch, naming the deactivation day.",
                deps=[USER_ACTIVITY, NOTIFICATION_LEDGER],
            )
        ],
        config=InactivityConfig,
        options=options,
        group_name="user_lifecycle",
        owners=["team:accounts"],
        resources=["mongo_service"],
    )
    return daily_job(
        JOB,
        [asset],
        at=(10, 0),
        options=options,
        description="Warn users inactive for the configured number of days, naming their deactivation business_day.",
    )
