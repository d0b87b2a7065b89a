"""Shards: one day's delivery split over S steps, each owning the users a stable hash gives it.

A user's notifications all fall in one shard, so a reader's digest is built in one
place, and the ledger keeps each key exactly once across shards whatever happens.
Records that name no user (malformed ones) are counted by shard 0 only, so the sums
over shards equal what one step would report. The mail server's limits are totals
for the run: the shards share MAIL_MAX_CONNECTIONS and MAIL_RATE_LIMIT_PER_SECOND.

With DELIVERY_SHARDS=1 (the default) a notification asset is one step. Above 1, the
asset is a graph of Dagster's own fan-out:

    plan_<asset>_shards ──▶ deliver_<asset>[0_of_S] … [S-1_of_S] ──▶ sum_<asset>_shards

The plan step decides S for the run (run config `shards`, else the run's
`cron_pipelines/shards` tag, else DELIVERY_SHARDS). Each delivery step is the asset's
own delivery on its share of the users, with the step retry policy, its own journal and
the stop rules of every delivery; the executor (multiprocess, Celery, Kubernetes) decides
where the steps run. The sum step reads what each shard reported in the run's event log
and materializes the asset once, with the totals, a per-shard breakdown and the delivery
check. Steps pass nothing through an IO manager: they share the instance.
"""

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dagster as dg
from pydantic import Field

from cron_pipelines.delivery.stats import SAMPLE_EMAIL
from cron_pipelines.factory.checks import DeliveryThresholds, delivery_check_result, delivery_check_spec

MAX_SHARDS = 64  # as MAIL_MAX_CONNECTIONS: every shard needs an SMTP session of its own
# The number of shards a run's delivery fans out over, when a run sets its own.
SHARDS_TAG = "cron_pipelines/shards"
_MAPPING_KEY = re.compile(r"(\d{1,2})_of_(\d{1,2})")

Item = TypeVar("Item")


def shard_index(user_id: str, count: int) -> int:
    """The shard of a user: a hash that every process and machine computes alike (unlike `hash`)."""
    digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based); `Shard(0, 1)` is the whole day, as one step."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 0 <= self.index < self.count:
            raise ValueError(f"no shard {self.index} of {self.count} (1 to {MAX_SHARDS} shards)")

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    @property
    def mapping_key(self) -> str:
        """Its name in a step key, e.g. `deliver_payment_reminders[2_of_4]`."""
        return f"{self.index}_of_{self.count}"

    @classmethod
    def from_mapping_key(cls, mapping_key: str | None) -> "Shard":
        if mapping_key is None:
            return cls()
        match = _MAPPING_KEY.fullmatch(mapping_key)
        if match is None:
            raise ValueError(f"not a shard's mapping key: {mapping_key!r}")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def all_of(cls, count: int) -> list["Shard"]:
        return [cls(index, count) for index in range(count)]

    def select(self, records: Iterable[Item]) -> Iterator[Item]:
        """This shard's share of a stream: records with a `user_id` by its hash, the rest on shard 0."""
        if self.is_whole:  # the stream as it is: one step costs nothing more than before sharding
            return iter(records)
        return (record for record in records if self._owns(getattr(record, "user_id", None)))

    def _owns(self, user_id: object) -> bool:
        return (shard_index(user_id, self.count) if isinstance(user_id, str) else 0) == self.index

    def connections(self, total: int) -> int:
        """This shard's share of `total` SMTP sessions; the shares add up to `total`."""
        share = total // self.count + (1 if self.index < total % self.count else 0)
        if share < 1:
            raise ValueError(f"{self.count} shards need at least {self.count} mail connections, not {total}")
        return share

    def rate(self, total: float | None) -> float | None:
        """This shard's share of a messages-per-second limit (None: no limit)."""
        return None if total is None else total / self.count


SHARD_KEY = "shard"
THRESHOLDS_KEY = "delivery_thresholds"
SHARDS_BREAKDOWN = "shards"
_BREAKDOWN_COUNTS = ("claimed", "duplicate", "sent", "failed", "skipped", "left_claimed", "digest_emails")
_SAMPLE_SIZE = 10


class ShardPlanConfig(dg.Config):
    shards: int | None = Field(
        None,
        ge=1,
        le=MAX_SHARDS,
        description=f"Shards of this run's delivery; unset: the run's `{SHARDS_TAG}` tag, else DELIVERY_SHARDS.",
    )


# One shard's delivery: its step's context and the asset's config → the asset's metadata, counts included.
ShardDelivery = Callable[[dg.OpExecutionContext, DeliveryThresholds], Mapping[str, Any]]


def sharded_asset(
    deliver: ShardDelivery,
    *,
    key: dg.AssetKey,
    default_shards: int,
    config_schema: Mapping[str, Any],
    resource_keys: set[str],
    retry_policy: dg.RetryPolicy,
    thresholds: Callable[[Mapping[str, Any]], DeliveryThresholds],
    max_connections: Callable[[dg.OpExecutionContext], int],
    deps: Sequence[dg.AssetKey],
    **asset_args: Any,
) -> dg.AssetsDefinition:
    """The asset `key` as plan → S delivery steps → sum, each delivery step running `deliver` on its shard."""
    name = key.to_python_identifier()
    deliver_name = f"deliver_{name}"

    # The plan needs only the mail connections' total: no other resource starts in its process.
    @dg.op(
        name=f"plan_{name}_shards",
        ins={"upstream": dg.In(dg.Nothing)},
        out=dg.DynamicOut(dg.Nothing),
        required_resource_keys={"mailer"},
    )
    def plan(context: dg.OpExecutionContext, config: ShardPlanConfig) -> Iterator[dg.DynamicOutput[None]]:
        """How many shards deliver this run: one step each, their users by a stable hash of the user id."""
        count = shard_count(config.shards, context.run.tags.get(SHARDS_TAG), default_shards)
        try:
            shards = Shard.all_of(count)
            connections = [shard.connections(max_connections(context)) for shard in shards]
        except ValueError as exc:
            raise dg.Failure(description=f"cannot deliver in {count} shards: {exc}", allow_retries=False) from exc
        context.log.info("delivering in %d shard(s), with %s mail connection(s) each", count, connections)
        for shard in shards:
            yield dg.DynamicOutput(None, mapping_key=shard.mapping_key)

    @dg.op(
        name=deliver_name,
        ins={"planned": dg.In(dg.Nothing)},
        out=dg.Out(dg.Nothing),
        retry_policy=retry_policy,
        config_schema=config_schema,
        required_resource_keys=resource_keys,
        tags={"kind": "email"},
    )
    def deliver_shard(context: dg.OpExecutionContext) -> Iterator[dg.Output[None]]:
        """One shard's delivery: its metadata is the step's output, for the sum step."""
        config = thresholds(context.op_config)
        metadata = deliver(context, config)
        yield dg.Output(
            None,
            metadata={
                **metadata,
                SHARD_KEY: Shard.from_mapping_key(context.get_mapping_key()).mapping_key,
                THRESHOLDS_KEY: {"max_failed": config.max_failed, "max_skipped_ratio": config.max_skipped_ratio},
            },
        )

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
        thresholds_of_run = DeliveryThresholds.model_validate(reports[0][THRESHOLDS_KEY])
        metadata = {**total, SHARDS_BREAKDOWN: dg.MetadataValue.json(shard_breakdown(reports))}
        if isinstance(metadata.get(SAMPLE_EMAIL), str):
            metadata[SAMPLE_EMAIL] = dg.MetadataValue.md(metadata[SAMPLE_EMAIL])
        yield dg.Output(None, output_name="result", metadata=metadata)
        yield delivery_check_result(key, total, thresholds_of_run)

    # The upstream assets carry no data here (as `deps` of a one-step asset): Nothing inputs.
    upstream_ins = {dep.to_python_identifier(): dg.AssetIn(key=dep, dagster_type=dg.Nothing) for dep in deps}

    @dg.graph_asset(key=key, ins=upstream_ins, check_specs=[check_spec], **asset_args)
    def sharded(**upstream: Any) -> dict[str, Any]:
        delivered = plan(upstream=list(upstream.values())).map(lambda planned: deliver_shard(planned=planned)).collect()
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
