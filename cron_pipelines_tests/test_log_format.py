"""JSON log lines through Dagster's handler config: run context, request ids, outcomes, no secrets or addresses."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cron_pipelines.log_format import JsonLogFormatter, mask_emails
from cron_pipelines_tests.demo_services.helpers import due, user
from cron_pipelines_tests.support.job_world import JobWorld, job_environment
from cron_pipelines_tests.support.keys import TEST_JWT_SECRET
from cron_pipelines_tests.support.services import ServiceWorld
from cron_pipelines_tests.support.smtp_sink import SmtpSink


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@pytest.fixture
def world(services: ServiceWorld, tmp_path: Path, log_file: Path) -> Iterator[JobWorld]:
    python_logs = {
        "managed_python_loggers": ["cron_pipelines"],
        "python_log_level": "INFO",
        "dagster_handler_config": {
            "handlers": {"json": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "json"}},
            "formatters": {"json": {"()": "cron_pipelines.log_format.JsonLogFormatter"}},
        },
    }
    home = tmp_path / "home"
    home.mkdir()
    with (
        SmtpSink() as smtp,
        dg.instance_for_test(temp_dir=str(home), overrides={"python_logs": python_logs}) as instance,
    ):
        yield JobWorld(services, smtp, job_environment(services, smtp, str(home)), instance)


def test_every_event_is_one_json_line_with_the_run_context(world: JobWorld, log_file: Path) -> None:
    world.services.store.add_users([user("usr_a")])
    world.services.store.add_dues([due("due_a", user_id="usr_a", due_date="2026-12-01")])
    world.services.sql_faults.add(method="GET", path="/v1/dues", status=503)
    result = world.run("send_payment_reminders", "2026-11-28")
    assert result.success

    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    run_lines = [line for line in lines if line.get("run_id") == result.run_id]
    assert len(run_lines) >= 10
    assert all(line["job"] == "send_payment_reminders" and line["partition"] == "2026-11-28" for line in run_lines)
    assert {"RUN_START", "STEP_SUCCESS", "ASSET_MATERIALIZATION", "RUN_SUCCESS"} <= {
        line.get("event") for line in run_lines
    }
    (retry,) = [line for line in run_lines if line.get("outcome") == "retry"]
    assert retry["level"] == "WARNING" and retry["service"] == "sql-service" and retry["status"] == "503"
    assert len(retry["request_id"]) == 32 and retry["step"] == "payment_reminders"
    assert TEST_JWT_SECRET not in text and "eyJ" not in text and "usr_a@example.com" not in text


def test_formatter_masks_addresses_at_info_and_keeps_them_at_debug() -> None:
    formatter = JsonLogFormatter()
    info = logging.LogRecord("cron_pipelines.x", logging.INFO, __file__, 1, "sent to asha.rao@example.com", None, None)
    debug = logging.LogRecord(
        "cron_pipelines.x", logging.DEBUG, __file__, 1, "sent to asha.rao@example.com", None, None
    )
    info.request_id = "abc"
    assert json.loads(formatter.format(info)) | {"ts": None} == {
        "ts": None,
        "level": "INFO",
        "logger": "cron_pipelines.x",
        "message": "sent to a***@example.com",
        "request_id": "abc",
    }
    assert json.loads(formatter.format(debug))["message"] == "sent to asha.rao@example.com"
    assert mask_emails("a@b.co and bob.smith+x@mail.example.org") == "a***@b.co and b***@mail.example.org"


def test_every_service_request_gets_a_request_log_line_outside_the_event_log(
    world: JobWorld, log_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    world.services.store.add_users([user("usr_a"), user("usr_b")])
    world.services.store.add_dues(
        [due("due_a", user_id="usr_a", due_date="2026-12-01"), due("due_b", user_id="usr_b", due_date="2026-12-01")]
    )
    world.services.mongo_faults.add(method="POST", path="/v1/notifications/claims", status=503)
    result = world.run("send_payment_reminders", "2026-11-28")
    assert result.success

    stderr = capfd.readouterr().err
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    requests = [
        line for line in lines if line["logger"] == "cron_pipelines.requests" and line.get("run_id") == result.run_id
    ]
    served = world.services.sql_requests.entries + world.services.mongo_requests.entries
    # One line per request the services answered, joined by X-Request-ID, each with its outcome.
    assert sorted(line["request_id"] for line in requests) == sorted(entry.request_id for entry in served)
    assert {(line["endpoint"], line["status"], line["outcome"]) for line in requests} == {
        ("/v1/dues", "200", "ok"),
        ("/v1/notifications/claims", "503", "retry"),
        ("/v1/notifications/claims", "200", "ok"),
        ("/v1/notification-preferences/lookup", "200", "ok"),
        ("/v1/notifications/outcomes", "200", "ok"),
    }
    assert all(line["job"] == "send_payment_reminders" and line["partition"] == "2026-11-28" for line in requests)
    assert TEST_JWT_SECRET not in stderr and "eyJ" not in stderr
    # The event log (and the handler fed from it) holds the retry only, not a line per request.
    events = log_file.read_text()
    ok_request_ids = {line["request_id"] for line in requests if line["outcome"] == "ok"}
    assert not any(request_id in events for request_id in ok_request_ids)
    assert (
        sum(1 for record in world.instance.all_logs(result.run_id) if "/v1/notifications/outcomes" in record.message)
        == 0
    )
