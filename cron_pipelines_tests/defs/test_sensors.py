"""verification_attempts_sensor against the stand-in on loopback; run_failure_alert_sensor with a real failed run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from cron_pipelines.models.payloads import format_instant
from cron_pipelines_tests.demo_services.helpers import attempt, due, user
from cron_pipelines_tests.support.job_world import JobWorld, job_environment
from cron_pipelines_tests.support.keys import TEST_JWT_SECRET
from cron_pipelines_tests.support.services import ServiceWorld
from cron_pipelines_tests.support.smtp_sink import SmtpSink


@pytest.fixture
def world(services: ServiceWorld, tmp_path: Path) -> Iterator[JobWorld]:
    with SmtpSink() as smtp, dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield JobWorld(services, smtp, job_environment(services, smtp, str(tmp_path)), instance)


def _evaluate(world: JobWorld, cursor: str | None) -> dg.SensorResult | dg.SkipReason:
    sensor = world.defs.resolve_sensor_def("verification_attempts_sensor")
    with dg.build_sensor_context(
        instance=world.instance,
        cursor=cursor,
        definitions=world.defs,
        resources={"mongo_service": world.defs.resources["mongo_service"]},
    ) as context:
        return sensor.evaluate_tick(context)


def _ago(minutes: int) -> str:
    return format_instant(datetime.now(UTC) - timedelta(minutes=minutes))


def test_new_attempts_launch_verify_employees_for_the_touched_verifications(world: JobWorld) -> None:
    world.services.store.add_attempts(
        [
            attempt("att_1", verification_id="ver_a", attempted_at=_ago(30)),
            attempt("att_2", verification_id="ver_b", attempted_at=_ago(20)),
            attempt("att_3", verification_id="ver_a", attempted_at=_ago(10)),
            attempt("att_old", verification_id="ver_z", attempted_at=_ago(60 * 48)),  # before the first look-back
        ]
    )
    first = _evaluate(world, None)
    (request,) = first.run_requests
    assert request.job_name in (None, "verify_employees")
    today = datetime.now(UTC).date().isoformat()
    assert request.partition_key == today
    assert request.run_config["ops"]["verify_employees_assets"]["config"]["verification_ids"] == ["ver_a", "ver_b"]
    assert request.run_key.startswith("verify_employees:attempts:")
    cursor = json.loads(first.cursor)
    assert cursor["id"] == "att_3"

    # Nothing new: a skip that says why, and the cursor stays.
    quiet = _evaluate(world, first.cursor)
    assert quiet.skip_message and "no verification attempts after" in quiet.skip_message

    # One new attempt: a run for its verification only, with a new run key.
    world.services.store.add_attempts([attempt("att_4", verification_id="ver_c", attempted_at=_ago(1))])
    second = _evaluate(world, first.cursor)
    (again,) = second.run_requests
    assert again.run_config["ops"]["verify_employees_assets"]["config"]["verification_ids"] == ["ver_c"]
    assert again.run_key != request.run_key
    assert json.loads(second.cursor)["id"] == "att_4"


def test_the_same_attempts_give_the_same_run_key(world: JobWorld) -> None:
    world.services.store.add_attempts([attempt("att_1", verification_id="ver_a", attempted_at=_ago(5))])
    first = _evaluate(world, None)
    replay = _evaluate(world, None)  # a tick whose cursor was not committed sees the same attempts
    assert first.run_requests[0].run_key == replay.run_requests[0].run_key


def test_attempts_at_the_same_instant_are_ordered_by_id(world: JobWorld) -> None:
    instant = _ago(5)
    world.services.store.add_attempts([attempt("att_1", verification_id="ver_a", attempted_at=instant)])
    first = _evaluate(world, None)
    world.services.store.add_attempts([attempt("att_2", verification_id="ver_b", attempted_at=instant)])
    second = _evaluate(world, first.cursor)
    assert second.run_requests[0].run_config["ops"]["verify_employees_assets"]["config"]["verification_ids"] == [
        "ver_b"
    ]


def test_a_failed_run_mails_the_operators_once(world: JobWorld) -> None:
    world.services.store.add_users([user("usr_1")])
    world.services.store.add_dues([due("due_1", due_date="2026-12-01")])
    world.configure(
        INTERNAL_JWT_SECRET="a-different-secret-that-is-long-enough!!",
        DAGSTER_WEBSERVER_URL="https://dagster.example.com",
    )
    failed = world.run("send_payment_reminders", "2026-11-28")
    assert not failed.success
    world.configure(INTERNAL_JWT_SECRET=TEST_JWT_SECRET)  # the alert itself goes through the ledger

    sensor = world.defs.resolve_sensor_def("run_failure_alert_sensor")
    run = world.instance.get_run_by_id(failed.run_id)
    failure_event = next(
        entry.dagster_event
        for entry in world.instance.all_logs(failed.run_id)
        if entry.dagster_event and entry.dagster_event.event_type_value == "PIPELINE_FAILURE"
    )
    resources = {name: world.defs.resources[name] for name in ("mongo_service", "mailer")}
    for _ in range(2):  # a re-evaluated tick must not mail twice
        with dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert_sensor",
            dagster_event=failure_event,
            dagster_instance=world.instance,
            dagster_run=run,
            resources=resources,
        ).for_run_failure() as context:
            sensor(context)

    (mail,) = world.smtp.wait_for(1)
    message = mail.message
    assert mail.rcpt_tos == ("ops@example.com",)
    assert message["X-Notification-Kind"] == "ops_alert"
    assert message["X-Notification-Id"] == f"ops_alert:{failed.run_id}"
    assert message["Subject"] == "[cron_pipelines] run failed: send_payment_reminders (2026-11-28)"
    body = message.get_body(("plain",)).get_content()
    assert f"https://dagster.example.com/runs/{failed.run_id}" in body
    assert "sql-service: GET /v1/dues status=401" in body
    assert world.ledger()[f"ops_alert:{failed.run_id}"]["status"] == "sent"


def test_claims_stuck_after_a_run_died_are_reported_within_minutes_and_mailed_once_per_run(world: JobWorld) -> None:
    dead = world.run("maintenance", "2026-11-28")  # any finished run of this instance stands for the dead one
    twenty_minutes_ago = format_instant(datetime.now(UTC) - timedelta(minutes=20))
    world.services.store.add_notifications(
        [
            {
                "idempotency_key": f"payment_reminder:due_{n}:2026-12-01:3",
                "kind": "payment_reminder",
                "status": "claimed",
                "run_id": dead.run_id,
                "attempts": 1,
                "claimed_at": twenty_minutes_ago,
                "metadata": {"planned_message_id": f"<planned.{n}@example.com>"},
            }
            for n in range(3)
        ]
        + [
            # Claimed a minute ago: a live run's batch on its way, not stuck.
            {
                "idempotency_key": "payment_reminder:due_fresh:2026-12-01:3",
                "kind": "payment_reminder",
                "status": "claimed",
                "run_id": "live-run",
                "attempts": 1,
                "claimed_at": format_instant(datetime.now(UTC) - timedelta(minutes=1)),
            },
        ]
    )
    sensor = world.defs.resolve_sensor_def("stuck_claims_sensor")
    resources = {name: world.defs.resources[name] for name in ("mongo_service", "mailer")}
    reasons = []
    for _ in range(2):  # the next tick reports again, and mails no second time
        with dg.build_sensor_context(instance=world.instance, resources=resources) as context:
            reasons.append(sensor(context))

    assert all(isinstance(reason, dg.SkipReason) for reason in reasons)
    assert f"3 in run {dead.run_id}" in reasons[0].skip_message and "live-run" not in reasons[0].skip_message
    assert f"alert mailed for run(s) ['{dead.run_id}']" in reasons[0].skip_message
    assert "alert mailed for run(s) none new" in reasons[1].skip_message
    (mail,) = world.smtp.wait_for(1)
    assert mail.notification_id == f"ops_alert:stuck_claims:{dead.run_id}"
    assert mail.message["Subject"] == "[cron_pipelines] notifications stuck in `claimed`: maintenance (2026-11-28)"
    body = mail.message.get_body(("plain",)).get_content()
    assert "left 3 notification(s) `claimed`" in body
    assert "payment_reminder:due_0:2026-12-01:3  Message-ID <planned.0@example.com>" in body
    # It leads with finding out what was delivered, and says what resending the whole run risks.
    assert body.index("look each") < body.index("cron-pipelines settle --key KEY --as sent")
    assert f"cron-pipelines settle --run {dead.run_id} --as failed\n--i-accept-duplicates" in body
    assert "the delivered ones arrive twice" in body
