"""Employee verifications: decisions and reminders (docs/services.md, The business rules: verify_employees)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import count

import pytest
from pydantic import ValidationError

from cron_pipelines.models.notification import NotificationKind
from cron_pipelines.models.payloads import Verification, VerificationAttempt, format_instant
from cron_pipelines.rules.calendar import BusinessDay
from cron_pipelines.rules.verifications import (
    Decision,
    Reminder,
    VerificationPolicy,
    assess_verification,
    verification_reminder,
    verification_result,
)

POLICY = VerificationPolicy()
D = "2026-11-28"
# A run for a past D sees the end of D: as_of = start(D+1).
AS_OF = datetime(2026, 11, 29, tzinfo=UTC)
_attempt_ids = count(1)


def business_day(day: str = D, zone: str = "UTC") -> BusinessDay:
    return BusinessDay.from_partition_key(day, zone)


def make_verification(requested_at: str = "2026-11-21T10:00:00Z", *, status: str = "pending") -> Verification:
    return Verification(
        id="ver_7",
        employee_id="emp_3",
        email="e@example.com",
        full_name="Emp Three",
        status=status,
        requested_at=requested_at,
    )


def attempt(outcome: str = "failure", attempted_at: str = "2026-11-22T08:00:00Z") -> VerificationAttempt:
    return VerificationAttempt(
        id=f"att_{next(_attempt_ids)}",
        verification_id="ver_7",
        employee_id="emp_3",
        outcome=outcome,
        method="otp",
        attempted_at=attempted_at,
    )


def failures(n: int, attempted_at: str = "2026-11-22T08:00:00Z") -> list[VerificationAttempt]:
    return [attempt("failure", attempted_at) for _ in range(n)]


def assess(
    verification: Verification,
    attempts: list[VerificationAttempt] = [],  # noqa: B006 - never mutated
    day: BusinessDay | None = None,
    as_of: datetime | None = None,
    policy: VerificationPolicy = POLICY,
) -> Decision | Reminder | None:
    day = day or business_day()
    return assess_verification(verification, attempts, day, as_of or day.as_of(AS_OF + timedelta(days=30)), policy)


# --- decisions, in the contract's order -------------------------------------------------------


@pytest.mark.parametrize("failed", [0, 1, 4, 5, 9])
def test_any_success_verifies_whatever_the_failures(failed: int) -> None:
    verdict = assess(make_verification(), [*failures(failed), attempt("success")])

    assert isinstance(verdict, Decision)
    assert verdict.status == "verified"


def test_success_verifies_even_an_expired_request() -> None:
    verdict = assess(make_verification("2026-10-01T00:00:00Z"), [attempt("success", "2026-10-02T00:00:00Z")])

    assert isinstance(verdict, Decision)
    assert verdict.status == "verified"


@pytest.mark.parametrize("failed", [5, 6, 12])
def test_five_or_more_failures_reject(failed: int) -> None:
    verdict = assess(make_verification(), failures(failed))

    assert isinstance(verdict, Decision)
    assert verdict.status == "rejected"
    assert str(failed) in verdict.reason


def test_four_failures_do_not_reject() -> None:
    # Requested on D − 5: no reminder day, not expired, so nothing at all.
    assert assess(make_verification("2026-11-23T10:00:00Z"), failures(4, "2026-11-24T08:00:00Z")) is None


def test_rejection_comes_before_expiry() -> None:
    verdict = assess(make_verification("2026-10-01T00:00:00Z"), failures(5, "2026-10-02T00:00:00Z"))

    assert isinstance(verdict, Decision) and verdict.status == "rejected"


def test_custom_failure_limit() -> None:
    policy = VerificationPolicy(max_failed_attempts=2)

    assert isinstance(assess(make_verification(), failures(2), policy=policy), Decision)
    assert assess(make_verification("2026-11-23T10:00:00Z"), failures(1), policy=policy) is None


@pytest.mark.parametrize(
    ("requested_at", "expired"),
    [
        ("2026-11-13T23:59:59Z", True),  # just before start(D − 14)
        ("2026-11-13T23:59:59.999999Z", True),
        ("2026-11-01T00:00:00Z", True),
        ("2026-11-14T00:00:00Z", False),  # exactly start(D − 14)
        ("2026-11-14T00:00:00.000001Z", False),
    ],
)
def test_expiry_when_requested_before_start_of_d_minus_14(requested_at: str, expired: bool) -> None:
    verdict = assess(make_verification(requested_at), failures(4, "2026-11-14T08:00:00Z"))

    if expired:
        assert isinstance(verdict, Decision) and verdict.status == "expired"
    else:
        assert verdict is None  # 14 days since the request: not a reminder day


@pytest.mark.parametrize(
    ("requested_at", "expired"),
    [
        # start(2026-11-14) in Kolkata is 2026-11-13T18:30Z.
        ("2026-11-13T18:29:59Z", True),
        ("2026-11-13T18:30:00Z", False),
        ("2026-11-13T20:00:00Z", False),  # still 2026-11-13 in UTC, 2026-11-14 in Kolkata
    ],
)
def test_expiry_cutoff_is_local_midnight_in_kolkata(requested_at: str, expired: bool) -> None:
    verdict = assess(make_verification(requested_at), day=business_day(zone="Asia/Kolkata"))

    assert (isinstance(verdict, Decision) and verdict.status == "expired") is expired


def test_expiry_comes_before_a_reminder_day() -> None:
    policy = VerificationPolicy(reminder_days_since_request=[3, 20])

    verdict = assess(make_verification("2026-11-08T10:00:00Z"), policy=policy)  # D − 20

    assert isinstance(verdict, Decision) and verdict.status == "expired"


@pytest.mark.parametrize("status", ["verified", "rejected", "expired"])
def test_a_decided_verification_is_left_alone(status: str) -> None:
    verification = make_verification("2026-10-01T00:00:00Z", status=status)

    assert assess(verification, [attempt("success"), *failures(5)]) is None
    assert assess(make_verification(status=status)) is None  # D − 7 would be a reminder day


# --- reminders -----------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [3, 7, 10])
def test_reminder_on_each_reminder_day(days: int) -> None:
    requested = datetime(2026, 11, 28, 10, tzinfo=UTC) - timedelta(days=days)

    assert assess(make_verification(format_instant(requested))) == Reminder(days)


@pytest.mark.parametrize("days", [0, 1, 2, 4, 5, 6, 8, 9, 11, 12, 13, 14])
def test_no_reminder_on_other_days(days: int) -> None:
    requested = datetime(2026, 11, 28, 10, tzinfo=UTC) - timedelta(days=days)

    assert assess(make_verification(format_instant(requested))) is None


@pytest.mark.parametrize(("requested_at", "days"), [("2026-11-25T00:00:00Z", 3), ("2026-11-25T23:59:59Z", 3)])
def test_days_since_request_count_calendar_dates_not_hours(requested_at: str, days: int) -> None:
    assert assess(make_verification(requested_at)) == Reminder(days)


def test_days_since_request_use_the_local_request_date() -> None:
    # 20:00Z on 2026-11-24 is 2026-11-25 01:30 in Kolkata: 3 days before D there, 4 in UTC.
    verification = make_verification("2026-11-24T20:00:00Z")

    assert assess(verification, day=business_day(zone="Asia/Kolkata")) == Reminder(3)
    assert assess(verification) is None


def test_custom_reminder_days() -> None:
    policy = VerificationPolicy(reminder_days_since_request=[5, 2])

    assert policy.reminder_days_since_request == [2, 5]
    assert assess(make_verification("2026-11-23T10:00:00Z"), policy=policy) == Reminder(5)
    assert assess(make_verification("2026-11-21T10:00:00Z"), policy=policy) is None


# --- reminders: the quiet window before as_of ---------------------------------------------------------


@pytest.mark.parametrize(
    ("attempted_at", "reminded"),
    [
        ("2026-11-25T23:59:59Z", True),  # just before as_of − 3 days
        ("2026-11-26T00:00:00Z", False),  # exactly as_of − 3 days: recent
        ("2026-11-27T12:00:00Z", False),
        ("2026-11-28T23:59:59Z", False),  # just before as_of
        ("2026-11-29T00:00:00Z", True),  # at as_of: after the run's view of D, ignored
        ("2026-11-30T08:00:00Z", True),  # after as_of: ignored
    ],
)
def test_no_reminder_after_an_attempt_in_the_3_days_before_as_of(attempted_at: str, reminded: bool) -> None:
    verdict = assess(make_verification(), [attempt("failure", attempted_at)], as_of=AS_OF)

    assert (verdict == Reminder(7)) is reminded
    if not reminded:
        assert verdict is None


def test_quiet_window_for_todays_run_ends_at_now() -> None:
    day = business_day()
    as_of = day.as_of(datetime(2026, 11, 28, 15, tzinfo=UTC))
    assert as_of == datetime(2026, 11, 28, 15, tzinfo=UTC)

    def verdict(attempted_at: str) -> Decision | Reminder | None:
        return assess(make_verification(), [attempt("failure", attempted_at)], day=day, as_of=as_of)

    assert verdict("2026-11-25T14:59:59Z") == Reminder(7)
    assert verdict("2026-11-25T15:00:00Z") is None
    assert verdict("2026-11-28T14:59:59Z") is None
    assert verdict("2026-11-28T15:00:01Z") == Reminder(7)  # after now: ignored


def test_quiet_window_compares_instants_whatever_their_offset() -> None:
    # 2026-11-26T05:29:59+05:30 is 2026-11-25T23:59:59Z, just outside the window.
    assert assess(make_verification(), [attempt("failure", "2026-11-26T05:29:59+05:30")], as_of=AS_OF) == Reminder(7)
    assert assess(make_verification(), [attempt("failure", "2026-11-26T05:30:00+05:30")], as_of=AS_OF) is None


def test_custom_quiet_days() -> None:
    policy = VerificationPolicy(reminder_quiet_days=1)
    verification = make_verification()

    assert assess(verification, [attempt("failure", "2026-11-27T23:59:59Z")], as_of=AS_OF, policy=policy) == Reminder(7)
    assert assess(verification, [attempt("failure", "2026-11-28T00:00:00Z")], as_of=AS_OF, policy=policy) is None


def test_quiet_days_zero_never_silences_a_reminder() -> None:
    policy = VerificationPolicy(reminder_quiet_days=0)

    assert assess(
        make_verification(), [attempt("failure", "2026-11-28T23:59:59Z")], as_of=AS_OF, policy=policy
    ) == Reminder(7)


# --- notifications --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["verified", "rejected", "expired"])
def test_result_notification_key_and_content(status: str) -> None:
    decision = Decision(status, "because")

    notification = verification_result(
        make_verification("2026-11-20T20:00:00Z"), decision, business_day(zone="Asia/Kolkata")
    )

    assert notification.key == f"verification_result:ver_7:{status}"
    assert notification.kind is NotificationKind.VERIFICATION_RESULT
    assert (notification.user_id, notification.address, notification.name) == ("emp_3", "e@example.com", "Emp Three")
    assert notification.context == {"status": status, "requested_date": date(2026, 11, 21)}
    assert notification.metadata == {
        "verification_id": "ver_7",
        "status": status,
        "reason": "because",
        "name": "Emp Three",
        "context": {"status": status, "requested_date": date(2026, 11, 21)},
        "locale": None,
    }
    assert notification.skip_reason is None


@pytest.mark.parametrize("days", [3, 7, 10])
def test_reminder_notification_key_and_content(days: int) -> None:
    notification = verification_reminder(make_verification(), Reminder(days), business_day(), POLICY)

    assert notification.key == f"verification_reminder:ver_7:{days}"
    assert notification.kind is NotificationKind.VERIFICATION_REMINDER
    assert (notification.user_id, notification.address, notification.name) == ("emp_3", "e@example.com", "Emp Three")
    assert notification.context == {
        "days_since_request": days,
        "requested_date": date(2026, 11, 21),
        "expiry_date": date(2026, 12, 6),
    }
    assert notification.metadata == {"verification_id": "ver_7", "days_since_request": days}


def test_reminder_expiry_date_is_the_first_day_the_request_is_expired() -> None:
    verification = make_verification()  # requested 2026-11-21
    expiry = verification_reminder(verification, Reminder(7), business_day(), POLICY).context["expiry_date"]

    assert expiry == date(2026, 12, 6)
    on_expiry = assess(verification, day=business_day(expiry.isoformat()))
    assert isinstance(on_expiry, Decision) and on_expiry.status == "expired"
    assert assess(verification, day=business_day("2026-12-05")) is None


def test_reminder_dates_are_local_dates() -> None:
    verification = make_verification("2026-11-20T20:00:00Z")  # 2026-11-21 01:30 in Kolkata

    notification = verification_reminder(verification, Reminder(7), business_day(zone="Asia/Kolkata"), POLICY)

    assert notification.context["requested_date"] == date(2026, 11, 21)
    assert notification.context["expiry_date"] == date(2026, 12, 6)


def test_reminder_expiry_follows_a_custom_expiry() -> None:
    policy = VerificationPolicy(expire_after_days=10, reminder_days_since_request=[3])

    notification = verification_reminder(make_verification(), Reminder(3), business_day(), policy)

    assert notification.context["expiry_date"] == date(2026, 12, 2)


# --- policy ------------------------------------------------------------------------------------------------


def test_policy_defaults_follow_the_contract() -> None:
    assert (POLICY.max_failed_attempts, POLICY.expire_after_days, POLICY.reminder_quiet_days) == (5, 14, 3)
    assert POLICY.reminder_days_since_request == [3, 7, 10]


@pytest.mark.parametrize(
    "fields",
    [
        {"reminder_days_since_request": [0, 3]},
        {"reminder_days_since_request": [-1]},
        {"max_failed_attempts": 0},
        {"expire_after_days": 0},
        {"reminder_quiet_days": -1},
    ],
)
def test_policy_refuses_invalid_numbers(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VerificationPolicy(**fields)


# --- DST in Europe/Berlin ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested_at", "expired"),
    [
        # D = 2026-04-10 (CEST); start(D − 14) = start(2026-03-27), 00:00 CET = 23:00Z.
        ("2026-03-26T22:59:59Z", True),
        # 14 × 24 h before start(D) (22:00Z) would keep this one pending; the local-date cutoff expires it.
        ("2026-03-26T22:30:00Z", True),
        ("2026-03-26T23:00:00Z", False),
    ],
)
def test_expiry_across_the_march_change_in_berlin(requested_at: str, expired: bool) -> None:
    verdict = assess(make_verification(requested_at), day=business_day("2026-04-10", "Europe/Berlin"))

    assert (isinstance(verdict, Decision) and verdict.status == "expired") is expired
    if not expired:
        assert verdict is None


@pytest.mark.parametrize(
    ("requested_at", "expired"),
    [
        # D = 2026-11-05 (CET); start(D − 14) = start(2026-10-22), 00:00 CEST = 22:00Z.
        ("2026-10-21T21:59:59Z", True),
        ("2026-10-21T22:00:00Z", False),
        # 14 × 24 h before start(D) (23:00Z) would expire this one; the local-date cutoff does not.
        ("2026-10-21T22:30:00Z", False),
    ],
)
def test_expiry_across_the_october_change_in_berlin(requested_at: str, expired: bool) -> None:
    verdict = assess(make_verification(requested_at), day=business_day("2026-11-05", "Europe/Berlin"))

    assert (isinstance(verdict, Decision) and verdict.status == "expired") is expired


def test_reminder_day_across_the_october_change_in_berlin() -> None:
    # Requested 00:30 CEST on 2026-10-23 (22:30Z on the 22nd): D = 2026-10-26 is 3 local days later.
    verification = make_verification("2026-10-22T22:30:00Z")

    assert assess(verification, day=business_day("2026-10-26", "Europe/Berlin")) == Reminder(3)
    assert assess(verification, day=business_day("2026-10-26")) is None  # 4 days after 2026-10-22 in UTC
