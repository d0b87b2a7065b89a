"""Notification assets whose delivery can fan out over shards, each one step (notifications/sharding.py).

With DELIVERY_SHARDS=1 (the default) a notification asset is one step, exactly as it
always was. Above 1, the asset is a graph of Dagster's own fan-out:

    plan_<asset>_shards ──▶ deliver_<asset>[0_of_S] … [S-1_of_S] ──▶ sum_<asset>_shards

The plan step decides S for the run (run config `shards`, else the run's
`cron_pipelines/shards` tag, else DELIVERY_SHARDS). Each delivery step is the asset's
own body on its share of the users, with the step retry policy, its own journal and
the stop rules of every delivery; the executor (multiprocess, Celery, Kubernetes)
decides where the steps run. The sum step reads what each shard reported in the run's
event log and materializes the asset once, with the totals, a per-shard breakdown and
the delivery check. Steps pass nothing through an IO manager: they share the instance.
"""

import functools
import inspect
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from cron_pipelines.defs.daily import SHARDS_TAG
from cron_pipelines.defs.delivery import (
    DeliveryThresholds,
    delivery_check_result,
    delivery_check_spec,
    guarded_step,
)
from cron_pipelines.delivery.stats import SAMPLE_EMAIL
from cron_pipelines.factory.sharding import MAX_SHARDS, Shard
from cron_pipelines.resources import MailerResource

SHARD_KEY = "shard"
THRESHOLDS_KEY = "delivery_thresholds"
SHARDS_BREAKDOWN = "shards"
_BREAKDOWN_COUNTS = ("claimed", "duplicate", "sent", "failed", "skipped", "left_claimed", "digest_emails")
_SAMPLE_SIZE = 10

# An asset body: (context, config, **resources) → the delivery's metadata, its counts included.
DeliveryBody = Callable[..., dg.MaterializeResult]


class ShardPlanConfig(dg.Config):
    shards: int | None = Field(
        None,
        ge=1,
        le=MAX_SHARDS,
        description=f"Shards of this run's delivery; unset: the run's `{SHARDS_TAG}` tag, else DELIVERY_SHARDS.",
    )


def delivery_asset(
    body: DeliveryBody, *, key: dg.AssetKey, shards: int, retry_policy: dg.RetryPolicy, **asset_args: Any
) -> dg.AssetsDefinition:
    """The asset `key` delivered by `body`: one step if `shards` is 1, else plan → S shards → sum."""
    body = guarded_step(body)
    if shards == 1:
        single: dg.AssetsDefinition = dg.asset(
            key=key, check_specs=[delivery_check_spec(key)], retry_policy=retry_policy, **asset_args
        )(_with_check(body, key))
        return single
    return _sharded_asset(body, key=key, default_shards=shards, retry_policy=retry_policy, **asset_args)


def _with_check(body: DeliveryBody, key: dg.AssetKey) -> DeliveryBody:
    @functools.wraps(body)
    def materialize(context: Any, *, config: DeliveryThresholds, **resources: Any) -> dg.MaterializeResult:
        result = body(context, config=config, **resources)
        metadata = dict(result.metadata or {})
        return dg.MaterializeResult(metadata=metadata, check_results=[delivery_check_result(key, metadata, config)])

    return materialize


def _as_shard_op_body(body: DeliveryBody) -> Callable[..., Iterator[dg.Output[None]]]:
    """`body` as the compute of one shard's step: its metadata becomes the step's output, for the sum step."""

    @functools.wraps(body)
    def deliver(context: Any, *, config: DeliveryThresholds, **resources: Any) -> Iterator[dg.Output[None]]:
        result = body(context, config=config, **resources)
        yield dg.Output(
            None,
            metadata={
                **(result.metadata or {}),
                SHARD_KEY: Shard.from_mapping_key(context.get_mapping_key()).mapping_key,
                THRESHOLDS_KEY: {"max_failed": config.max_failed, "max_skipped_ratio": config.max_skipped_ratio},
            },
        )

    # Dagster reads the signature for config and resources: the body's, as an op's generator.
    parameters = list(inspect.signature(body).parameters.values())
    parameters[0] = parameters[0].replace(annotation=dg.OpExecutionContext)
    deliver.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return deliver


def _sharded_asset(
    body: DeliveryBody,
    *,
    key: dg.AssetKey,
    default_shards: int,
    retry_policy: dg.RetryPolicy,
    deps: Sequence[dg.AssetKey],
    **asset_args: Any,
) -> dg.AssetsDefinition:
    name = key.to_python_identifier()
    deliver_name = f"deliver_{name}"

    @dg.op(name=f"plan_{name}_shards", ins={"upstream": dg.In(dg.Nothing)}, out=dg.DynamicOut(dg.Nothing))
    def plan(
        context: dg.OpExecutionContext, config: ShardPlanConfig, mailer: MailerResource
    ) -> Iterator[dg.DynamicOutput[None]]:
        """How many shards deliver this run: one step each, their users by a stable hash of the user id."""
        count = shard_count(config.shards, context.run.tags.get(SHARDS_TAG), default_shards)
        try:
            shards = Shard.all_of(count)
            connections = [shard.connections(mailer.max_connections) for shard in shards]
        except ValueError as exc:
            raise dg.Failure(description=f"cannot deliver in {count} shards: {exc}", allow_retries=False) from exc
        context.log.info("delivering in %d shard(s), with %s mail connection(s) each", count, connections)
        for shard in shards:
            yield dg.DynamicOutput(None, mapping_key=shard.mapping_key)

    deliver = dg.op(
        name=deliver_name,
        ins={"planned": dg.In(dg.Nothing)},
        out=dg.Out(dg.Nothing),
        retry_policy=retry_policy,
        tags={"kind": "email"},
    )(_as_shard_op_body(body))

    check_spec = delivery_check_spec(key)

    @dg.op(
        name=f"sum_{name}_shards",
        ins={"delivered": dg.In(dg.Nothing)},
        out={"result": dg.Out(dg.Nothing), "check": dg.Out(dg.Nothing)},
    )
    def sum_shards(context: dg.OpExecutionContext) -> Iterator[dg.Output[None] | dg.AssetCheckResult]:
        """One materialization for the run: the shards' counts summed, each shard's beside them."""
        reports = shard_reports(context.instance, context.run.run_id, deliver_name)
        total = merge_shard_reports(reports)
        thresholds = DeliveryThresholds.model_validate(reports[0][THRESHOLDS_KEY])
        metadata = {
            **total,
            SHARDS_BREAKDOWN: dg.MetadataValue.json(shard_breakdown(reports)),
        }
        if isinstance(metadata.get(SAMPLE_EMAIL), str):
            metadata[SAMPLE_EMAIL] = dg.MetadataValue.md(metadata[SAMPLE_EMAIL])
        yield dg.Output(None, output_name="result", metadata=metadata)
        yield delivery_check_result(key, total, thresholds)

    # The upstream assets carry no data here (as `deps` of a one-step asset): Nothing inputs.
    upstream_ins = {dep.to_python_identifier(): dg.AssetIn(key=dep, dagster_type=dg.Nothing) for dep in deps}

    @dg.graph_asset(key=key, ins=upstream_ins, check_specs=[check_spec], description=inspect.getdoc(body), **asset_args)
    def sharded(**upstream: Any) -> dict[str, Any]:
        delivered = plan(upstream=list(upstream.values())).map(lambda planned: deliver(planned=planned)).collect()
        result, check = sum_shards(delivered=delivered)
        return {"result": result, check_spec.get_python_identifier(): check}

    return sharded


def shard_count(configured: int | None, tag: str | None, default: int) -> int:
    """S for a run: its run config, else its tag, else the deployment's DELIVERY_SHARDS."""
    if configured is not None:
        return configured
    if tag is None:
        return default
    try:
        count = int(tag)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_SHARDS:
        raise dg.Failure(
            description=f"the run's `{SHARDS_TAG}` tag must be a whole number from 1 to {MAX_SHARDS}, not {tag!r}",
            allow_retries=False,
        )
    return count


def shard_reports(instance: dg.DagsterInstance, run_id: str, deliver_op: str) -> list[dict[str, Any]]:
    """What each shard's step reported (its output's metadata), in shard order; every shard must have.

    A re-execution of a failed run (run retries, "re-execute from failure") runs only the
    shards that had not finished: the others' reports are in the runs it re-executes.
    """
    reports: dict[int, dict[str, Any]] = {}
    count: int | None = None
    run = instance.get_run_by_id(run_id)
    while run is not None:
        for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records:
            event = record.event_log_entry.dagster_event
            if (
                event is None
                or event.step_key is None
                or not event.step_key.split(".")[-1].startswith(f"{deliver_op}[")
            ):
                continue
            metadata = {name: value.value for name, value in event.step_output_data.metadata.items()}
            shard = Shard.from_mapping_key(str(metadata.get(SHARD_KEY)))
            count = count or shard.count  # a re-execution keeps its parent's plan: the same S
            if shard.count == count:
                reports.setdefault(shard.index, metadata)
        run = instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    if count is None:
        raise dg.Failure(description="no shard of this run reported its delivery", allow_retries=False)
    missing = [Shard(index, count).mapping_key for index in range(count) if index not in reports]
    if missing:
        raise dg.Failure(
            description=f"shard(s) {', '.join(missing)} of this run reported no delivery: no total can be made",
            allow_retries=False,
        )
    return [reports[index] for index in range(count)]


def merge_shard_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The delivery's metadata over all shards: counts summed, samples and reasons pooled (bounded).

    Counts are the whole numbers; what every shard shares (the day, the window, the
    time zone) and the sample email are the first shard's; the duration is the longest.
    """
    total: dict[str, Any] = {}
    tallies: dict[str, Counter[str]] = {}  # skip reasons and the like: reason → count
    for report in reports:
        for name, value in report.items():
            if name in (SHARD_KEY, THRESHOLDS_KEY):
                continue
            if name == "duration_seconds":
                total[name] = max(total.get(name, 0.0), value)
            elif isinstance(value, int) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value
            elif isinstance(value, list):
                total[name] = [*total.get(name, []), *value][:_SAMPLE_SIZE]
            elif isinstance(value, dict):
                tally = tallies.setdefault(name, Counter())
                tally.update({str(reason): int(count) for reason, count in value.items()})
                total[name] = dict(tally.most_common(_SAMPLE_SIZE))
            elif value is not None:
                total.setdefault(name, value)
    return total


def shard_breakdown(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            SHARD_KEY: report[SHARD_KEY],
            **{name: report.get(name, 0) for name in _BREAKDOWN_COUNTS},
            "duration_seconds": report.get("duration_seconds"),
        }
        for report in reports
    ]
