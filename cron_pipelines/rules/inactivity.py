"""Who is warned about inactivity, who is deactivated, and what their emails say.

Pure functions of the business day, the users, their warning history and a policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import (
    Id,
    InactiveUser,
    InstantStr,
    NotificationRecord,
    parse_instant,
    usable_email,
)
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines.rules.calendar import BusinessDay
from cron_pipelines.rules.confirmations import resendable


class InactivityPolicy(BaseModel):
    warn_after_days: int = Field(30, ge=1, description="Warn users inactive before start(D) minus this many days.")
    deactivate_after_days: int = Field(
        90, ge=1, description="Deactivate users inactive before start(D) minus this many days."
    )
    warning_grace_days: int = Field(
        7, ge=0, description="A warning must have been sent on or before D minus this many days."
    )

    @model_validator(mode="after")
    def _ordered(self) -> InactivityPolicy:
        if self.deactivate_after_days <= self.warn_after_days:
            raise ValueError("deactivate_after_days must be greater than warn_after_days")
        return self


def inactivity_warning_key(user_id: str, last_active_at: str) -> str:
    return f"inactivity_warning:{user_id}:{last_active_at}"


def account_deactivated_key(user_id: str, last_active_at: str) -> str:
    return f"account_deactivated:{user_id}:{last_active_at}"


def is_inactive(user: InactiveUser, business_day: BusinessDay, days: int) -> bool:
    """Active account whose last activity is strictly before start(D) − `days` days."""
    return user.status == "active" and user.last_active_at_dt < business_day.days_before_start(days)


def deactivation_date(user: InactiveUser, business_day: BusinessDay, policy: InactivityPolicy) -> date:
    """The first day the deactivation job may deactivate this user if warned on D.

    Both conditions must hold: inactive before start(day − deactivate_after_days), i.e. the
    local last-active date plus that many days plus one, and D + grace for the warning.
    """
    last_active_day = business_day.local_date(user.last_active_at_dt)
    return max(
        last_active_day + timedelta(days=policy.deactivate_after_days + 1),
        business_day.plus_days(policy.warning_grace_days),
    )


def inactivity_warning(user: InactiveUser, business_day: BusinessDay, policy: InactivityPolicy) -> Notification:
    deactivation_day = deactivation_date(user, business_day, policy)
    return Notification(
        key=inactivity_warning_key(user.id, user.last_active_at),
        kind=NotificationKind.INACTIVITY_WARNING,
        user_id=user.id,
        address=user.email,
        name=user.full_name,
        context={
            "last_active_date": business_day.readers_date(user.last_active_at_dt, user.timezone),
            # The first instant the account may go, start(deactivation day), on the reader's calendar.
            "deactivation_date": business_day.readers_date(business_day.start_of(deactivation_day), user.timezone),
        },
        locale=user.locale,
        metadata={
            "last_active_at": user.last_active_at,
            "never_logged_in": user.last_login_at is None,
            "deactivation_date": deactivation_day.isoformat(),
        },
    )


class _UserKeyFields(BaseModel):
    """The part of a user the warning key needs, to record a skip for an otherwise malformed user."""

    id: Id
    last_login_at: InstantStr | None = None
    created_at: InstantStr


def inactivity_warnings(
    users: Iterable[InactiveUser | InvalidRecord], business_day: BusinessDay, policy: InactivityPolicy
) -> Iterator[Notification | InvalidRecord]:
    """A warning for each user inactive long enough; malformed users become recorded skips where keyable."""
    for user in users:
        if isinstance(user, InvalidRecord):
            yield _skip_for_malformed_user(user) or user
        elif is_inactive(user, business_day, policy.warn_after_days):
            yield inactivity_warning(user, business_day, policy)


def _skip_for_malformed_user(invalid: InvalidRecord) -> Notification | None:
    try:
        fields = _UserKeyFields.model_validate(invalid.raw)
    except ValidationError:
        return None
    last_active_at = fields.last_login_at or fields.created_at
    raw = invalid.raw if isinstance(invalid.raw, Mapping) else {}
    return Notification(
        key=inactivity_warning_key(fields.id, last_active_at),
        kind=NotificationKind.INACTIVITY_WARNING,
        user_id=fields.id,
        address=usable_email(raw.get("email")),
        name=None,
        metadata={"last_active_at": last_active_at},
        skip_reason=f"malformed user record: {invalid.reason}",
    )


WarningState = Literal["deactivate", "warned_now", "grace_pending", "warning_unconfirmed", "warning_skipped"]


def warning_state(
    claim_outcome: Literal["claimed", "duplicate"],
    record: NotificationRecord,
    business_day: BusinessDay,
    policy: InactivityPolicy,
) -> WarningState:
    """What claiming a user's inactivity warning says about deactivating them on D.

    The deactivation job claims the warning key of each candidate: `claimed` means no
    warning went out for this stretch yet, so it is sent now ("warns the rest");
    a `duplicate` carries the warning's record, which decides the deactivation.
    """
    if claim_outcome == "claimed":
        return "warned_now"
    if record.status == "sent" and record.sent_at is not None:
        sent_day = business_day.local_date(parse_instant(record.sent_at))
        if sent_day <= business_day.plus_days(-policy.warning_grace_days):
            return "deactivate"
        return "grace_pending"
    if record.status == "claimed":
        return "warning_unconfirmed"  # in flight, or its run died: maintenance reports it
    # `skipped`: the user cannot be mailed, so never warned; a `failed` warning is
    # re-claimed (outcome `claimed`) and never arrives here.
    return "warning_skipped"


def account_deactivated(user: InactiveUser, business_day: BusinessDay) -> Notification:
    return resendable(
        Notification(
            key=account_deactivated_key(user.id, user.last_active_at),
            kind=NotificationKind.ACCOUNT_DEACTIVATED,
            user_id=user.id,
            address=user.email,
            name=user.full_name,
            context={"last_active_date": business_day.readers_date(user.last_active_at_dt, user.timezone)},
            metadata={"last_active_at": user.last_active_at},
            locale=user.locale,
        )
    )
