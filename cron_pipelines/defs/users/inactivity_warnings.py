"""`notify_inactive_users`: warn users inactive for a while, once per inactive stretch."""

import dagster as dg

from cron_pipelines.defs.daily import DailyOptions, daily_job
from cron_pipelines.defs.delivery import (
    DeliveryThresholds,
    Stopwatch,
    business_day_of,
    delivery_check_result,
    delivery_check_spec,
    delivery_step,
    guarded_step,
    summary_metadata,
)
from cron_pipelines.defs.services_data import NOTIFICATION_LEDGER, USER_ACTIVITY
from cron_pipelines.resources import MailerResource, MetricsResource, MongoServiceResource
from cron_pipelines.rules import inactivity as rules

JOB = "notify_inactive_users"
INACTIVITY_WARNINGS = dg.AssetKey("inactivity_warnings")


class InactivityConfig(dg.Config, rules.InactivityPolicy, DeliveryThresholds):
    pass


def inactivity_warnings(
    context: dg.AssetExecutionContext,
    config: InactivityConfig,
    mongo_service: MongoServiceResource,
    mailer: MailerResource,
    metrics: MetricsResource,
) -> dg.MaterializeResult:
    """Warns each user inactive for warn_after_days, once per inactive stretch, naming the deactivation business_day."""
    stopwatch = Stopwatch()
    metrics.observe(mongo_service.client)
    business_day = business_day_of(context)
    cutoff = business_day.days_before_start(config.warn_after_days)
    with delivery_step(context, mongo_service, mailer, metrics) as step:
        pipeline = step.pipeline()
        users = mongo_service.client.iter_inactive_users(last_active_before=cutoff)
        pipeline.deliver(rules.inactivity_warnings(users, business_day, config))
    return dg.MaterializeResult(
        metadata=summary_metadata(business_day, stopwatch, inactive_before=cutoff.isoformat(), **pipeline.metadata()),
        check_results=[delivery_check_result(context.asset_key, pipeline.metadata(), config)],
    )


def definitions(options: DailyOptions) -> dg.Definitions:
    asset = dg.asset(
        key=INACTIVITY_WARNINGS,
        deps=[USER_ACTIVITY, NOTIFICATION_LEDGER],
        kinds={"python", "email"},
        check_specs=[delivery_check_spec(INACTIVITY_WARNINGS)],
        partitions_def=options.partitions_def,
        retry_policy=options.retry_policy,
        group_name="user_lifecycle",
        owners=["team:accounts"],
    )(guarded_step(inactivity_warnings))
    return daily_job(
        JOB,
        [asset],
        at=(10, 0),
        options=options,
        description="Warn users inactive for the configured number of days, naming their deactivation business_day.",
    )
