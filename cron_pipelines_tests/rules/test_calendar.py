"""BusinessDay: D, start(D), as_of and local dates in CRON_TIMEZONE (docs/services.md, The business rules)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from cron_pipelines.rules.calendar import BusinessDay

UTC = UTC


def utc(text: str) -> datetime:
    """An aware UTC instant from `YYYY-MM-DDTHH:MM:SS`."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def business_day(day: str, zone: str = "UTC") -> BusinessDay:
    return BusinessDay.from_partition_key(day, zone)


# --- from_partition_key ----------------------------------------------------------


def test_from_partition_key_reads_the_date_and_the_zone() -> None:
    day = BusinessDay.from_partition_key("2026-11-28", "Asia/Kolkata")

    assert day.day == date(2026, 11, 28)
    assert day.timezone == ZoneInfo("Asia/Kolkata")


@pytest.mark.parametrize("bad_key", ["2026-13-01", "28/11/2026", "", "2026-11-28T00:00:00Z"])
def test_from_partition_key_refuses_a_key_that_is_not_a_date(bad_key: str) -> None:
    with pytest.raises(ValueError):
        BusinessDay.from_partition_key(bad_key, "UTC")


def test_from_partition_key_refuses_an_unknown_zone() -> None:
    with pytest.raises(ZoneInfoNotFoundError):
        BusinessDay.from_partition_key("2026-11-28", "Mars/Olympus_Mons")


# --- start(D) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expected_utc", "offset"),
    [
        ("UTC", "2026-11-28T00:00:00", timedelta(0)),
        ("Asia/Kolkata", "2026-11-27T18:30:00", timedelta(hours=5, minutes=30)),
        ("Europe/Berlin", "2026-11-27T23:00:00", timedelta(hours=1)),
        ("America/New_York", "2026-11-28T05:00:00", timedelta(hours=-5)),
    ],
)
def test_start_is_local_midnight_of_d(zone: str, expected_utc: str, offset: timedelta) -> None:
    start = business_day("2026-11-28", zone).start

    assert start == utc(expected_utc)
    assert start.utcoffset() == offset
    assert (start.hour, start.minute) == (0, 0)


# --- as_of = min(now, start(D+1)) ---------------------------------------------------


def test_as_of_for_a_past_day_is_the_start_of_the_next_day() -> None:
    day = business_day("2026-11-28")

    assert day.as_of(utc("2026-12-03T10:00:00")) == utc("2026-11-29T00:00:00")


def test_as_of_for_today_is_now() -> None:
    now = utc("2026-11-28T15:00:00")

    assert business_day("2026-11-28").as_of(now) == now


def test_as_of_at_exactly_the_start_of_the_next_day_is_that_instant() -> None:
    assert business_day("2026-11-28").as_of(utc("2026-11-29T00:00:00")) == utc("2026-11-29T00:00:00")


def test_as_of_one_microsecond_before_the_next_day_is_now() -> None:
    now = utc("2026-11-28T23:59:59.999999")

    assert business_day("2026-11-28").as_of(now) == now


def test_as_of_for_a_past_day_in_kolkata_is_local_midnight_after_d() -> None:
    day = business_day("2026-11-28", "Asia/Kolkata")

    assert day.as_of(utc("2026-12-01T00:00:00")) == utc("2026-11-28T18:30:00")


def test_as_of_in_kolkata_is_now_while_d_is_still_today_there() -> None:
    # 18:00Z is 23:30 on 2026-11-28 in Kolkata: D is still today there.
    now = utc("2026-11-28T18:00:00")

    assert business_day("2026-11-28", "Asia/Kolkata").as_of(now) == now


def test_as_of_in_kolkata_is_capped_once_d_is_over_there_though_not_in_utc() -> None:
    # 19:00Z is still 2026-11-28 in UTC but already 00:30 on 2026-11-29 in Kolkata.
    day = business_day("2026-11-28", "Asia/Kolkata")

    assert day.as_of(utc("2026-11-28T19:00:00")) == utc("2026-11-28T18:30:00")


# --- days_before_start across DST ----------------------------------------------------


def test_days_before_start_across_the_october_change_in_berlin() -> None:
    # DST ends on Sunday 2026-10-25: start(D) is UTC+1, start(D−30) is still UTC+2.
    day = business_day("2026-10-26", "Europe/Berlin")

    start = day.start
    cutoff = day.days_before_start(30)

    assert start == utc("2026-10-25T23:00:00")
    assert start.utcoffset() == timedelta(hours=1)
    assert cutoff == utc("2026-09-25T22:00:00")
    assert cutoff.utcoffset() == timedelta(hours=2)
    assert cutoff.astimezone(ZoneInfo("Europe/Berlin")).replace(tzinfo=None) == datetime(2026, 9, 26)
    # Local calendar days, not 30 × 24 h: the stretch is one hour longer.
    assert start.astimezone(UTC) - cutoff.astimezone(UTC) == timedelta(days=30, hours=1)


def test_the_day_of_the_october_change_lasts_25_hours_in_berlin() -> None:
    day = business_day("2026-10-26", "Europe/Berlin")

    assert day.days_before_start(1) == utc("2026-10-24T22:00:00")
    assert day.start.astimezone(UTC) - day.days_before_start(1).astimezone(UTC) == timedelta(hours=25)


def test_days_before_start_across_the_march_change_in_berlin() -> None:
    # DST starts on Sunday 2026-03-29: start(D) is UTC+2, start(D−1) is still UTC+1.
    day = business_day("2026-03-30", "Europe/Berlin")

    assert day.start == utc("2026-03-29T22:00:00")
    assert day.days_before_start(1) == utc("2026-03-28T23:00:00")
    assert day.start.astimezone(UTC) - day.days_before_start(1).astimezone(UTC) == timedelta(hours=23)
    assert day.days_before_start(14) == utc("2026-03-15T23:00:00")


def test_days_before_start_in_kolkata_has_no_dst() -> None:
    day = business_day("2026-10-26", "Asia/Kolkata")

    assert day.start == utc("2026-10-25T18:30:00")
    assert day.days_before_start(30) == utc("2026-09-25T18:30:00")
    assert day.days_before_start(30).utcoffset() == timedelta(hours=5, minutes=30)
    assert day.start - day.days_before_start(30) == timedelta(days=30)


def test_days_before_start_zero_is_start() -> None:
    day = business_day("2026-10-26", "Europe/Berlin")

    assert day.days_before_start(0) == day.start


# --- local_date ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        ("2026-10-24T21:59:59", date(2026, 10, 24)),  # 23:59:59 CEST
        ("2026-10-24T22:00:00", date(2026, 10, 25)),  # 00:00 CEST, the day of the change
        ("2026-10-25T22:59:59", date(2026, 10, 25)),  # 23:59:59 CET
        ("2026-10-25T23:00:00", date(2026, 10, 26)),  # 00:00 CET
        ("2026-03-28T22:59:59", date(2026, 3, 28)),  # 23:59:59 CET
        ("2026-03-28T23:00:00", date(2026, 3, 29)),  # 00:00 CET, the day of the change
        ("2026-03-29T21:59:59", date(2026, 3, 29)),  # 23:59:59 CEST
        ("2026-03-29T22:00:00", date(2026, 3, 30)),  # 00:00 CEST
    ],
)
def test_local_date_in_berlin_around_the_changes(instant: str, expected: date) -> None:
    assert business_day("2026-10-26", "Europe/Berlin").local_date(utc(instant)) == expected


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        ("2026-11-20T18:29:59", date(2026, 11, 20)),
        ("2026-11-20T18:30:00", date(2026, 11, 21)),
        ("2026-11-20T23:30:00", date(2026, 11, 21)),
    ],
)
def test_local_date_in_kolkata(instant: str, expected: date) -> None:
    assert business_day("2026-11-28", "Asia/Kolkata").local_date(utc(instant)) == expected


def test_local_date_honours_the_offset_the_instant_was_written_with() -> None:
    instant = datetime.fromisoformat("2026-11-21T01:00:00+05:30")  # 2026-11-20T19:30Z

    assert business_day("2026-11-28").local_date(instant) == date(2026, 11, 20)
    assert business_day("2026-11-28", "Asia/Kolkata").local_date(instant) == date(2026, 11, 21)


@pytest.mark.parametrize(
    ("days", "expected"), [(0, date(2026, 11, 28)), (7, date(2026, 12, 5)), (-7, date(2026, 11, 21))]
)
def test_plus_days_counts_calendar_days(days: int, expected: date) -> None:
    assert business_day("2026-11-28").plus_days(days) == expected
