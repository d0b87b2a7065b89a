"""The benchmark still works and counts right (a small size; the figures come from `make bench`)."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from benchmarks.baseline import build_message
from benchmarks.run import DEFAULT_BATCH_SIZE, Measurement, time_ratio
from cron_pipelines.delivery.channels.email.composer import MessageComposer
from cron_pipelines.models.payloads import Due
from cron_pipelines.rules.payments import PaymentReminderPolicy, payment_reminder

PROJECT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_both_sides_end_to_end_and_counts_correctly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--size", "2000", "--repeat", "2", "--json"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    project, baseline, project_again, baseline_again = report["measurements"]
    # Rounds alternate the sides, each on its own fresh copy of the data: every round sends all 2,000 once.
    assert [(m["side"], m["repetition"]) for m in report["measurements"]] == [
        ("project", 1), ("baseline", 1), ("project", 2), ("baseline", 2),
    ]  # fmt: skip
    for side in (project, baseline, project_again, baseline_again):
        assert side["emails_received"] == 2000 and side["duplicate_emails"] == 0
        assert side["seconds"] > 0 and side["peak_rss_mb"] > 0
    # Two pages of 1,000 and batches: no per-record requests. Both claim (and look preferences up)
    # DELIVERY_BATCH_SIZE at a time; the project also records every second when a batch is slow.
    batches = 2000 // DEFAULT_BATCH_SIZE
    for side in (project, baseline):
        requests = side["http_requests"]
        assert requests["sql-service GET /v1/dues"] == 2
        assert requests["mongo-service POST /v1/notifications/claims"] == batches
        assert requests["mongo-service POST /v1/notification-preferences/lookup"] == batches  # one per batch
        assert batches <= requests["mongo-service POST /v1/notifications/outcomes"] <= batches + side["seconds"]
    assert project["connections"] == baseline["connections"] == 4
    assert 40 < project["peak_rss_mb"] < 400 and 20 < baseline["peak_rss_mb"] < project["peak_rss_mb"]
    # A summary per asset, not an event per notification.
    assert project["dagster_events"] < 40


def _measurement(side: str, seconds: float, repetition: int, shards: int = 1) -> Measurement:
    return Measurement(side, 1000, 4, shards, seconds, 0.0, None, 0.0, 1000, 1000, 0, {}, repetition=repetition)


def test_the_time_ratio_is_of_medians_and_lists_each_round() -> None:
    measurements = [
        _measurement("project", 12.0, 1),
        _measurement("project", 6.0, 1, shards=2),  # another setting: not compared with the baseline
        _measurement("baseline", 10.0, 1),
        _measurement("project", 30.0, 2),
        _measurement("baseline", 10.0, 2),
        _measurement("project", 11.0, 3),
        _measurement("baseline", 8.0, 3),
    ]
    ratio = time_ratio(measurements, 1000, connections=4, shards=1)
    assert ratio is not None
    median, each_round = ratio
    assert median == 12.0 / 10.0  # one slow round moves neither median
    assert each_round == [1.2, 3.0, 11.0 / 8.0]
    assert time_ratio(measurements, 2000, connections=4, shards=1) is None


def test_benchmark_with_preferences_sends_what_is_owed_once() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--size", "2000", "--preferences", "--no-baseline", "--json"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (project,) = json.loads(result.stdout)["measurements"]
    # 200 users opted out; the 200 digest readers (one due each) get one digest each.
    assert project["expected_emails"] == project["emails_received"] == 1800 and project["duplicate_emails"] == 0
    requests = project["http_requests"]
    # One claim per batch of the stream (its digest notifications set aside), then the 200 digests
    # (one key each) packed into claims of DELIVERY_BATCH_SIZE.
    batches = 2000 // DEFAULT_BATCH_SIZE
    assert requests["mongo-service POST /v1/notifications/claims"] == batches + 200 // DEFAULT_BATCH_SIZE
    assert requests["mongo-service POST /v1/notification-preferences/lookup"] == batches


def test_benchmark_with_shards_delivers_each_key_once_and_reports_each_shard_count() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--size", "2000", "--shards", "1,2", "--no-baseline", "--json"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    one, two = json.loads(result.stdout)["measurements"]
    assert (one["shards"], two["shards"]) == (1, 2)
    for side in (one, two):
        assert side["emails_received"] == 2000 and side["duplicate_emails"] == 0
    # Each shard reads the listing itself (2 pages each) and claims only its own users.
    assert two["http_requests"]["sql-service GET /v1/dues"] == 4
    batches = 2000 // DEFAULT_BATCH_SIZE  # and at most one part-filled batch per shard
    assert batches <= two["http_requests"]["mongo-service POST /v1/notifications/claims"] <= batches + 2
    assert one["largest_step_process_rss_mb"] is None and 40 < two["largest_step_process_rss_mb"] < 400


@pytest.mark.parametrize(
    ("due_date", "name", "description"),
    [
        ("2026-12-01", "User 42", "Membership fee"),
        ("2026-12-02", "Ann & <Bob>", None),
        ("2026-12-04", None, 'Fee "Q4" & more'),
        ("2026-12-08", "Zoë O'Brien", "Membership fee"),
    ],
)
def test_the_plain_script_sends_the_projects_email(due_date: str, name: str | None, description: str | None) -> None:
    """Same work: the mail server's cost grows with the message, so the baseline must send the same one."""
    day = date(2026, 12, 1)
    raw = {
        "id": "due_0000042",
        "user_id": "usr_0000042",
        "amount_cents": 125_000,
        "currency": "INR",
        "due_date": due_date,
        "status": "pending",
        "description": description,
        "user": {"id": "usr_0000042", "email": "user42@example.com", "full_name": name},
    }
    notification = payment_reminder(Due.model_validate(raw), day, PaymentReminderPolicy())
    assert notification is not None
    ours = MessageComposer("Cron Pipelines <no-reply@example.com>").compose(notification, "<m@example.com>")
    days_before = (date.fromisoformat(due_date) - day).days
    plain = build_message(raw, days_before, notification.key, "<m@example.com>")

    project, baseline = (email.message_from_bytes(data, policy=email.policy.default) for data in (ours.data, plain))
    for header in ("From", "To", "Subject", "Message-ID", "X-Notification-Kind", "X-Notification-Id", "MIME-Version"):
        assert baseline[header] == project[header], header
    for part in ("plain", "html"):
        assert baseline.get_body((part,)).get_content() == project.get_body((part,)).get_content(), part
    assert abs(len(plain) - len(ours.data)) <= 16  # the boundary, the name's quoting
