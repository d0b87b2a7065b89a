"""Who is reminded of a payment, which dues become overdue, who gets an overdue notice.

Pure functions of the business day, the dues and a policy; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import Due, Id, usable_email, usable_id
from cron_pipelines.models.records import InvalidRecord


def _non_negative_days(days: list[int]) -> list[int]:
    if not days or any(value < 0 for value in days):
        raise ValueError("must be a non-empty list of non-negative day counts")
    return sorted(set(days), reverse=True)


class PaymentReminderPolicy(BaseModel):
    reminder_days_before: list[int] = Field(
        default=[7, 3, 1, 0], description="Remind when a pending due is this many days away."
    )

    _check_days = field_validator("reminder_days_before")(_non_negative_days)

    def window(self, day: date) -> tuple[date, date]:
        """The `due_from`, `due_to` range of dues that may need a reminder on `day`."""
        return day, day + timedelta(days=max(self.reminder_days_before))


class OverduePolicy(BaseModel):
    notice_days_past_due: list[int] = Field(
        default=[1, 7, 14, 30], description="Send a notice when an overdue due is this many days late."
    )

    _check_days = field_validator("notice_days_past_due")(_non_negative_days)

    def notice_window(self, day: date) -> tuple[date, date]:
        """The `due_from`, `due_to` range of overdue dues that may need a notice on `day`."""
        return day - timedelta(days=max(self.notice_days_past_due)), day - timedelta(days=1)


def _due_context(due: Due) -> dict[str, Any]:
    # Raw values: the composer formats them for the reader's locale (Babel).
    return {
        "amount_cents": due.amount_cents,
        "currency": due.currency,
        "description": due.description,
        "due_date": due.due_date,
    }


def payment_reminder_key(due_id: str, due_date: date, days_before: int) -> str:
    return f"payment_reminder:{due_id}:{due_date.isoformat()}:{days_before}"


def overdue_notice_key(due_id: str, due_date: date, days_past_due: int) -> str:
    return f"overdue_notice:{due_id}:{due_date.isoformat()}:{days_past_due}"


def payment_reminder(due: Due, day: date, policy: PaymentReminderPolicy) -> Notification | None:
    days_before = (due.due_date - day).days
    if due.status != "pending" or days_before not in policy.reminder_days_before:
        return None
    return Notification(
        key=payment_reminder_key(due.id, due.due_date, days_before),
        kind=NotificationKind.PAYMENT_REMINDER,
        user_id=due.user_id,
        address=due.user.email,
        name=due.user.full_name,
        context={**_due_context(due), "days_before": days_before},
        metadata={"due_id": due.id, "due_date": due.due_date.isoformat(), "days_before": days_before},
        locale=due.user.locale,
    )


def overdue_notice(due: Due, day: date, policy: OverduePolicy) -> Notification | None:
    days_past_due = (day - due.due_date).days
    if due.status != "overdue" or days_past_due not in policy.notice_days_past_due:
        return None
    return Notification(
        key=overdue_notice_key(due.id, due.due_date, days_past_due),
        kind=NotificationKind.OVERDUE_NOTICE,
        user_id=due.user_id,
        address=due.user.email,
        name=due.user.full_name,
        context={**_due_context(due), "days_past_due": days_past_due},
        metadata={"due_id": due.id, "due_date": due.due_date.isoformat(), "days_past_due": days_past_due},
        locale=due.user.locale,
    )


def must_mark_overdue(due: Due, day: date) -> bool:
    return due.status == "pending" and due.due_date < day


class _DueKeyFields(BaseModel):
    """The part of a due its idempotency key needs, to record a skip for an otherwise malformed due."""

    id: Id
    due_date: date


def _skip_for_malformed_due(
    invalid: InvalidRecord,
    kind: NotificationKind,
    offset_of: Callable[[date], int],
    offsets: list[int],
    key_of: Callable[[str, date, int], str],
) -> Notification | None:
    try:
        fields = _DueKeyFields.model_validate(invalid.raw)
    except ValidationError:
        return None  # not even a key can be formed: the caller counts it as invalid
    offset = offset_of(fields.due_date)
    if offset not in offsets:
        return None
    raw = invalid.raw if isinstance(invalid.raw, Mapping) else {}
    user = raw.get("user")
    return Notification(
        key=key_of(fields.id, fields.due_date, offset),
        kind=kind,
        # Whatever else is wrong, keep what identifies the user for the audit trail.
        user_id=usable_id(raw.get("user_id")),
        address=usable_email(user.get("email")) if isinstance(user, Mapping) else None,
        name=None,
        metadata={"due_id": fields.id, "due_date": fields.due_date.isoformat()},
        skip_reason=f"malformed due record: {invalid.reason}",
    )


def _notifications_for_dues(
    dues: Iterable[Due | InvalidRecord],
    notification_for: Callable[[Due], Notification | None],
    skip_for_malformed: Callable[[InvalidRecord], Notification | None],
) -> Iterator[Notification | InvalidRecord]:
    for due in dues:
        if isinstance(due, InvalidRecord):
            yield skip_for_malformed(due) or due
        elif (notification := notification_for(due)) is not None:
            yield notification


def payment_reminders(
    dues: Iterable[Due | InvalidRecord], day: date, policy: PaymentReminderPolicy
) -> Iterator[Notification | InvalidRecord]:
    """The reminders `day` owes, in the order of `dues`; malformed dues become recorded skips where keyable."""
    return _notifications_for_dues(
        dues,
        lambda due: payment_reminder(due, day, policy),
        lambda invalid: _skip_for_malformed_due(
            invalid,
            NotificationKind.PAYMENT_REMINDER,
            lambda due_date: (due_date - day).days,
            policy.reminder_days_before,
            payment_reminder_key,
        ),
    )


def overdue_notices(
    dues: Iterable[Due | InvalidRecord], day: date, policy: OverduePolicy
) -> Iterator[Notification | InvalidRecord]:
    """The overdue notices `day` owes; malformed dues become recorded skips where keyable."""
    return _notifications_for_dues(
        dues,
        lambda due: overdue_notice(due, day, policy),
        lambda invalid: _skip_for_malformed_due(
            invalid,
            NotificationKind.OVERDUE_NOTICE,
            lambda due_date: (day - due_date).days,
            policy.notice_days_past_due,
            overdue_notice_key,
        ),
    )
