"""verification_attempts_sensor against the stand-in on loopback; run_failure_alert_sensor with a real failed run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from cron_pipelines.models.payloads import format_instant
from cron_pipelines_tests.demo_services.helpers import attempt
from cron_pipelines_tests.support.job_world import JobWorld, job_environment
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
