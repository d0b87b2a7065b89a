"""One realistic notification of every kind, made by the business rules themselves from sample
records, so a preview shows exactly what a run would send (`cron-pipelines preview`)."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

from babel import Locale
from babel.numbers import get_territory_currencies

from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import Due, DueUser, InactiveUser, Verification, format_instant
from cron_pipelines.rules.calendar import BusinessDay
from cron_pipelines.rules.inactivity import InactivityPolicy, account_deactivated, inactivity_warning
from cron_pipelines.rules.payments import OverduePolicy, PaymentReminderPolicy, overdue_notice, payment_reminder
from cron_pipelines.rules.verifications import (
    Decision,
    Reminder,
    VerificationPolicy,
    verification_reminder,
    verification_result,
)


def _currency_of(locale: str | None) -> str:
    """The currency of the reader's country (`de_DE` → EUR), for realistic figures; INR without one."""
    territory = Locale.parse(locale).territory if locale else None
    currencies = get_territory_currencies(territory) if territory else []
    return currencies[0] if currencies else "INR"


def sample_notifications(
    day: date, timezone: str = "UTC", locale: str | None = None
) -> dict[NotificationKind, Notification]:
    """One notification of every kind, for a reader in `locale` (None: a v1.0 reader, `en`)."""
    business_day = BusinessDay(day, ZoneInfo(timezone))
    reader = DueUser(id="usr_9", email="asha.rao@example.com", full_name="Asha Rao", locale=locale)

    def due(days_from_today: int, status: str) -> Due:
        return sample_due(day, days_from_today, status, reader)

    def instant(days_ago: int) -> str:
        return format_instant(business_day.start_of(day - timedelta(days=days_ago)) + timedelta(hours=9))

    inactive = InactiveUser(
        id="usr_9", email=reader.email, full_name=reader.full_name, status="active",
        last_login_at=instant(95), created_at=instant(900), locale=locale,
    )  # fmt: skip
    verification = Verification(
        id="ver_77", employee_id="emp_77", email="jonas.weber@example.com", full_name="Jonas Weber",
        status="pending", requested_at=instant(7), locale=locale,
    )  # fmt: skip
    reminder = payment_reminder(due(3, "pending"), day, PaymentReminderPolicy())
    notice = overdue_notice(due(-7, "overdue"), day, OverduePolicy())
    assert reminder is not None and notice is not None  # 3 days ahead and 7 late are default offsets
    samples = [
        reminder,
        notice,
        inactivity_warning(inactive, business_day, InactivityPolicy()),
        account_deactivated(inactive, business_day),
        verification_result(verification, Decision("verified", "a successful attempt"), business_day),
        verification_reminder(verification, Reminder(7), business_day, VerificationPolicy()),
        Notification(
            key="ops_alert:sample-run",
            kind=NotificationKind.OPS_ALERT,
            user_id=None,
            address="ops@example.com",
            name=None,
            context={
                "headline": "run failed",
                "summary": "Run sample-run of send_payment_reminders failed.",
                "job_name": "send_payment_reminders",
                "partition_key": day.isoformat(),
                "run_id": "sample-run",
                "run_url": "http://localhost:3000/runs/sample-run",
                "error": "mongo-service: POST /v1/notifications/claims status=503: service unavailable",
            },
        ),
    ]
    return {NotificationKind(notification.kind): notification for notification in samples}


def sample_due(
    day: date, days_from_today: int, status: str, reader: DueUser, *, number: int = 1042, cents: int = 125_000_00
) -> Due:
    return Due.model_validate(
        {
            "id": f"due_{number}",
            "user_id": reader.id,
            "amount_cents": cents,
            "currency": _currency_of(reader.locale),
            "due_date": day + timedelta(days=days_from_today),
            "status": status,
            "description": "Annual membership fee" if number % 2 == 0 else "Event ticket",
            "user": reader,
        }
    )


def sample_digest(day: date, kind: NotificationKind, locale: str | None = None) -> tuple[Notification, ...]:
    """Three dues of one digest reader owed on `day` (reminders 7, 3 and 1 days ahead, or notices
    1, 7 and 14 days late), made by the rules."""
    reader = DueUser(id="usr_9", email="asha.rao@example.com", full_name="Asha Rao", locale=locale)
    if kind is NotificationKind.PAYMENT_REMINDER:
        reminders = (
            payment_reminder(sample_due(day, days, "pending", reader, number=number, cents=cents), day, PaymentReminderPolicy())
            for days, number, cents in ((7, 1042, 125_000_00), (3, 1043, 4_500_00), (1, 1044, 12_000_00))
        )  # fmt: skip
        return tuple(notification for notification in reminders if notification is not None)
    if kind is NotificationKind.OVERDUE_NOTICE:
        notices = (
            overdue_notice(sample_due(day, -days, "overdue", reader, number=number, cents=cents), day, OverduePolicy())
            for days, number, cents in ((1, 1042, 125_000_00), (7, 1043, 4_500_00), (14, 1044, 12_000_00))
        )  # fmt: skip
        return tuple(notification for notification in notices if notification is not None)
    raise ValueError(f"{kind.value} has no digest")
