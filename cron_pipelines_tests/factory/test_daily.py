"""Schedules: one per job, in CRON_TIMEZONE, outside 02:00–03:00, today's partition with a run key per day,
and a bounded catch-up of days without a successful run."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from cron_pipelines.defs import build_definitions
from cron_pipelines.factory.daily import days_to_request
from cron_pipelines.settings import load_settings

JOB_NAMES = {
    "send_payment_reminders",
    "mark_overdue_dues",
    "notify_inactive_users",
    "deactivate_inactive_users",
    "verify_employees",
    "maintenance",
}


@pytest.fixture(scope="module")
def kolkata_defs() -> dg.Definitions:
    return build_definitions(load_settings({"CRON_TIMEZONE": "Asia/Kolkata", "DAGSTER_HOME": "/tmp/unused"}))


def test_one_running_schedule_per_job_in_the_business_time_zone(kolkata_defs: dg.Definitions) -> None:
    schedules = {schedule.job_name: schedule for schedule in kolkata_defs.schedules}
    assert set(schedules) == JOB_NAMES
    for job, schedule in schedules.items():
        assert schedule.name == f"{job}_daily"  # the name the README's pause command uses
        assert schedule.execution_timezone == "Asia/Kolkata"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        minute, hour, *rest = schedule.cron_schedule.split()
        assert rest == ["*", "*", "*"] and not 2 <= int(hour) < 3  # never in the DST hour
    assert schedules["send_payment_reminders"].cron_schedule == "0 9 * * *"


def _tick(
    defs: dg.Definitions, job: str, when: datetime, instance: dg.DagsterInstance | None = None
) -> list[dg.RunRequest]:
    schedule = next(s for s in defs.schedules if s.job_name == job)
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    return list(schedule.evaluate_tick(context).run_requests or [])


def test_a_tick_requests_the_local_day_with_a_run_key_per_day(kolkata_defs: dg.Definitions) -> None:
    # 09:00 in Kolkata on 2026-11-28 is 03:30 UTC the same day; 00:30 local is still the 27th in UTC.
    tick = datetime(2026, 11, 28, 0, 30, tzinfo=ZoneInfo("Asia/Kolkata"))
    (request,) = _tick(kolkata_defs, "maintenance", tick)
    assert request.partition_key == "2026-11-28"
    assert request.run_key == "maintenance:2026-11-28"
    assert request.tags["dagster/priority"] == "5"
    # The requested partition exists although the day is not over (end_offset=1).
    partitions_def = kolkata_defs.resolve_job_def("maintenance").partitions_def
    assert "2026-11-28" in partitions_def.get_partition_keys(current_time=tick)


def test_run_keys_never_repeat_across_days(kolkata_defs: dg.Definitions) -> None:
    keys = [
        request.run_key
        for day in range(1, 29)
        for request in _tick(
            kolkata_defs, "send_payment_reminders", datetime(2026, 11, day, 9, tzinfo=ZoneInfo("Asia/Kolkata"))
        )
    ]
    assert len(keys) == len(set(keys)) == 28


def test_catch_up_requests_recent_days_without_a_successful_run() -> None:
    defs = build_definitions(load_settings({"DAGSTER_HOME": "/tmp/unused", "SCHEDULE_CATCHUP_DAYS": "3"}))
    with dg.instance_for_test() as instance:
        # 2026-11-27 succeeded; 2026-11-26 never ran (the daemon was down).
        job = defs.resolve_job_def("maintenance")
        instance.add_run(
            dg.DagsterRun(
                job_name="maintenance",
                run_id="r1",
                status=dg.DagsterRunStatus.SUCCESS,
                tags={"dagster/partition": "2026-11-27"},
            )
        )
        assert job is not None
        requests = _tick(defs, "maintenance", datetime(2026, 11, 28, 4, 30, tzinfo=ZoneInfo("UTC")), instance)
    assert [request.partition_key for request in requests] == ["2026-11-26", "2026-11-28"]
    assert [request.run_key for request in requests] == ["maintenance:2026-11-26", "maintenance:2026-11-28"]


def test_days_to_request_is_bounded_and_starts_no_earlier_than_the_first_partition() -> None:
    nothing_settled = lambda day: False
    assert days_to_request(date(2026, 11, 28), date(2026, 1, 1), 1, nothing_settled) == [date(2026, 11, 28)]
    assert days_to_request(date(2026, 11, 28), date(2026, 1, 1), 3, nothing_settled) == [
        date(2026, 11, 26),
        date(2026, 11, 27),
        date(2026, 11, 28),
    ]
    assert days_to_request(date(2026, 1, 2), date(2026, 1, 1), 5, nothing_settled) == [
        date(2026, 1, 1),
        date(2026, 1, 2),
    ]
    assert days_to_request(date(2026, 11, 28), date(2026, 1, 1), 3, lambda day: True) == [date(2026, 11, 28)]
