"""The one way to build a notification asset: its step, checks, sharding, metadata and retries.

A job's module gives a `deliver` function and what the asset is; the factory makes the
Dagster side, the same for every job:
- one step (a multi-asset when one step delivers several assets, as verifications do),
  daily-partitioned on the business day, with the step retry policy, or, for a shardable
  asset with DELIVERY_SHARDS above 1, plan → one step per shard → sum (factory/sharding.py);
- the step's service calls under one budget and permanent errors failing it at once
  (factory/guard.py), its pipelines, transports and journal (factory/step.py);
- per asset one materialization, with the business day, the time taken, what `deliver`
  reported and the pipeline's counts (one schema for every notification asset), and the
  delivery check judged from them.

`deliver(delivery, config, **resources)` streams the day's notifications through
`delivery.pipeline(key)` (one pipeline per asset) and reports what it read with
`delivery.report(key, ...)`. Resources beyond the delivery's own are named in `resources`
and handed over by name.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from cron_pipelines.delivery.pipeline import NotificationPipeline
from cron_pipelines.factory.checks import DeliveryConfig, DeliveryThresholds, delivery_check_result, delivery_check_spec
from cron_pipelines.factory.daily import DailyOptions
from cron_pipelines.factory.guard import config_of, guarded
from cron_pipelines.factory.sharding import Shard, merge_shard_reports, sharded_asset
from cron_pipelines.factory.step import DeliveryStep, StepContext, delivery_step
from cron_pipelines.factory.summary import Stopwatch, business_day_of, summary_metadata
from cron_pipelines.resources import ServiceResource
from cron_pipelines.rules.calendar import BusinessDay

# What every delivery step uses, besides what its job names.
DELIVERY_RESOURCES = ("mongo_service", "mailer", "delivery", "metrics")
# The channel resources, by channel name.
CHANNEL_RESOURCES = {"email": "mailer", "webhook": "ops_webhook"}


@dataclass(frozen=True)
class NotificationAssetSpec:
    """One notification asset: its key, where it reads from, and how it shows in the catalog."""

    key: dg.AssetKey
    description: str
    deps: Sequence[dg.AssetKey] = ()
    kinds: frozenset[str] = frozenset({"python", "email"})


@dataclass
class Delivery:
    """What a notification asset's `deliver` works with: its day, its shard, a pipeline per asset."""

    context: StepContext
    day: BusinessDay
    step: DeliveryStep
    keys: Sequence[dg.AssetKey]
    source_chunk_size: int
    _pipelines: dict[tuple[dg.AssetKey, str], NotificationPipeline] = field(default_factory=dict)
    _reports: dict[dg.AssetKey, dict[str, Any]] = field(default_factory=dict)

    @property
    def shard(self) -> Shard:
        return self.step.shard

    def pipeline(self, key: dg.AssetKey | None = None, channel: str = "email") -> NotificationPipeline:
        """The pipeline of asset `key` (of the only asset when None) on `channel`, made on first use."""
        key = self._only(key)
        if (key, channel) not in self._pipelines:
            self._pipelines[key, channel] = self.step.pipeline(channel)
        return self._pipelines[key, channel]

    def report(self, key: dg.AssetKey | None = None, /, **metadata: Any) -> None:
        """Metadata asset `key` reports besides its counts (what it read, a service write's results)."""
        self._reports.setdefault(self._only(key), {}).update(metadata)

    def _only(self, key: dg.AssetKey | None) -> dg.AssetKey:
        if key is not None:
            return key
        (only,) = self.keys
        return only

    def metadata(self, key: dg.AssetKey, stopwatch: Stopwatch) -> dict[str, Any]:
        """What the asset reports: its day and time, what `deliver` reported, and its pipelines' counts summed."""
        channels = [channel for asset, channel in self._pipelines if asset == key] or ["email"]
        counts = merge_shard_reports([self.pipeline(key, channel).metadata() for channel in channels])
        return summary_metadata(self.day, stopwatch, **self._reports.get(key, {}), **counts)


Deliver = Callable[..., None]


def notification_asset(
    deliver: Deliver,
    *,
    specs: Sequence[NotificationAssetSpec],
    config: type[DeliveryConfig],
    options: DailyOptions,
    group_name: str,
    owners: Sequence[str],
    resources: Sequence[str] = (),
    name: str | None = None,
    shardable: bool = False,
    channels: Sequence[str] = ("email",),
    partitioned: bool = True,
) -> dg.AssetsDefinition:
    """The asset(s) of `specs`, delivered by `deliver` in one step (or fanned out, when `shardable`).

    An asset that is not `partitioned` (the ops alerts) acts for today in CRON_TIMEZONE.
    """
    resource_keys = {*DELIVERY_RESOURCES, *(CHANNEL_RESOURCES[channel] for channel in channels), *resources}
    keys = [spec.key for spec in specs]

    def run(context: StepContext, cfg: DeliveryThresholds) -> dict[dg.AssetKey, dict[str, Any]]:
        stopwatch = Stopwatch()
        named = {resource: getattr(context.resources, resource) for resource in resources}
        services = [
            value for value in (context.resources.mongo_service, *named.values()) if isinstance(value, ServiceResource)
        ]
        context.resources.metrics.observe(*(service.client for service in services))
        by_channel = {channel: getattr(context.resources, CHANNEL_RESOURCES[channel]) for channel in channels}
        with (
            guarded(context, services),
            delivery_step(
                context,
                context.resources.mongo_service,
                by_channel,
                context.resources.delivery,
                context.resources.metrics,
            ) as step,
        ):
            day = business_day_of(context) if partitioned else BusinessDay.today(options.settings.cron_timezone)
            delivery = Delivery(context, day, step, keys, context.resources.delivery.source_chunk_size)
            deliver(delivery, cfg, **named)
        return {key: delivery.metadata(key, stopwatch) for key in keys}

    def thresholds(op_config: Mapping[str, Any]) -> DeliveryThresholds:
        return config_of(config, op_config)

    if shardable and options.delivery_shards > 1:
        (spec,) = specs
        return sharded_asset(
            lambda context, cfg: run(context, cfg)[spec.key],
            key=spec.key,
            default_shards=options.delivery_shards,
            config_schema=config.to_fields_dict(),
            resource_keys=resource_keys,
            retry_policy=options.retry_policy,
            thresholds=thresholds,
            max_connections=lambda context: context.resources.mailer.max_connections,
            deps=spec.deps,
            partitions_def=options.partitions_def,
            group_name=group_name,
            owners=list(owners),
            kinds=set(spec.kinds),
            description=spec.description,
        )

    @dg.multi_asset(
        name=name or keys[0].to_python_identifier(),
        specs=[
            dg.AssetSpec(
                spec.key,
                deps=spec.deps,
                description=spec.description,
                kinds=set(spec.kinds),
                group_name=group_name,
                owners=list(owners),
            )
            for spec in specs
        ],
        check_specs=[delivery_check_spec(key) for key in keys],
        partitions_def=options.partitions_def if partitioned else None,
        retry_policy=options.retry_policy,
        required_resource_keys=resource_keys,
        config_schema=config.to_fields_dict(),
    )
    def assets(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        cfg = thresholds(context.op_execution_context.op_config)
        for key, metadata in run(context, cfg).items():
            yield dg.MaterializeResult(
                asset_key=key, metadata=metadata, check_results=[delivery_check_result(key, metadata, cfg)]
            )

    return assets
