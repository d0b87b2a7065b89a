"""The delivery check every notification asset carries, and the thresholds it judges by."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import BaseModel, Field

DELIVERY_CHECK = "delivery_within_thresholds"


class DeliveryThresholds(BaseModel):
    """When the delivery check of a notification asset fails."""

    max_failed: int = Field(0, ge=0, description="The check fails when more notifications than this failed.")
    max_skipped_ratio: float = Field(
        0.05, ge=0, le=1, description="The check warns when more than this share of claimed notifications was skipped."
    )


class DeliveryConfig(dg.Config, DeliveryThresholds):
    """A notification asset's run config: its delivery thresholds, and its job's business policy beside them."""


def delivery_check_spec(asset_key: dg.AssetKey | str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        DELIVERY_CHECK,
        asset=asset_key,
        description=(
            "Fails when notifications failed or were left claimed without an outcome; "
            "warns when too many were skipped (bad recipients, malformed records)."
        ),
    )


def delivery_check_result(
    asset_key: dg.AssetKey | str, counts: Mapping[str, Any], thresholds: DeliveryThresholds
) -> dg.AssetCheckResult:
    """The check of a delivery from its counts (a pipeline's `metadata()`, or the sum over shards)."""
    failed, skipped, claimed = counts.get("failed", 0), counts.get("skipped", 0), counts.get("claimed", 0)
    invalid, left_claimed = counts.get("invalid", 0), counts.get("left_claimed", 0)
    # A user's own opt-out is not a delivery problem.
    skipped_ratio = (skipped - counts.get("opted_out", 0) + invalid) / max(claimed + invalid, 1)
    # Claimed with no outcome recorded: each is an email nobody knows the fate of.
    too_many_failed = failed > thresholds.max_failed or left_claimed > 0
    too_many_skipped = skipped_ratio > thresholds.max_skipped_ratio
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey.from_coercible(asset_key),
        check_name=DELIVERY_CHECK,
        passed=not (too_many_failed or too_many_skipped),
        severity=dg.AssetCheckSeverity.ERROR if too_many_failed else dg.AssetCheckSeverity.WARN,
        metadata={
            "failed": failed,
            "left_claimed": left_claimed,
            "skipped": skipped,
            "opted_out": counts.get("opted_out", 0),
            "invalid": invalid,
            "skipped_ratio": round(skipped_ratio, 4),
            "max_failed": thresholds.max_failed,
            "max_skipped_ratio": thresholds.max_skipped_ratio,
        },
    )
