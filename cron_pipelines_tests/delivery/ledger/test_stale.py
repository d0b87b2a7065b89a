"""Stale ledger claims: still `claimed` after 15 minutes (docs/services.md, The business rules: maintenance)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from cron_pipelines.delivery.ledger.stale import StaleClaimPolicy, is_stale_claim
from cron_pipelines.models.payloads import NotificationRecord, format_instant

AS_OF = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = StaleClaimPolicy()


def record(claimed_at: str, status: str = "claimed") -> NotificationRecord:
    return NotificationRecord(
        idempotency_key="payment_reminder:due_123:2026-12-05:7",
        kind="payment_reminder",
        user_id="usr_9",
        recipient="a@example.com",
        status=status,
        run_id="run_1",
        job_name="send_payment_reminders",
        partition_key="2026-11-28",
        attempts=1,
        claimed_at=claimed_at,
        sent_at=claimed_at if status == "sent" else None,
    )


def minutes_ago(minutes: float) -> str:
    return format_instant(AS_OF - timedelta(minutes=minutes))


def test_default_cutoff_is_15_minutes_before_as_of() -> None:
    assert POLICY.stale_after_minutes == 15
    assert POLICY.cutoff(AS_OF) == datetime(2026, 11, 28, 11, 45, tzinfo=UTC)


def test_custom_cutoff() -> None:
    assert StaleClaimPolicy(stale_after_minutes=60).cutoff(AS_OF) == datetime(2026, 11, 28, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("minutes", "stale"),
    [(0, False), (14, False), (14.99, False), (15, False), (15.01, True), (16, True), (24 * 60, True)],
)
def test_claim_is_stale_only_when_older_than_15_minutes(minutes: float, stale: bool) -> None:
    assert is_stale_claim(record(minutes_ago(minutes)), POLICY.cutoff(AS_OF)) is stale


@pytest.mark.parametrize("status", ["sent", "failed", "skipped"])
def test_only_claimed_records_are_stale(status: str) -> None:
    assert is_stale_claim(record(minutes_ago(60), status), POLICY.cutoff(AS_OF)) is False


@pytest.mark.parametrize(
    ("claimed_at", "stale"),
    [
        ("2026-11-28T17:14:59+05:30", True),  # 11:44:59Z
        ("2026-11-28T17:15:00+05:30", False),  # 11:45:00Z, exactly the cutoff
        ("2026-11-28T06:44:59.999-05:00", True),
    ],
)
def test_claimed_at_is_compared_as_an_instant_whatever_its_offset(claimed_at: str, stale: bool) -> None:
    assert is_stale_claim(record(claimed_at), POLICY.cutoff(AS_OF)) is stale


def test_cutoff_in_a_business_zone_is_the_same_instant() -> None:
    as_of_kolkata = AS_OF.astimezone(ZoneInfo("Asia/Kolkata"))

    assert POLICY.cutoff(as_of_kolkata) == POLICY.cutoff(AS_OF)
    assert is_stale_claim(record(minutes_ago(16)), POLICY.cutoff(as_of_kolkata)) is True
    assert is_stale_claim(record(minutes_ago(14)), POLICY.cutoff(as_of_kolkata)) is False


@pytest.mark.parametrize("fields", [{"stale_after_minutes": 0}, {"sample_size": 0}, {"sample_size": 1001}])
def test_policy_refuses_out_of_range_numbers(fields: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        StaleClaimPolicy(**fields)
