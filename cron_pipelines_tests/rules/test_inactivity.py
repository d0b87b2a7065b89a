"""Inactivity warnings and deactivations (docs/services.md, The business rules: notify_inactive_users, deactivate_inactive_users)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import InactiveUser, NotificationRecord, format_instant
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines.rules.calendar import BusinessDay
from cron_pipelines.rules.inactivity import (
    InactivityPolicy,
    account_deactivated,
    deactivation_date,
    inactivity_warning,
    inactivity_warnings,
    is_inactive,
    warning_state,
)

POLICY = InactivityPolicy()
D = "2026-11-28"
CREATED = "2025-01-01T00:00:00Z"


def business_day(day: str = D, zone: str = "UTC") -> BusinessDay:
    return BusinessDay.from_partition_key(day, zone)


def make_user(
    last_login_at: str | None,
    *,
    created_at: str = CREATED,
    status: str = "active",
    user_id: str = "usr_9",
    email: str | None = "a@example.com",
) -> InactiveUser:
    return InactiveUser(
        id=user_id, email=email, full_name="Asha Rao", status=status, last_login_at=last_login_at, created_at=created_at
    )


def instant(value: datetime) -> str:
    return format_instant(value)


def warning_record(status: str, sent_at: str | None = None) -> NotificationRecord:
    return NotificationRecord(
        idempotency_key="inactivity_warning:usr_9:2026-08-01T12:00:00Z",
        kind="inactivity_warning",
        user_id="usr_9",
        recipient="a@example.com",
        status=status,
        attempts=1,
        claimed_at=sent_at or "2026-11-01T09:00:00Z",
        sent_at=sent_at,
    )


# --- is_inactive: the cutoff start(D) − N days -------------------------------------------


@pytest.mark.parametrize(
    ("days_inactive", "inactive"),
    [(29, False), (30, False), (31, True)],
)
def test_warn_threshold_is_strictly_more_than_30_days_before_start_of_d(days_inactive: int, inactive: bool) -> None:
    day = business_day()
    user = make_user(instant(day.start - timedelta(days=days_inactive)))

    assert is_inactive(user, day, POLICY.warn_after_days) is inactive


@pytest.mark.parametrize(
    ("days_inactive", "inactive"),
    [(89, False), (90, False), (91, True)],
)
def test_deactivate_threshold_is_strictly_more_than_90_days_before_start_of_d(
    days_inactive: int, inactive: bool
) -> None:
    day = business_day()
    user = make_user(instant(day.start - timedelta(days=days_inactive)))

    assert is_inactive(user, day, POLICY.deactivate_after_days) is inactive


@pytest.mark.parametrize(
    ("last_login_at", "inactive"),
    [
        ("2026-10-28T23:59:59Z", True),
        ("2026-10-28T23:59:59.999999Z", True),
        ("2026-10-29T00:00:00Z", False),  # exactly start(D) − 30 days: not strictly before
        ("2026-10-29T00:00:00.000001Z", False),
        ("2026-10-29T05:00:00+05:00", False),  # the cutoff instant written with another offset
        ("2026-10-29T04:59:59+05:00", True),
    ],
)
def test_warn_cutoff_around_the_instant_in_utc(last_login_at: str, inactive: bool) -> None:
    assert is_inactive(make_user(last_login_at), business_day(), 30) is inactive


@pytest.mark.parametrize(
    ("last_login_at", "inactive"),
    [
        ("2026-08-29T23:59:59Z", True),
        ("2026-08-30T00:00:00Z", False),
        ("2026-08-30T00:00:01Z", False),
    ],
)
def test_deactivate_cutoff_around_the_instant_in_utc(last_login_at: str, inactive: bool) -> None:
    assert is_inactive(make_user(last_login_at), business_day(), 90) is inactive


@pytest.mark.parametrize(
    ("last_login_at", "inactive"),
    [
        # start(2026-10-29) in Kolkata is 2026-10-28T18:30Z.
        ("2026-10-28T18:29:59Z", True),
        ("2026-10-28T18:30:00Z", False),
        ("2026-10-28T23:59:59.999999+05:30", True),
        ("2026-10-29T00:00:00+05:30", False),
        ("2026-10-28T20:00:00Z", False),  # still 2026-10-28 in UTC, but 2026-10-29 01:30 in Kolkata
    ],
)
def test_warn_cutoff_is_local_midnight_in_kolkata(last_login_at: str, inactive: bool) -> None:
    assert is_inactive(make_user(last_login_at), business_day(zone="Asia/Kolkata"), 30) is inactive


def test_inactive_status_is_never_inactive_again() -> None:
    user = make_user("2020-01-01T00:00:00Z", status="inactive")

    assert is_inactive(user, business_day(), 30) is False
    assert is_inactive(user, business_day(), 90) is False


# --- never logged in: created_at ------------------------------------------------------------


@pytest.mark.parametrize(
    ("created_at", "inactive"),
    [("2026-10-28T23:59:59Z", True), ("2026-10-29T00:00:00Z", False)],
)
def test_never_logged_in_user_is_measured_from_created_at(created_at: str, inactive: bool) -> None:
    assert is_inactive(make_user(None, created_at=created_at), business_day(), 30) is inactive


def test_a_recent_login_wins_over_an_old_created_at() -> None:
    user = make_user("2026-11-27T08:00:00Z", created_at="2020-01-01T00:00:00Z")

    assert is_inactive(user, business_day(), 30) is False


def test_never_logged_in_warning_key_uses_created_at_verbatim() -> None:
    user = make_user(None, created_at="2026-07-01T10:15:00.5+05:30")

    notification = inactivity_warning(user, business_day(), POLICY)

    assert notification.key == "inactivity_warning:usr_9:2026-07-01T10:15:00.5+05:30"
    assert notification.metadata["last_active_at"] == "2026-07-01T10:15:00.5+05:30"
    assert notification.metadata["never_logged_in"] is True


# --- warning keys and content ------------------------------------------------------------------


@pytest.mark.parametrize(
    "last_login_at",
    [
        "2026-08-01T12:00:00Z",
        "2026-08-01T17:30:00+05:30",
        "2026-08-01T12:00:00.123456Z",
        "2026-08-01T12:00:00.120+00:00",
        "2026-08-01T07:00:00-05:00",
    ],
)
def test_warning_key_keeps_the_service_instant_unchanged(last_login_at: str) -> None:
    notification = inactivity_warning(make_user(last_login_at), business_day(), POLICY)

    assert notification.key == f"inactivity_warning:usr_9:{last_login_at}"
    assert notification.metadata["last_active_at"] == last_login_at
    assert notification.metadata["never_logged_in"] is False


def test_the_same_instant_written_differently_is_a_different_stretch_key() -> None:
    # The key embeds the string as returned; it is never re-formatted to UTC.
    a = inactivity_warning(make_user("2026-08-01T12:00:00Z"), business_day(), POLICY)
    b = inactivity_warning(make_user("2026-08-01T17:30:00+05:30"), business_day(), POLICY)

    assert a.key == "inactivity_warning:usr_9:2026-08-01T12:00:00Z"
    assert b.key == "inactivity_warning:usr_9:2026-08-01T17:30:00+05:30"


def test_warning_key_is_the_same_on_every_day_of_the_stretch() -> None:
    user = make_user("2026-08-01T12:00:00Z")

    keys = {inactivity_warning(user, business_day(day), POLICY).key for day in ("2026-09-15", D, "2026-12-31")}

    assert keys == {"inactivity_warning:usr_9:2026-08-01T12:00:00Z"}


def test_warning_notification_fields() -> None:
    notification = inactivity_warning(make_user("2026-08-01T12:00:00Z"), business_day(), POLICY)

    assert notification.kind is NotificationKind.INACTIVITY_WARNING
    assert (notification.user_id, notification.address, notification.name) == ("usr_9", "a@example.com", "Asha Rao")
    assert notification.skip_reason is None
    assert notification.context == {"last_active_date": date(2026, 8, 1), "deactivation_date": date(2026, 12, 5)}
    assert notification.metadata["deactivation_date"] == "2026-12-05"


def test_warning_names_the_local_last_active_date() -> None:
    # 20:00Z on 2026-08-01 is 01:30 on 2026-08-02 in Kolkata.
    notification = inactivity_warning(make_user("2026-08-01T20:00:00Z"), business_day(zone="Asia/Kolkata"), POLICY)

    assert notification.context["last_active_date"] == date(2026, 8, 2)


def test_warnings_stream_warns_only_users_past_the_warn_cutoff() -> None:
    users = [
        make_user("2026-10-28T23:59:59Z", user_id="usr_old"),
        make_user("2026-10-29T00:00:00Z", user_id="usr_edge"),
        make_user(None, created_at="2026-01-01T00:00:00Z", user_id="usr_never"),
        make_user("2026-01-01T00:00:00Z", user_id="usr_gone", status="inactive"),
    ]

    keys = [item.key for item in inactivity_warnings(users, business_day(), POLICY)]

    assert keys == [
        "inactivity_warning:usr_old:2026-10-28T23:59:59Z",
        "inactivity_warning:usr_never:2026-01-01T00:00:00Z",
    ]


def test_malformed_user_with_a_usable_key_becomes_a_recorded_skip() -> None:
    raw: dict[str, Any] = {
        "id": "usr_bad",
        "email": 12345,
        "status": "active",
        "last_login_at": "2026-08-01T17:30:00+05:30",
        "created_at": CREATED,
    }
    record = InvalidRecord(record_id="usr_bad", reason="email: Input should be a valid string", raw=raw)

    [item] = list(inactivity_warnings([record], business_day(), POLICY))

    assert isinstance(item, Notification)
    assert item.key == "inactivity_warning:usr_bad:2026-08-01T17:30:00+05:30"
    assert item.kind is NotificationKind.INACTIVITY_WARNING
    assert item.user_id == "usr_bad"
    assert item.skip_reason == "malformed user record: email: Input should be a valid string"


def test_malformed_never_logged_in_user_skip_uses_created_at() -> None:
    raw = {"id": "usr_bad", "status": "weird", "last_login_at": None, "created_at": "2026-01-01T00:00:00+01:00"}
    record = InvalidRecord(record_id="usr_bad", reason="status: bad", raw=raw)

    [item] = list(inactivity_warnings([record], business_day(), POLICY))

    assert isinstance(item, Notification)
    assert item.key == "inactivity_warning:usr_bad:2026-01-01T00:00:00+01:00"


@pytest.mark.parametrize(
    "raw",
    [
        {"email": "a@example.com", "created_at": CREATED},
        {"id": "usr_bad", "last_login_at": "last tuesday", "created_at": CREATED},
        {"id": "usr_bad", "last_login_at": "2026-08-01T12:00:00", "created_at": CREATED},  # no offset
        {"id": "usr_bad"},
        "not an object",
    ],
    ids=["no-id", "bad-instant", "naive-instant", "no-created_at", "string"],
)
def test_malformed_user_without_a_usable_key_stays_rejected(raw: Any) -> None:
    record = InvalidRecord(record_id=None, reason="bad", raw=raw)

    assert list(inactivity_warnings([record], business_day(), POLICY)) == [record]


# --- deactivation_date -------------------------------------------------------------------------


def test_deactivation_date_is_d_plus_grace_for_a_long_inactive_user() -> None:
    # Last active 2026-06-01: inactive 90 days since 2026-08-31, long before D + 7.
    assert deactivation_date(make_user("2026-06-01T08:00:00Z"), business_day(), POLICY) == date(2026, 12, 5)


def test_deactivation_date_waits_for_90_days_of_inactivity_when_that_is_later() -> None:
    # Last active 2026-10-20: 2026-10-20 + 91 days = 2027-01-19, after D + 7.
    assert deactivation_date(make_user("2026-10-20T08:00:00Z"), business_day(), POLICY) == date(2027, 1, 19)


def test_deactivation_date_when_both_conditions_meet_on_the_same_day() -> None:
    # 2026-09-05 + 91 days = 2026-12-05 = D + 7.
    assert deactivation_date(make_user("2026-09-05T23:59:59Z"), business_day(), POLICY) == date(2026, 12, 5)


def test_deactivation_date_uses_the_local_last_active_date() -> None:
    user = make_user("2026-10-20T20:00:00Z")  # 2026-10-21 01:30 in Kolkata

    assert deactivation_date(user, business_day(), POLICY) == date(2027, 1, 19)
    assert deactivation_date(user, business_day(zone="Asia/Kolkata"), POLICY) == date(2027, 1, 20)


def test_deactivation_date_follows_a_custom_policy() -> None:
    policy = InactivityPolicy(warn_after_days=10, deactivate_after_days=20, warning_grace_days=3)

    assert deactivation_date(make_user("2026-11-10T12:00:00Z"), business_day(), policy) == date(2026, 12, 1)
    assert deactivation_date(make_user("2026-01-01T12:00:00Z"), business_day(), policy) == date(2026, 12, 1)
    assert deactivation_date(make_user("2026-11-15T12:00:00Z"), business_day(), policy) == date(2026, 12, 6)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("last_login_at", ["2026-10-20T08:00:00Z", "2026-10-20T23:30:00Z", "2026-09-29T00:00:00Z"])
def test_deactivation_date_is_the_first_day_the_90_day_rule_holds(zone: str, last_login_at: str) -> None:
    """When the 90-day branch decides, that day is inactive per is_inactive and the day before is not."""
    user = make_user(last_login_at)
    warned_on = business_day(zone=zone)

    first = deactivation_date(user, warned_on, POLICY)

    assert first > warned_on.plus_days(POLICY.warning_grace_days)
    assert is_inactive(user, business_day(first.isoformat(), zone), POLICY.deactivate_after_days)
    assert not is_inactive(
        user, business_day((first - timedelta(days=1)).isoformat(), zone), POLICY.deactivate_after_days
    )


# --- warning_state ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["claimed", "sent", "failed", "skipped"])
def test_claimed_warning_means_it_is_sent_now(status: str) -> None:
    record = warning_record(status, "2026-11-01T09:00:00Z" if status == "sent" else None)

    assert warning_state("claimed", record, business_day(), POLICY) == "warned_now"


@pytest.mark.parametrize(
    ("sent_at", "state"),
    [
        ("2026-11-01T09:00:00Z", "deactivate"),
        ("2026-11-20T23:59:59Z", "deactivate"),  # D − 8
        ("2026-11-21T00:00:00Z", "deactivate"),  # D − 7, first instant
        ("2026-11-21T23:59:59Z", "deactivate"),  # D − 7, last instant
        ("2026-11-22T00:00:00Z", "grace_pending"),  # D − 6
        ("2026-11-27T12:00:00Z", "grace_pending"),
        ("2026-11-28T09:00:00Z", "grace_pending"),  # sent on D
    ],
)
def test_sent_warning_allows_deactivation_on_or_before_d_minus_7(sent_at: str, state: str) -> None:
    assert warning_state("duplicate", warning_record("sent", sent_at), business_day(), POLICY) == state


@pytest.mark.parametrize(
    ("sent_at", "state"),
    [
        # 23:30Z on 2026-11-20 is 2026-11-21 05:00 in Kolkata: exactly D − 7 there.
        ("2026-11-20T23:30:00Z", "deactivate"),
        ("2026-11-21T18:29:59Z", "deactivate"),  # 23:59:59 on D − 7 in Kolkata
        # 23:30Z on 2026-11-21 is D − 7 in UTC but already D − 6 (2026-11-22 05:00) in Kolkata.
        ("2026-11-21T23:30:00Z", "grace_pending"),
        ("2026-11-21T18:30:00Z", "grace_pending"),  # 00:00 on D − 6 in Kolkata
    ],
)
def test_the_d_minus_7_date_is_taken_in_the_business_zone(sent_at: str, state: str) -> None:
    assert (
        warning_state("duplicate", warning_record("sent", sent_at), business_day(zone="Asia/Kolkata"), POLICY) == state
    )


def test_the_same_sent_at_is_judged_differently_in_utc_and_in_kolkata() -> None:
    record = warning_record("sent", "2026-11-21T23:30:00Z")

    assert warning_state("duplicate", record, business_day(), POLICY) == "deactivate"
    assert warning_state("duplicate", record, business_day(zone="Asia/Kolkata"), POLICY) == "grace_pending"


def test_sent_at_with_an_offset_is_read_as_the_instant_it_is() -> None:
    # 2026-11-22T02:00+05:30 is 2026-11-21T20:30Z: D − 7 in UTC.
    assert (
        warning_state("duplicate", warning_record("sent", "2026-11-22T02:00:00+05:30"), business_day(), POLICY)
        == "deactivate"
    )


@pytest.mark.parametrize(
    ("grace", "sent_at", "state"),
    [
        (0, "2026-11-28T09:00:00Z", "deactivate"),
        (3, "2026-11-26T00:00:00Z", "grace_pending"),
        (3, "2026-11-25T23:59:59Z", "deactivate"),
    ],
)
def test_custom_grace_days(grace: int, sent_at: str, state: str) -> None:
    policy = InactivityPolicy(warning_grace_days=grace)

    assert warning_state("duplicate", warning_record("sent", sent_at), business_day(), policy) == state


def test_duplicate_warning_still_claimed_is_unconfirmed() -> None:
    assert warning_state("duplicate", warning_record("claimed"), business_day(), POLICY) == "warning_unconfirmed"


def test_duplicate_warning_recorded_skipped_is_never_a_deactivation() -> None:
    assert warning_state("duplicate", warning_record("skipped"), business_day(), POLICY) == "warning_skipped"


def test_sent_record_without_sent_at_never_deactivates() -> None:
    assert warning_state("duplicate", warning_record("sent", None), business_day(), POLICY) != "deactivate"


# --- account_deactivated --------------------------------------------------------------------------


def test_account_deactivated_key_and_content() -> None:
    user = make_user("2026-08-01T20:00:00+05:30")

    notification = account_deactivated(user, business_day(zone="Asia/Kolkata"))

    assert notification.key == "account_deactivated:usr_9:2026-08-01T20:00:00+05:30"
    assert notification.kind is NotificationKind.ACCOUNT_DEACTIVATED
    assert (notification.user_id, notification.address, notification.name) == ("usr_9", "a@example.com", "Asha Rao")
    assert notification.context == {"last_active_date": date(2026, 8, 1)}
    # With what a later run needs to send it again from the ledger alone.
    assert notification.metadata == {
        "last_active_at": "2026-08-01T20:00:00+05:30",
        "name": "Asha Rao",
        "context": {"last_active_date": date(2026, 8, 1)},
        "locale": None,
    }


def test_account_deactivated_key_for_a_never_logged_in_user_uses_created_at() -> None:
    notification = account_deactivated(make_user(None, created_at="2025-03-04T05:06:07.089Z"), business_day())

    assert notification.key == "account_deactivated:usr_9:2025-03-04T05:06:07.089Z"


# --- policy ---------------------------------------------------------------------------------------------


def test_policy_defaults_follow_the_contract() -> None:
    assert (POLICY.warn_after_days, POLICY.deactivate_after_days, POLICY.warning_grace_days) == (30, 90, 7)


@pytest.mark.parametrize(("warn", "deactivate"), [(30, 30), (30, 29), (90, 30)])
def test_policy_refuses_deactivating_no_later_than_warning(warn: int, deactivate: int) -> None:
    with pytest.raises(ValidationError, match="deactivate_after_days must be greater than warn_after_days"):
        InactivityPolicy(warn_after_days=warn, deactivate_after_days=deactivate)


def test_policy_accepts_deactivating_one_day_after_warning() -> None:
    policy = InactivityPolicy(warn_after_days=30, deactivate_after_days=31)

    assert policy.deactivate_after_days == 31


@pytest.mark.parametrize("fields", [{"warn_after_days": 0}, {"deactivate_after_days": 0}, {"warning_grace_days": -1}])
def test_policy_refuses_non_positive_thresholds(fields: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        InactivityPolicy(**fields)


# --- DST in Europe/Berlin ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_login_at", "inactive"),
    [
        # D = 2026-10-26 (after the October change): the cutoff is start(2026-09-26), 00:00 CEST = 22:00Z.
        ("2026-09-25T21:59:59Z", True),
        ("2026-09-25T22:00:00Z", False),
        # 30 × 24 h before start(D) (23:00Z) would call this one inactive; a local-date cutoff does not.
        ("2026-09-25T22:30:00Z", False),
    ],
)
def test_warn_cutoff_across_the_october_change_in_berlin(last_login_at: str, inactive: bool) -> None:
    assert is_inactive(make_user(last_login_at), business_day("2026-10-26", "Europe/Berlin"), 30) is inactive


@pytest.mark.parametrize(
    ("last_login_at", "inactive"),
    [
        # D = 2026-04-15 (after the March change): the cutoff is start(2026-03-16), 00:00 CET = 23:00Z.
        ("2026-03-15T22:59:59Z", True),
        # 30 × 24 h before start(D) (22:00Z) would call this one active; a local-date cutoff does not.
        ("2026-03-15T22:30:00Z", True),
        ("2026-03-15T23:00:00Z", False),
    ],
)
def test_warn_cutoff_across_the_march_change_in_berlin(last_login_at: str, inactive: bool) -> None:
    assert is_inactive(make_user(last_login_at), business_day("2026-04-15", "Europe/Berlin"), 30) is inactive


def test_deactivate_cutoff_across_the_october_change_in_berlin() -> None:
    # D = 2026-11-01, 90 days back is 2026-08-03: 00:00 CEST = 2026-08-02T22:00Z.
    day = business_day("2026-11-01", "Europe/Berlin")

    assert is_inactive(make_user("2026-08-02T21:59:59Z"), day, 90) is True
    assert is_inactive(make_user("2026-08-02T22:00:00Z"), day, 90) is False
    assert is_inactive(make_user("2026-08-02T22:30:00Z"), day, 90) is False


def test_sent_on_d_minus_7_across_the_october_change_in_berlin() -> None:
    # D = 2026-10-30 (CET); D − 7 = 2026-10-23 (CEST) ends at 2026-10-23T22:00Z.
    day = business_day("2026-10-30", "Europe/Berlin")

    assert warning_state("duplicate", warning_record("sent", "2026-10-23T21:59:59Z"), day, POLICY) == "deactivate"
    assert warning_state("duplicate", warning_record("sent", "2026-10-23T22:00:00Z"), day, POLICY) == "grace_pending"
