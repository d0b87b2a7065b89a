"""Nothing lost, nothing twice: service faults, hostile records, SMTP refusals and outages, a killed run."""

from __future__ import annotations

import signal
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from cron_pipelines.clients.models import format_instant
from cron_pipelines_tests.demo_services.helpers import due, user
from cron_pipelines_tests.support.job_world import JobWorld, check_result, failure_messages, metadata

D = "2026-11-28"
GOOD_KEYS = ["payment_reminder:due_a:2026-12-01:3", "payment_reminder:due_b:2026-12-01:3"]


def _seed_two(world: JobWorld) -> None:
    world.services.store.add_users([user("usr_a"), user("usr_b")])
    world.services.store.add_dues([due("due_a", user_id="usr_a", due_date="2026-12-01"),
                                   due("due_b", user_id="usr_b", due_date="2026-12-01")])


def test_two_503s_then_success(world: JobWorld) -> None:
    _seed_two(world)
    world.services.sql_faults.add(method="GET", path="/v1/dues", status=503, times=2)
    result = world.run("send_payment_reminders", D)
    assert result.success
    assert world.sent_keys() == GOOD_KEYS
    assert world.services.sql_requests.count(path="/v1/dues") == 3


def test_429_with_retry_after_on_the_ledger(world: JobWorld) -> None:
    _seed_two(world)
    world.services.mongo_faults.add(method="POST", path="/v1/notifications/claims", status=429, retry_after=1)
    started = time.monotonic()
    result = world.run("send_payment_reminders", D)
    assert result.success and world.sent_keys() == GOOD_KEYS
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert world.services.mongo_requests.count(path="/v1/notifications/claims") == 2


def test_401_fails_the_run_naming_the_service_and_sends_nothing(world: JobWorld) -> None:
    _seed_two(world)
    world.configure(INTERNAL_JWT_SECRET="a-different-secret-that-is-long-enough!!")
    result = world.run("send_payment_reminders", D)
    assert not result.success
    errors = failure_messages(result)
    assert "sql-service: GET /v1/dues status=401 code=unauthorized" in errors
    assert world.mails() == [] and world.ledger() == {}
    assert world.services.sql_requests.count(path="/v1/dues") == 1  # never retried


def test_hostile_and_malformed_records_are_skipped_and_recorded_while_the_rest_is_sent(world: JobWorld) -> None:
    store = world.services.store
    store.add_users([
        user("usr_a"), user("usr_b"),
        user("usr_inject", full_name="Eve\r\nBcc: victim@example.com"),
        user("usr_noemail", email=None),
        user("usr_bademail", email="not-an-email"),
        user("usr_html", full_name="<script>alert(1)</script>"),
    ])
    store.add_dues([
        due("due_a", user_id="usr_a", due_date="2026-12-01"),
        due("due_b", user_id="usr_b", due_date="2026-12-01"),
        due("due_inject", user_id="usr_inject", due_date="2026-12-01"),
        due("due_noemail", user_id="usr_noemail", due_date="2026-12-01"),
        due("due_bademail", user_id="usr_bademail", due_date="2026-12-01"),
        due("due_html", user_id="usr_html", due_date="2026-12-01"),
        due("due_badamount", user_id="usr_a", due_date="2026-12-01", amount_cents="lots"),
    ])
    result = world.run("send_payment_reminders", D)

    assert result.success
    assert world.sent_keys() == sorted([*GOOD_KEYS, "payment_reminder:due_html:2026-12-01:3"])
    html_mail = next(m for m in world.mails() if m.notification_id.endswith("due_html:2026-12-01:3"))
    assert "&lt;script&gt;" in html_mail.message.get_body(("html",)).get_content()
    assert all(mail.message["Bcc"] is None for mail in world.mails())
    ledger = world.ledger()
    skipped = {key: record["error"] for key, record in ledger.items() if record["status"] == "skipped"}
    assert skipped == {
        "payment_reminder:due_inject:2026-12-01:3": "display name contains control characters (header injection)",
        "payment_reminder:due_noemail:2026-12-01:3": "missing e-mail address",
        "payment_reminder:due_bademail:2026-12-01:3": "invalid e-mail address: An email address must have an @-sign.",
        "payment_reminder:due_badamount:2026-12-01:3": "malformed due record: amount_cents: Input should be a valid integer, unable to parse string as an integer",
    }
    summary = metadata(result, "payment_reminders")
    assert (summary["sent"], summary["skipped"], summary["failed"]) == (3, 4, 0)
    check = check_result(result, "payment_reminders", "delivery_within_thresholds")
    assert not check.passed and check.severity.value == "WARN"
    # Skips are final: a re-run sends nothing more.
    assert world.run("send_payment_reminders", D).success and len(world.mails()) == 3


def test_an_unkeyable_record_is_counted_as_rejected(world: JobWorld) -> None:
    _seed_two(world)
    world.services.store.add_dues([due("due_baddate", user_id="usr_a", due_date="2026-12-01T10:00")])
    result = world.run("send_payment_reminders", D)
    assert result.success and world.sent_keys() == GOOD_KEYS
    summary = metadata(result, "payment_reminders")
    assert summary["rejected"] == 1
    assert summary["rejected_records_sample"] == [
        "due_baddate: due_date: Datetimes provided to dates should have zero time - e.g. be exact dates"
    ]


def test_a_refused_recipient_fails_alone_and_is_sent_once_by_a_later_run(world: JobWorld) -> None:
    _seed_two(world)
    world.smtp.refused_recipients.add("usr_a@example.com")
    first = world.run("send_payment_reminders", D)

    assert first.success  # one refusal does not fail the run...
    assert world.sent_keys() == [GOOD_KEYS[1]]
    record = world.ledger()[GOOD_KEYS[0]]
    assert record["status"] == "failed" and record["error"].startswith("recipient refused: 550")
    check = check_result(first, "payment_reminders", "delivery_within_thresholds")
    assert not check.passed and check.severity.value == "ERROR"  # ...but the check flags it

    world.smtp.refused_recipients.clear()
    second = world.run("send_payment_reminders", D)
    assert second.success
    assert world.sent_keys() == sorted(GOOD_KEYS)
    assert world.ledger()[GOOD_KEYS[0]]["status"] == "sent" and world.ledger()[GOOD_KEYS[0]]["attempts"] == 2
    assert metadata(second, "payment_reminders")["duplicate"] == 1


def test_smtp_down_then_back_sends_each_notification_exactly_once(world: JobWorld) -> None:
    world.services.store.add_users([user(f"usr_{n}") for n in range(30)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(30)])
    world.smtp.stop()
    down = world.run("send_payment_reminders", D)

    assert not down.success
    assert "30 notification(s) could not be sent and were recorded `failed`" in failure_messages(down)
    assert {record["status"] for record in world.ledger().values()} == {"failed"}

    world.smtp.start()
    back = world.run("send_payment_reminders", D)
    assert back.success
    keys = [mail.notification_id for mail in world.smtp.wait_for(30)]
    assert len(keys) == 30 and len(set(keys)) == 30
    assert {(r["status"], r["attempts"]) for r in world.ledger().values()} == {("sent", 2)}
    assert world.run("send_payment_reminders", D).success and len(world.mails()) == 30


def test_a_run_killed_between_claim_and_send_never_resends_and_maintenance_reports_it(world: JobWorld) -> None:
    world.services.store.add_users([user(f"usr_{n}") for n in range(5)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(5)])
    world.smtp.latency = 30  # the first SMTP command hangs: the run sits between claim and send
    process = world.run_in_subprocess("send_payment_reminders", D)
    deadline = time.monotonic() + 60
    while not world.ledger() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    world.smtp.latency = 0

    claimed = world.ledger()
    assert len(claimed) == 5 and {record["status"] for record in claimed.values()} == {"claimed"}
    assert world.mails() == []

    rerun = world.run("send_payment_reminders", D)
    assert rerun.success and world.mails() == []  # at most once: never resent
    assert metadata(rerun, "payment_reminders")["duplicate"] == 5

    # Twenty minutes later, maintenance reports the five as stale.
    twenty_minutes_ago = format_instant(datetime.now(timezone.utc) - timedelta(minutes=20))
    with sqlite3.connect(world.services.store.path) as connection:
        connection.execute(
            "UPDATE notifications SET claimed_at = ?, claimed_at_utc = ?", (twenty_minutes_ago, twenty_minutes_ago)
        )
    today = datetime.now(timezone.utc).date().isoformat()
    report = world.run("maintenance", today)
    assert report.success
    health = metadata(report, "ledger_health")
    assert health["stale_claims"] == 5
    assert sorted(health["sample_stale_keys"]) == sorted(claimed)
    assert health["stale_by_kind"] == {"payment_reminder": 5}
    assert not check_result(report, "ledger_health", "no_stale_claims").passed
    assert world.mails() == []


@pytest.mark.parametrize("job", ["send_payment_reminders"])
def test_no_secret_reaches_the_event_log_or_the_output(world: JobWorld, capfd: pytest.CaptureFixture[str], job: str) -> None:
    from cron_pipelines_tests.support.smtp_sink import SmtpSink

    with SmtpSink(credentials=("mailer", "smtp-password-do-not-log")) as authenticated:
        world.configure(SMTP_PORT=str(authenticated.port), SMTP_USERNAME="mailer", SMTP_PASSWORD="smtp-password-do-not-log")
        _seed_two(world)
        world.services.sql_faults.add(method="GET", path="/v1/dues", status=503)  # a logged retry
        ok = world.run(job, D)
        world.configure(INTERNAL_JWT_SECRET="a-different-secret-that-is-long-enough!!")
        failed = world.run(job, D)  # a logged authentication failure
    assert ok.success and not failed.success and len(authenticated.received) == 2
    output = capfd.readouterr()
    logs = "\n".join(
        f"{entry.message} {entry.dagster_event.event_specific_data if entry.dagster_event else ''}"
        for run in (ok, failed)
        for entry in world.instance.all_logs(run.run_id)
    )
    everything = logs + output.out + output.err
    assert "retry 1/" in everything  # the retry is in the log...
    for secret in ("smtp-password-do-not-log", world.environment["INTERNAL_JWT_SECRET"],
                   "test-secret-0123456789abcdef0123456789abcdef", "eyJ"):  # "eyJ" starts every JWT
        assert secret not in everything  # ...no credential is


def test_a_lost_claim_answer_is_recognised_on_retry_and_sent_once(world: JobWorld) -> None:
    _seed_two(world)
    # The ledger claims the chunk, then the answer is lost: the client retries the same request.
    world.services.mongo_faults.add(method="POST", path="/v1/notifications/claims", status=502, after_handling=True)
    result = world.run("send_payment_reminders", D)

    assert result.success
    assert world.sent_keys() == GOOD_KEYS  # sent, not stranded as `claimed` by its own retry
    assert {record["status"] for record in world.ledger().values()} == {"sent"}
    assert world.services.mongo_requests.count(path="/v1/notifications/claims") == 2
    summary = metadata(result, "payment_reminders")
    assert (summary["claimed"], summary["duplicate"]) == (2, 0)


def test_smtp_down_across_chunks_leaves_nothing_claimed_and_a_later_run_sends_all_once(world: JobWorld) -> None:
    # 1,200 reminders are three chunks; the second is claimed while the first is being sent.
    world.services.store.add_users([user(f"usr_{n}") for n in range(1200)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(1200)])
    world.smtp.stop()
    down = world.run("send_payment_reminders", D)

    assert not down.success
    ledger = world.ledger()
    assert len(ledger) == 1000 and {record["status"] for record in ledger.values()} == {"failed"}
    assert "1000 notification(s) could not be sent and were recorded `failed`" in failure_messages(down)

    world.smtp.start()
    assert world.run("send_payment_reminders", D).success
    keys = [mail.notification_id for mail in world.smtp.wait_for(1200)]
    assert len(keys) == 1200 and len(set(keys)) == 1200
    assert {record["status"] for record in world.ledger().values()} == {"sent"}


def test_a_ledger_outage_while_recording_leaves_only_what_was_sent_claimed(world: JobWorld) -> None:
    # Three chunks. The first chunk's outcomes cannot be recorded (every attempt answered 503),
    # while the second chunk is already claimed: it is recorded `failed`, not stranded.
    world.services.store.add_users([user(f"usr_{n}") for n in range(1200)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(1200)])
    world.services.mongo_faults.add(method="POST", path="/v1/notifications/outcomes", status=503, times=4)
    down = world.run("send_payment_reminders", D)

    assert not down.success
    assert "mongo-service: POST /v1/notifications/outcomes" in failure_messages(down)
    statuses = [record["status"] for record in world.ledger().values()]
    # Sent but unrecorded: `claimed`, never resent (maintenance reports them). Claimed, unsent: `failed`.
    assert (statuses.count("claimed"), statuses.count("failed"), len(world.smtp.wait_for(500))) == (500, 500, 500)

    assert world.run("send_payment_reminders", D).success
    keys = [mail.notification_id for mail in world.smtp.wait_for(1200)]
    assert len(keys) == 1200 and len(set(keys)) == 1200
