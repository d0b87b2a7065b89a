"""Nothing lost, nothing twice: service faults, hostile records, SMTP refusals and outages, a killed run."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from cron_pipelines.delivery.runtime import DELIVERY_GC_THRESHOLD
from cron_pipelines.delivery.stats import DeliveryStats
from cron_pipelines.models.payloads import format_instant
from cron_pipelines_tests.demo_services.helpers import due, user
from cron_pipelines_tests.support.job_world import JobWorld, check_result, failure_messages, metadata
from cron_pipelines_tests.support.smtp_sink import ReceivedMail

D = "2026-11-28"
GOOD_KEYS = ["payment_reminder:due_a:2026-12-01:3", "payment_reminder:due_b:2026-12-01:3"]


def _seed_two(world: JobWorld) -> None:
    world.services.store.add_users([user("usr_a"), user("usr_b")])
    world.services.store.add_dues(
        [due("due_a", user_id="usr_a", due_date="2026-12-01"), due("due_b", user_id="usr_b", due_date="2026-12-01")]
    )


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
    store.add_users(
        [
            user("usr_a"),
            user("usr_b"),
            user("usr_inject", full_name="Eve\r\nBcc: victim@example.com"),
            user("usr_noemail", email=None),
            user("usr_bademail", email="not-an-email"),
            user("usr_html", full_name="<script>alert(1)</script>"),
        ]
    )
    store.add_dues(
        [
            due("due_a", user_id="usr_a", due_date="2026-12-01"),
            due("due_b", user_id="usr_b", due_date="2026-12-01"),
            due("due_inject", user_id="usr_inject", due_date="2026-12-01"),
            due("due_noemail", user_id="usr_noemail", due_date="2026-12-01"),
            due("due_bademail", user_id="usr_bademail", due_date="2026-12-01"),
            due("due_html", user_id="usr_html", due_date="2026-12-01"),
            due("due_badamount", user_id="usr_a", due_date="2026-12-01", amount_cents="lots"),
        ]
    )
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
    assert summary["invalid"] == 1
    assert summary["invalid_records_sample"] == [
        "due_baddate: due_date: Datetimes provided to dates should have zero time - e.g. be exact dates"
    ]


def test_a_permanent_refusal_is_recorded_bounced_and_never_tried_again(world: JobWorld) -> None:
    _seed_two(world)
    world.smtp.refused_recipients.add("usr_a@example.com")
    first = world.run("send_payment_reminders", D)

    assert first.success  # one refusal does not fail the run
    assert world.sent_keys() == [GOOD_KEYS[1]]
    record = world.ledger()[GOOD_KEYS[0]]
    assert record["status"] == "skipped"
    assert record["error"].startswith("bounced: recipient refused: 550 5.1.1 <usr_a@example.com>")
    assert metadata(first, "payment_reminders")["skipped"] == 1

    world.smtp.refused_recipients.clear()
    second = world.run("send_payment_reminders", D)
    assert second.success and world.sent_keys() == [GOOD_KEYS[1]]  # a bounce is final
    assert world.smtp.rcpt_attempts["usr_a@example.com"] == 1
    assert metadata(second, "payment_reminders")["duplicate"] == 2


def test_a_temporary_refusal_is_retried_by_later_runs_up_to_the_attempt_cap(world: JobWorld) -> None:
    _seed_two(world)
    world.configure(MAIL_MAX_ATTEMPTS="2")
    world.smtp.temporarily_refused_recipients.add("usr_a@example.com")
    first = world.run("send_payment_reminders", D)

    assert first.success and world.sent_keys() == [GOOD_KEYS[1]]
    record = world.ledger()[GOOD_KEYS[0]]
    assert (record["status"], record["attempts"]) == ("failed", 1)
    assert record["error"].startswith("recipient refused: 451 4.3.0")
    check = check_result(first, "payment_reminders", "delivery_within_thresholds")
    assert not check.passed and check.severity.value == "ERROR"

    assert world.run("send_payment_reminders", D).success  # attempt 2 of 2: refused again
    assert (world.ledger()[GOOD_KEYS[0]]["status"], world.ledger()[GOOD_KEYS[0]]["attempts"]) == ("failed", 2)
    third = world.run("send_payment_reminders", D)  # over the cap: skipped, not tried
    record = world.ledger()[GOOD_KEYS[0]]
    assert record["status"] == "skipped" and "gave up after 2 failed attempts" in record["error"]
    assert world.smtp.rcpt_attempts["usr_a@example.com"] == 2
    assert metadata(third, "payment_reminders")["skipped"] == 1

    world.smtp.temporarily_refused_recipients.clear()
    assert world.run("send_payment_reminders", D).success
    assert world.sent_keys() == [GOOD_KEYS[1]]  # skipped is final


def test_a_temporary_refusal_that_clears_is_sent_once_by_a_later_run(world: JobWorld) -> None:
    _seed_two(world)
    world.smtp.temporarily_refused_recipients.add("usr_a@example.com")
    assert world.run("send_payment_reminders", D).success
    world.smtp.temporarily_refused_recipients.clear()
    second = world.run("send_payment_reminders", D)
    assert second.success and world.sent_keys() == sorted(GOOD_KEYS)
    assert (world.ledger()[GOOD_KEYS[0]]["status"], world.ledger()[GOOD_KEYS[0]]["attempts"]) == ("sent", 2)
    assert metadata(second, "payment_reminders")["duplicate"] == 1


def test_a_relay_down_when_the_run_starts_claims_nothing_and_spends_no_attempt(world: JobWorld) -> None:
    world.services.store.add_users([user(f"usr_{n}") for n in range(30)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(30)])
    world.smtp.stop()
    down = world.run("send_payment_reminders", D)

    assert not down.success
    assert f"cannot connect to SMTP server 127.0.0.1:{world.smtp.port}" in failure_messages(down)
    assert world.ledger() == {}  # the server was asked before anything was claimed

    world.smtp.start()
    back = world.run("send_payment_reminders", D)
    assert back.success
    keys = [mail.notification_id for mail in world.smtp.wait_for(30)]
    assert len(keys) == 30 and len(set(keys)) == 30
    assert {(r["status"], r["attempts"]) for r in world.ledger().values()} == {("sent", 1)}
    assert world.run("send_payment_reminders", D).success and len(world.mails()) == 30


def test_a_killed_run_leaves_a_bounded_settleable_window_and_settling_delivers_each_key_once(world: JobWorld) -> None:
    count = 1500
    world.services.store.add_users([user(f"usr_{n}") for n in range(count)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(count)])
    world.smtp.latency = 0.002  # a run of some seconds, killed in the middle
    process = world.run_in_subprocess("send_payment_reminders", D)
    world.smtp.wait_for(400, timeout=120)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    world.smtp.latency = 0

    ledger = world.ledger()
    stuck = {key: record for key, record in ledger.items() if record["status"] == "claimed"}
    assert 0 < len(stuck) <= 100  # the stated bound: two batches of DELIVERY_BATCH_SIZE (50)
    # Each stuck claim names the Message-ID its email was to carry, to look up in the mail logs.
    delivered_ids = {mail.message["Message-ID"] for mail in world.mails()}
    assert all(record["metadata"]["planned_message_id"].startswith("<") for record in stuck.values())
    (run_id,) = {record["run_id"] for record in stuck.values()}

    rerun = world.run("send_payment_reminders", D)  # never resends a stuck claim by itself
    assert rerun.success and metadata(rerun, "payment_reminders")["duplicate"] >= len(stuck)
    assert not any(mail.notification_id in stuck for mail in world.mails()[len(delivered_ids) :])

    # The operator checks the mail server's log: delivered ones are settled `sent`, the rest `failed`.
    delivered = [key for key, record in stuck.items() if record["metadata"]["planned_message_id"] in delivered_ids]
    undelivered = sorted(set(stuck) - set(delivered))
    refused = _cli(world, "settle", "--key", undelivered[0], "--as", "failed")
    assert refused.returncode == 3 and "still in progress" in refused.stderr  # its Dagster run is still STARTED
    # Resending the whole run would resend the delivered ones too: refused without the explicit consent.
    blanket = _cli(world, "settle", "--run", run_id, "--as", "failed", "--force")
    assert blanket.returncode == 2 and "--i-accept-duplicates" in blanket.stderr
    if delivered:
        keys = [argument for key in delivered for argument in ("--key", key)]
        assert _cli(world, "settle", *keys, "--as", "sent", "--force").returncode == 0
        assert all(
            world.ledger()[key]["message_id"] == stuck[key]["metadata"]["planned_message_id"] for key in delivered
        )
    preview = _cli(world, "settle", "--run", run_id, "--as", "failed", "--force", "--dry-run")
    assert f"{len(undelivered)} notification(s) would be recorded `failed`" in preview.stdout
    keys = [argument for key in undelivered for argument in ("--key", key)]
    settled = _cli(world, "settle", *keys, "--as", "failed", "--force", "--note", "not in the mail log")
    assert settled.returncode == 0, settled.stdout + settled.stderr
    notes = {world.ledger()[key]["error"] for key in stuck}
    assert all(note.startswith("settled as ") for note in notes)

    assert world.run("send_payment_reminders", D).success
    keys = [mail.notification_id for mail in world.smtp.wait_for(count)]
    assert len(keys) == count and len(set(keys)) == count  # every key exactly once
    assert {record["status"] for record in world.ledger().values()} == {"sent"}


def test_maintenance_reports_claims_left_by_a_dead_run(world: JobWorld) -> None:
    world.services.store.add_notifications(
        [
            {
                "idempotency_key": f"payment_reminder:due_{n}:2026-12-01:3",
                "kind": "payment_reminder",
                "status": "claimed",
                "run_id": "dead-run",
                "attempts": 1,
                "claimed_at": format_instant(datetime.now(UTC) - timedelta(minutes=20)),
                "metadata": {"planned_message_id": f"<{n}@example.com>"},
            }
            for n in range(5)
        ]
    )
    today = datetime.now(UTC).date().isoformat()
    report = world.run("maintenance", today)
    assert report.success
    health = metadata(report, "ledger_health")
    assert health["stale_claims"] == 5 and health["stale_by_run"] == {"dead-run": 5}
    assert health["stale_by_kind"] == {"payment_reminder": 5}
    assert not check_result(report, "ledger_health", "no_stale_claims").passed
    assert world.mails() == []


def _cli(world: JobWorld, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **world.environment, "DAGSTER_HOME": world.instance.root_directory}
    return subprocess.run(
        [sys.executable, "-m", "cron_pipelines.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("job", ["send_payment_reminders"])
def test_no_secret_reaches_the_event_log_or_the_output(
    world: JobWorld, capfd: pytest.CaptureFixture[str], job: str
) -> None:
    from cron_pipelines_tests.support.smtp_sink import SmtpSink

    with SmtpSink(credentials=("mailer", "smtp-password-do-not-log")) as authenticated:
        world.configure(
            SMTP_PORT=str(authenticated.port),
            SMTP_USERNAME="mailer",
            SMTP_PASSWORD="smtp-password-do-not-log",
            SMTP_ALLOW_PLAINTEXT_AUTH="true",  # a sink on loopback
        )
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
    for secret in (
        "smtp-password-do-not-log",
        world.environment["INTERNAL_JWT_SECRET"],
        "test-secret-0123456789abcdef0123456789abcdef",
        "eyJ",
    ):  # "eyJ" starts every JWT
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


def test_a_relay_failing_mid_run_releases_what_it_did_not_take_and_a_later_run_sends_all_once(
    world: JobWorld,
) -> None:
    # 250 reminders are three batches of 100; the second is claimed while the first is being sent.
    world.services.store.add_users([user(f"usr_{n}") for n in range(250)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(250)])
    world.smtp.sender_reply, world.smtp.refuse_senders_after = "421 4.3.2 Service shutting down", 100
    down = world.run("send_payment_reminders", D)

    assert not down.success
    ledger = world.ledger()
    statuses = Counter(record["status"] for record in ledger.values())
    # What the server took is `sent` (100, or 101 when the second session started one meanwhile);
    # everything else that was claimed is `released`, nothing is left `claimed`.
    assert set(statuses) == {"sent", "released"} and statuses["sent"] in (100, 101)
    assert statuses["sent"] == len(world.smtp.received)
    errors = failure_messages(down)
    assert (
        f"the mail server failed, not the messages: SMTP server 127.0.0.1:{world.smtp.port} refused the sender "
        "no-reply@example.com: 421 4.3.2 Service shutting down. Every claimed notification it did not take is "
        "recorded `released`"
    ) in errors

    world.smtp.sender_reply = None
    assert world.run("send_payment_reminders", D).success
    keys = [mail.notification_id for mail in world.smtp.wait_for(250)]
    assert len(keys) == 250 and len(set(keys)) == 250
    # A release is not an attempt: every record was claimed once as far as the attempt cap is concerned.
    assert {(record["status"], record["attempts"]) for record in world.ledger().values()} == {("sent", 1)}


def test_a_v1_1_ledger_gets_failed_instead_of_released_and_the_run_says_so_once(world: JobWorld) -> None:
    world.services.speak_contract("1.1")
    world.services.store.add_users([user(f"usr_{n}") for n in range(250)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(250)])
    world.smtp.sender_reply, world.smtp.refuse_senders_after = "421 4.3.2 Service shutting down", 100
    down = world.run("send_payment_reminders", D)

    assert not down.success
    statuses = Counter(record["status"] for record in world.ledger().values())
    assert set(statuses) == {"sent", "failed"} and statuses["sent"] == len(world.smtp.received)
    assert all(
        record["error"].startswith("released: ") for record in world.ledger().values() if record["status"] == "failed"
    )
    warnings = [
        entry.user_message
        for entry in world.instance.all_logs(down.run_id)
        if "does not take `released` outcomes (contract v1.1)" in entry.user_message
    ]
    assert len(warnings) == 1  # the first refused batch; the second went as `failed` at once
    refused = [
        entry
        for entry in world.services.mongo_requests.entries
        if entry.path == "/v1/notifications/outcomes" and entry.status == 400
    ]
    assert len(refused) == 1

    world.smtp.sender_reply = None
    assert world.run("send_payment_reminders", D).success
    assert len({mail.notification_id for mail in world.smtp.wait_for(250)}) == 250
    assert {record["status"] for record in world.ledger().values()} == {"sent"}


def test_a_ledger_outage_while_recording_is_journaled_and_settled_by_the_step_retry(world: JobWorld) -> None:
    # Three batches of 100. The first batch's outcomes cannot be recorded (every try answered 503):
    # they go to the run's journal, and so does the second batch, claimed and queued behind it.
    world.configure(STEP_MAX_RETRIES="1", STEP_RETRY_DELAY_SECONDS="0", DELIVERY_BATCH_SIZE="100")
    world.services.store.add_users([user(f"usr_{n}") for n in range(250)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(250)])
    world.services.mongo_faults.add(method="POST", path="/v1/notifications/outcomes", status=503, times=8)
    result = world.run("send_payment_reminders", D)

    # The retry recorded the journal first (sent as sent, unsent as failed), then sent the rest.
    assert result.success
    keys = [mail.notification_id for mail in world.smtp.wait_for(250)]
    assert len(keys) == 250 and len(set(keys)) == 250
    assert {record["status"] for record in world.ledger().values()} == {"sent"}
    observations = [
        entry.dagster_event.asset_observation_data.asset_observation.metadata
        for entry in world.instance.all_logs(result.run_id)
        if entry.dagster_event is not None and entry.dagster_event.event_type_value == "ASSET_OBSERVATION"
    ]
    journals = [entry for entry in observations if "delivery_journal" in entry]
    assert [(entry["unrecorded_outcomes"].value, entry["unanswered_claims"].value) for entry in journals] == [
        (200, 0),
        (0, 0),
    ]
    assert metadata(result, "payment_reminders")["left_claimed"] == 0


def test_old_objects_are_spared_by_the_collector_only_while_delivering(world: JobWorld) -> None:
    """Full garbage collections would walk every object Dagster made, with the GIL held, every few
    seconds of a long run; while sending they are frozen, and given back when the run ends, even by failure."""
    thresholds = gc.get_threshold()
    seen_while_sending: list[tuple[int, int]] = []
    record = world.smtp._record

    def observe(mail: ReceivedMail) -> None:  # runs in this process, while the run sends
        seen_while_sending.append((gc.get_freeze_count(), gc.get_threshold()[0]))
        record(mail)

    world.smtp._record = observe  # type: ignore[method-assign]
    _seed_two(world)
    assert world.run("send_payment_reminders", D).success
    assert len(seen_while_sending) == 2
    assert all(frozen > 10_000 and threshold == DELIVERY_GC_THRESHOLD for frozen, threshold in seen_while_sending)
    assert (gc.get_freeze_count(), gc.get_threshold()) == (0, thresholds)

    world.services.store.add_dues([due("due_c", user_id="usr_a", due_date="2026-12-01")])
    world.smtp.stop()
    assert not world.run("send_payment_reminders", D).success
    assert (gc.get_freeze_count(), gc.get_threshold()) == (0, thresholds)


def test_a_sending_result_that_cannot_be_recorded_fails_the_step_without_leaving_claims(
    world: JobWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sending threads turn results into outcomes; a bug there (simulated) ends the run, never hangs it."""
    _seed_two(world)
    count = DeliveryStats.count

    def failing_count(self: DeliveryStats, outcome: str, kind: str, key: str) -> None:
        if outcome == "sent" and key == GOOD_KEYS[0]:
            raise ZeroDivisionError("a bug")
        count(self, outcome, kind, key)

    monkeypatch.setattr(DeliveryStats, "count", failing_count)
    result = world.run("send_payment_reminders", D)

    assert not result.success
    assert "a sending result could not be recorded" in failure_messages(result)
    ledger = world.ledger()
    assert ledger[GOOD_KEYS[1]]["status"] == "sent"
    assert {record["status"] for record in ledger.values()} <= {"sent", "released"}
