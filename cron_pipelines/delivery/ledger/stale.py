"""Ledger health: which notifications were claimed and never finished (docs/services.md, "The ledger")."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from cron_pipelines.models.payloads import NotificationRecord, parse_instant


class StaleClaimPolicy(BaseModel):
    stale_after_minutes: int = Field(15, ge=1, description="A claim older than this without an outcome is stale.")
    sample_size: int = Field(50, ge=1, le=1000, description="How many stale keys the report lists.")

    def cutoff(self, as_of: datetime) -> datetime:
        return as_of - timedelta(minutes=self.stale_after_minutes)


def is_stale_claim(record: NotificationRecord, cutoff: datetime) -> bool:
    return record.status == "claimed" and parse_instant(record.claimed_at) < cutoff
