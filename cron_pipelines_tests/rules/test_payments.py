"""Payment reminders, overdue marks and overdue notices (docs/services.md, The business rules: send_payment_reminders, mark_overdue_dues)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import Due, DueUser
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines.rules.payments import (
    OverduePolicy,
    PaymentReminderPolicy,
    must_mark_overdue,
    overdue_notice,
    overdue_notices,
    payment_reminder,
    payment_reminders,
)

D = date(2026, 11, 28)


def days_from_d(days: int) -> date:
    return D + timedelta(days=days)


def make_due(
    *,
    due_date: date,
    status: str = "pending",
    due_id: str = "due_123",
    amount_cents: int = 125000,
    currency: str = "INR",
    description: str | None = "Membership fee",
    email: str | None = "a@example.com",
    full_name: str | None = "Asha Rao",
) -> Due:
    return Due(
        id=due_id,
        user_id="usr_9",
        amount_cents=amount_cents,
        currency=currency,
        due_date=due_date,
        status=status,
        description=description,
        user=DueUser(id="usr_9", email=email, full_name=full_name),
    )


def raw_due(**overrides: Any) -> dict[str, Any]:
    """A due as the service sent it (before validation)."""
    raw: dict[str, Any] = {
        "id": "due_bad",
        "user_id": "usr_9",
        "amount_cents": 125000,
        "currency": "INR",
        "due_date": days_from_d(3).isoformat(),
        "status": "pending",
        "description": "Membership fee",
        "user": {"id": "usr_9", "email": "a@example.com", "full_name": "Asha Rao"},
    }
    raw.update(overrides)
    return raw


def rejected(raw: Any, reason: str = "amount_cents: Input should be a valid integer") -> InvalidRecord:
    record_id = raw.get("id") if isinstance(raw, dict) else None
    return InvalidRecord(record_id=str(record_id) if record_id is not None else None, reason=reason, raw=raw)


DEFAULT_REMINDERS = PaymentReminderPolicy()
DEFAULT_OVERDUE = OverduePolicy()


# --- payment reminders: which offsets ------------------------------------------------


@pytest.mark.parametrize(
    ("days_before", "expected_key"),
    [
        (7, "payment_reminder:due_123:2026-12-05:7"),
        (3, "payment_reminder:due_123:2026-12-01:3"),
        (1, "payment_reminder:due_123:2026-11-29:1"),
        (0, "payment_reminder:due_123:2026-11-28:0"),
    ],
)
def test_pending_due_gets_a_reminder_on_each_policy_offset(days_before: int, expected_key: str) -> None:
    notification = payment_reminder(make_due(due_date=days_from_d(days_before)), D, DEFAULT_REMINDERS)

    assert notification is not None
    assert notification.key == expected_key
    assert notification.kind is NotificationKind.PAYMENT_REMINDER
    assert notification.user_id == "usr_9"
    assert notification.address == "a@example.com"
    assert notification.name == "Asha Rao"
    assert notification.skip_reason is None
    assert notification.context["days_before"] == days_before
    assert notification.metadata == {
        "due_id": "due_123",
        "due_date": days_from_d(days_before).isoformat(),
        "days_before": days_before,
    }


@pytest.mark.parametrize("days_before", [2, 4, 5, 6, 8, 14, -1, -7])
def test_no_reminder_off_the_policy_offsets(days_before: int) -> None:
    assert payment_reminder(make_due(due_date=days_from_d(days_before)), D, DEFAULT_REMINDERS) is None


@pytest.mark.parametrize("status", ["overdue", "paid", "cancelled"])
@pytest.mark.parametrize("days_before", [7, 3, 1, 0])
def test_no_reminder_for_a_due_that_is_not_pending(status: str, days_before: int) -> None:
    due = make_due(due_date=days_from_d(days_before), status=status)

    assert payment_reminder(due, D, DEFAULT_REMINDERS) is None


def test_reminders_stream_keeps_only_owed_reminders_in_input_order() -> None:
    dues = [make_due(due_id=f"due_{offset}", due_date=days_from_d(offset)) for offset in range(-2, 10)]
    dues.append(make_due(due_id="due_paid", due_date=days_from_d(3), status="paid"))

    keys = [item.key for item in payment_reminders(dues, D, DEFAULT_REMINDERS)]

    assert keys == [
        "payment_reminder:due_0:2026-11-28:0",
        "payment_reminder:due_1:2026-11-29:1",
        "payment_reminder:due_3:2026-12-01:3",
        "payment_reminder:due_7:2026-12-05:7",
    ]


def test_reminder_key_is_the_same_for_every_run_of_the_same_day() -> None:
    due = make_due(due_date=days_from_d(3))

    assert payment_reminder(due, D, DEFAULT_REMINDERS) == payment_reminder(due, D, DEFAULT_REMINDERS)


def test_the_same_due_gets_a_distinct_key_on_each_reminder_day() -> None:
    due = make_due(due_date=date(2026, 12, 5))
    keys = {
        notification.key
        for day in (date(2026, 11, 28), date(2026, 12, 2), date(2026, 12, 4), date(2026, 12, 5))
        if (notification := payment_reminder(due, day, DEFAULT_REMINDERS)) is not None
    }

    assert keys == {
        "payment_reminder:due_123:2026-12-05:7",
        "payment_reminder:due_123:2026-12-05:3",
        "payment_reminder:due_123:2026-12-05:1",
        "payment_reminder:due_123:2026-12-05:0",
    }


# --- payment reminders: the policy ----------------------------------------------------


def test_default_policy_reads_dues_from_d_to_d_plus_7() -> None:
    assert set(DEFAULT_REMINDERS.reminder_days_before) == {7, 3, 1, 0}
    assert DEFAULT_REMINDERS.window(D) == (date(2026, 11, 28), date(2026, 12, 5))


def test_custom_policy_window_ends_at_its_largest_offset() -> None:
    assert PaymentReminderPolicy(reminder_days_before=[5, 2]).window(D) == (date(2026, 11, 28), date(2026, 12, 3))


@pytest.mark.parametrize(
    ("days_before", "reminded"), [(5, True), (2, True), (7, False), (3, False), (1, False), (0, False)]
)
def test_custom_policy_reminds_only_on_its_own_offsets(days_before: int, reminded: bool) -> None:
    policy = PaymentReminderPolicy(reminder_days_before=[5, 2])

    notification = payment_reminder(make_due(due_date=days_from_d(days_before)), D, policy)

    assert (notification is not None) is reminded
    if notification is not None:
        assert notification.key == f"payment_reminder:due_123:{days_from_d(days_before).isoformat()}:{days_before}"


def test_policy_offsets_are_deduplicated_and_sorted() -> None:
    assert PaymentReminderPolicy(reminder_days_before=[1, 7, 1, 3]).reminder_days_before == [7, 3, 1]


@pytest.mark.parametrize("days", [[], [3, -1]])
def test_policy_refuses_empty_or_negative_offsets(days: list[int]) -> None:
    with pytest.raises(ValidationError):
        PaymentReminderPolicy(reminder_days_before=days)
    with pytest.raises(ValidationError):
        OverduePolicy(notice_days_past_due=days)


# --- payment reminders: what the email says ---------------------------------------------


def test_reminder_context_carries_the_raw_values_the_template_formats_for_the_reader() -> None:
    notification = payment_reminder(make_due(due_date=days_from_d(7)), D, DEFAULT_REMINDERS)

    assert notification is not None
    assert notification.context == {
        "amount_cents": 125000,
        "currency": "INR",
        "description": "Membership fee",
        "due_date": date(2026, 12, 5),
        "days_before": 7,
    }
    assert notification.locale is None  # a v1.0 user: the composer writes `en`


def test_reminder_carries_the_readers_locale() -> None:
    due = Due.model_validate(
        {**make_due(due_date=D).model_dump(), "user": {"id": "usr_9", "email": "a@example.com", "locale": "de-DE"}}
    )

    notification = payment_reminder(due, D, DEFAULT_REMINDERS)

    assert notification is not None and notification.locale == "de_DE"


def test_reminder_without_description_leaves_the_wording_to_the_template() -> None:
    notification = payment_reminder(make_due(due_date=D, description=None), D, DEFAULT_REMINDERS)

    assert notification is not None
    assert notification.context["description"] is None


def test_reminder_keeps_a_missing_recipient_for_the_mailer_to_skip() -> None:
    notification = payment_reminder(make_due(due_date=D, email=None, full_name=None), D, DEFAULT_REMINDERS)

    assert notification is not None
    assert (notification.address, notification.name, notification.skip_reason) == (None, None, None)


# --- payment reminders: malformed dues ----------------------------------------------------


@pytest.mark.parametrize(
    ("days_before", "expected_key"),
    [
        (7, "payment_reminder:due_bad:2026-12-05:7"),
        (3, "payment_reminder:due_bad:2026-12-01:3"),
        (1, "payment_reminder:due_bad:2026-11-29:1"),
        (0, "payment_reminder:due_bad:2026-11-28:0"),
    ],
)
def test_malformed_due_on_a_reminder_day_becomes_a_recorded_skip(days_before: int, expected_key: str) -> None:
    record = rejected(raw_due(amount_cents="lots", due_date=days_from_d(days_before).isoformat()))

    [item] = list(payment_reminders([record], D, DEFAULT_REMINDERS))

    assert isinstance(item, Notification)
    assert item.key == expected_key
    assert item.kind is NotificationKind.PAYMENT_REMINDER
    assert item.skip_reason == "malformed due record: amount_cents: Input should be a valid integer"
    assert item.user_id == "usr_9"
    assert item.address == "a@example.com"
    assert item.metadata["due_id"] == "due_bad"
    assert item.metadata["due_date"] == days_from_d(days_before).isoformat()


def test_malformed_due_skip_tolerates_a_missing_user() -> None:
    raw = raw_due(currency="RUPEES")
    del raw["user"], raw["user_id"]

    [item] = list(payment_reminders([rejected(raw, "currency: too long")], D, DEFAULT_REMINDERS))

    assert isinstance(item, Notification)
    assert item.key == "payment_reminder:due_bad:2026-12-01:3"
    assert (item.user_id, item.address) == (None, None)
    assert item.skip_reason == "malformed due record: currency: too long"


@pytest.mark.parametrize(
    "raw",
    [
        raw_due(due_date="soon"),
        raw_due(due_date="2026-13-01"),
        raw_due(due_date=None),
        {key: value for key, value in raw_due().items() if key != "due_date"},
        {key: value for key, value in raw_due().items() if key != "id"},
        "not an object",
        ["due_bad", "2026-12-01"],
        None,
    ],
    ids=[
        "due_date-text",
        "due_date-invalid",
        "due_date-null",
        "due_date-missing",
        "id-missing",
        "string",
        "list",
        "null",
    ],
)
def test_malformed_due_without_a_usable_key_stays_rejected(raw: Any) -> None:
    record = rejected(raw)

    items = list(payment_reminders([record], D, DEFAULT_REMINDERS))

    assert items == [record]
    assert items[0] is record


@pytest.mark.parametrize("days_before", [2, 4, 5, 6, 8, -1])
def test_malformed_due_off_the_reminder_days_yields_no_notification(days_before: int) -> None:
    record = rejected(raw_due(amount_cents="lots", due_date=days_from_d(days_before).isoformat()))

    items = list(payment_reminders([record], D, DEFAULT_REMINDERS))

    assert not any(isinstance(item, Notification) for item in items)


def test_malformed_and_valid_dues_keep_their_order() -> None:
    dues: list[Due | InvalidRecord] = [
        make_due(due_id="due_a", due_date=days_from_d(7)),
        rejected(raw_due(amount_cents="lots")),
        make_due(due_id="due_b", due_date=days_from_d(5)),
        make_due(due_id="due_c", due_date=days_from_d(0)),
    ]

    keys = [item.key for item in payment_reminders(dues, D, DEFAULT_REMINDERS) if isinstance(item, Notification)]

    assert keys == [
        "payment_reminder:due_a:2026-12-05:7",
        "payment_reminder:due_bad:2026-12-01:3",
        "payment_reminder:due_c:2026-11-28:0",
    ]


# --- overdue: marks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("due_date", "status", "expected"),
    [
        (days_from_d(-1), "pending", True),
        (days_from_d(-30), "pending", True),
        (days_from_d(-400), "pending", True),
        (D, "pending", False),
        (days_from_d(1), "pending", False),
        (days_from_d(-1), "overdue", False),
        (days_from_d(-1), "paid", False),
        (days_from_d(-1), "cancelled", False),
    ],
)
def test_must_mark_overdue_only_past_due_pending_dues(due_date: date, status: str, expected: bool) -> None:
    assert must_mark_overdue(make_due(due_date=due_date, status=status), D) is expected


# --- overdue: notices ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_past_due", "expected_key"),
    [
        (1, "overdue_notice:due_123:2026-11-27:1"),
        (7, "overdue_notice:due_123:2026-11-21:7"),
        (14, "overdue_notice:due_123:2026-11-14:14"),
        (30, "overdue_notice:due_123:2026-10-29:30"),
    ],
)
def test_overdue_due_gets_a_notice_on_each_policy_offset(days_past_due: int, expected_key: str) -> None:
    due = make_due(due_date=days_from_d(-days_past_due), status="overdue")

    notification = overdue_notice(due, D, DEFAULT_OVERDUE)

    assert notification is not None
    assert notification.key == expected_key
    assert notification.kind is NotificationKind.OVERDUE_NOTICE
    assert (notification.user_id, notification.address, notification.name) == ("usr_9", "a@example.com", "Asha Rao")
    assert notification.skip_reason is None
    assert notification.context == {
        "amount_cents": 125000,
        "currency": "INR",
        "description": "Membership fee",
        "due_date": days_from_d(-days_past_due),
        "days_past_due": days_past_due,
    }
    assert notification.metadata == {
        "due_id": "due_123",
        "due_date": days_from_d(-days_past_due).isoformat(),
        "days_past_due": days_past_due,
    }


@pytest.mark.parametrize("days_past_due", [0, 2, 6, 8, 13, 15, 29, 31, -1])
def test_no_overdue_notice_off_the_policy_offsets(days_past_due: int) -> None:
    due = make_due(due_date=days_from_d(-days_past_due), status="overdue")

    assert overdue_notice(due, D, DEFAULT_OVERDUE) is None


@pytest.mark.parametrize("status", ["pending", "paid", "cancelled"])
@pytest.mark.parametrize("days_past_due", [1, 7, 14, 30])
def test_overdue_notice_only_for_status_overdue(status: str, days_past_due: int) -> None:
    due = make_due(due_date=days_from_d(-days_past_due), status=status)

    assert overdue_notice(due, D, DEFAULT_OVERDUE) is None


def test_default_notice_window_is_d_minus_30_to_d_minus_1() -> None:
    assert set(DEFAULT_OVERDUE.notice_days_past_due) == {1, 7, 14, 30}
    assert DEFAULT_OVERDUE.notice_window(D) == (date(2026, 10, 29), date(2026, 11, 27))


def test_custom_notice_window_starts_at_its_largest_offset() -> None:
    assert OverduePolicy(notice_days_past_due=[3, 10]).notice_window(D) == (date(2026, 11, 18), date(2026, 11, 27))


def test_overdue_notices_stream_with_a_malformed_due() -> None:
    dues: list[Due | InvalidRecord] = [
        make_due(due_id="due_a", due_date=days_from_d(-7), status="overdue"),
        make_due(due_id="due_b", due_date=days_from_d(-8), status="overdue"),
        rejected(raw_due(due_date=days_from_d(-14).isoformat(), status="overdue", amount_cents=None)),
        make_due(due_id="due_c", due_date=days_from_d(-30), status="overdue"),
    ]

    items = list(overdue_notices(dues, D, DEFAULT_OVERDUE))

    assert [item.key for item in items if isinstance(item, Notification)] == [
        "overdue_notice:due_a:2026-11-21:7",
        "overdue_notice:due_bad:2026-11-14:14",
        "overdue_notice:due_c:2026-10-29:30",
    ]
    skip = items[1]
    assert isinstance(skip, Notification)
    assert skip.kind is NotificationKind.OVERDUE_NOTICE
    assert skip.skip_reason is not None and skip.skip_reason.startswith("malformed due record: ")


def test_overdue_malformed_due_without_a_date_stays_rejected() -> None:
    record = rejected(raw_due(due_date="yesterday", status="overdue"))

    assert list(overdue_notices([record], D, DEFAULT_OVERDUE)) == [record]


@pytest.mark.parametrize("days_past_due", [2, 8, 15, 31])
def test_overdue_malformed_due_off_the_notice_days_yields_no_notification(days_past_due: int) -> None:
    record = rejected(raw_due(due_date=days_from_d(-days_past_due).isoformat(), status="overdue", amount_cents="x"))

    assert not any(isinstance(item, Notification) for item in overdue_notices([record], D, DEFAULT_OVERDUE))


def test_a_due_with_only_a_wrongly_typed_user_id_is_still_recorded_as_a_skip() -> None:
    rejected = InvalidRecord(
        "due_9",
        "user_id: Input should be a valid string",
        {"id": "due_9", "user_id": 42, "due_date": "2026-12-01", "status": "pending"},
    )
    (skip,) = payment_reminders([rejected], date(2026, 11, 28), PaymentReminderPolicy())
    assert isinstance(skip, Notification)
    assert skip.key == "payment_reminder:due_9:2026-12-01:3"
    assert skip.user_id == "42" and skip.skip_reason == "malformed due record: user_id: Input should be a valid string"
