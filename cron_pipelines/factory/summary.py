"""What every business asset reports besides its counts: its business day, its time zone, how long it took."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from cron_pipelines.delivery.ledger.session import RunInfo
from cron_pipelines.delivery.stats import SAMPLE_EMAIL
from cron_pipelines.rules.calendar import BusinessDay


def business_day_of(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> BusinessDay:
    partitions_def = context.assets_def.partitions_def
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    return BusinessDay.from_partition_key(context.partition_key, partitions_def.timezone)


def run_info(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> RunInfo:
    partition_key = context.partition_key if context.has_partition_key else None
    return RunInfo(run_id=context.run.run_id, job_name=context.job_name, partition_key=partition_key)


class Stopwatch:
    def __init__(self) -> None:
        self._started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self._started, 3)


def prefixed(prefix: str, counts: Mapping[str, int], names: Iterable[str]) -> dict[str, int]:
    """Counts under one prefix (`write.marked`, `decision.expired`), every name present, zero or not."""
    return {f"{prefix}.{name}": counts.get(name, 0) for name in names}


def summary_metadata(business_day: BusinessDay, stopwatch: Stopwatch, **extra: Any) -> dict[str, Any]:
    return {
        "business_date": business_day.day.isoformat(),
        "timezone": str(business_day.timezone),
        "duration_seconds": stopwatch.seconds,
        # The UI renders it as Markdown: what a recipient of this run read.
        **{name: dg.MetadataValue.md(value) if name == SAMPLE_EMAIL else value for name, value in extra.items()},
    }
