"""What happens to a pending employee verification on day D: a decision, a reminder, or nothing.

Pure functions of the business day, the verification, its attempts and a policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import Verification, VerificationAttempt
from cron_pipelines.rules.calendar import BusinessDay
from cron_pipelines.rules.confirmations import resendable


class VerificationPolicy(BaseModel):
    max_failed_attempts: int = Field(5, ge=1, description="Reject after this many failed attempts.")
    expire_after_days: int = Field(14, ge=1, description="Expire when requested before start(D) minus this many days.")
    reminder_days_since_request: list[int] = Field(
        default=[3, 7, 10], description="Remind on these days after the request date."
    )
    reminder_quiet_days: int = Field(
        3, ge=0, description="No reminder when an attempt happened within this many days before as_of."
    )

    @field_validator("reminder_days_since_request")
    @classmethod
    def _positive(cls, days: list[int]) -> list[int]:
        if any(value < 1 for value in days):
            raise ValueError("reminder days must be positive")
        return sorted(set(days))


@dataclass(frozen=True)
class Decision:
    status: Literal["verified", "rejected", "expired"]
    reason: str


@dataclass(frozen=True)
class Reminder:
    days_since_request: int


def verification_result_key(verification_id: str, status: str) -> str:
    return f"verification_result:{verification_id}:{status}"


def verification_reminder_key(verification_id: str, days_since_request: int) -> str:
    return f"verification_reminder:{verification_id}:{days_since_request}"


def assess_verification(
    verification: Verification,
    attempts: Sequence[VerificationAttempt],
    business_day: BusinessDay,
    as_of: datetime,
    policy: VerificationPolicy,
) -> Decision | Reminder | None:
    """The contract's rules in their order: success, too many failures, expiry, reminder."""
    if verification.status != "pending":
        return None
    if any(attempt.outcome == "success" for attempt in attempts):
        return Decision("verified", "a verification attempt succeeded")
    failures = sum(attempt.outcome == "failure" for attempt in attempts)
    if failures >= policy.max_failed_attempts:
        return Decision("rejected", f"{failures} failed attempts (limit {policy.max_failed_attempts})")
    if verification.requested_at_dt < business_day.days_before_start(policy.expire_after_days):
        return Decision("expired", f"not completed within {policy.expire_after_days} days of the request")
    days_since_request = (business_day.day - business_day.local_date(verification.requested_at_dt)).days
    if days_since_request not in policy.reminder_days_since_request:
        return None
    quiet_since = as_of - timedelta(days=policy.reminder_quiet_days)
    if any(quiet_since <= attempt.attempted_at_dt < as_of for attempt in attempts):
        return None
    return Reminder(days_since_request)


def _requested_date(verification: Verification, business_day: BusinessDay) -> date:
    return business_day.readers_date(verification.requested_at_dt, verification.timezone)


def verification_result(verification: Verification, decision: Decision, business_day: BusinessDay) -> Notification:
    return resendable(
        Notification(
            key=verification_result_key(verification.id, decision.status),
            kind=NotificationKind.VERIFICATION_RESULT,
            user_id=verification.employee_id,
            address=verification.email,
            name=verification.full_name,
            context={"status": decision.status, "requested_date": _requested_date(verification, business_day)},
            metadata={"verification_id": verification.id, "status": decision.status, "reason": decision.reason},
            locale=verification.locale,
        )
    )


def verification_reminder(
    verification: Verification, reminder: Reminder, business_day: BusinessDay, policy: VerificationPolicy
) -> Notification:
    requested = business_day.local_date(verification.requested_at_dt)
    # The verification expires on the first day its request is more than expire_after_days old.
    expiry = requested + timedelta(days=policy.expire_after_days + 1)
    return Notification(
        key=verification_reminder_key(verification.id, reminder.days_since_request),
        kind=NotificationKind.VERIFICATION_REMINDER,
        user_id=verification.employee_id,
        address=verification.email,
        name=verification.full_name,
        context={
            "days_since_request": reminder.days_since_request,
            "requested_date": _requested_date(verification, business_day),
            # Expiry is start(expiry) in the business time zone, shown on the reader's calendar.
            "expiry_date": business_day.readers_date(business_day.start_of(expiry), verification.timezone),
        },
        metadata={"verification_id": verification.id, "days_since_request": reminder.days_since_request},
        locale=verification.locale,
    )
