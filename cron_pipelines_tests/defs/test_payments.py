"""send_payment_reminders and mark_overdue_dues end to end: exact emails, service writes and ledger records."""

from __future__ import annotations

from cron_pipelines_tests.demo_services.helpers import due, user
from cron_pipelines_tests.support.job_world import JobWorld, check_result, metadata

D = "2026-11-28"


def _seed_reminders(world: JobWorld) -> None:
    world.services.store.add_users([user(f"usr_{n}") for n in range(1, 10)])
    world.services.store.add_dues(
        [
            due("due_d0", user_id="usr_1", due_date="2026-11-28"),
            due("due_d1", user_id="usr_2", due_date="2026-11-29"),
            due("due_d2", user_id="usr_3", due_date="2026-11-30"),
            due("due_d3", user_id="usr_4", due_date="2026-12-01"),
            due("due_d5", user_id="usr_5", due_date="2026-12-03"),
            due("due_d7", user_id="usr_6", due_date="2026-12-05"),
            due("due_d8", user_id="usr_7", due_date="2026-12-06"),
            due("due_paid", user_id="usr_8", due_date="2026-12-01", status="paid"),
            due("due_past", user_id="usr_9", due_date="2026-11-27"),
        ]
    )


EXPECTED_ON_D = [
    "payment_reminder:due_d0:2026-11-28:0",
    "payment_reminder:due_d1:2026-11-29:1",
    "payment_reminder:due_d3:2026-12-01:3",
    "payment_reminder:due_d7:2026-12-05:7",
]


def test_reminders_send_exactly_what_the_day_owes(world: JobWorld) -> None:
    _seed_reminders(world)
    result = world.run("send_payment_reminders", D)

    assert result.success
    assert world.sent_keys() == EXPECTED_ON_D
    by_key = {mail.notification_id: mail for mail in world.mails()}
    assert by_key["payment_reminder:due_d7:2026-12-05:7"].rcpt_tos == ("usr_6@example.com",)
    message = by_key["payment_reminder:due_d7:2026-12-05:7"].message
    assert message["X-Notification-Kind"] == "payment_reminder"
    assert message["Subject"] == "Payment due in 7 days, December 5, 2026: ₹1,250.00"

    ledger = world.ledger()
    assert set(ledger) == set(EXPECTED_ON_D)
    for key in EXPECTED_ON_D:
        record = ledger[key]
        assert record["status"] == "sent" and record["attempts"] == 1
        assert record["message_id"] == by_key[key].message["Message-ID"]
        assert record["run_id"] == result.run_id
        assert record["job_name"] == "send_payment_reminders" and record["partition_key"] == D
        assert record["sent_at"] is not None
    assert ledger["payment_reminder:due_d3:2026-12-01:3"]["metadata"]["due_id"] == "due_d3"

    summary = metadata(result, "payment_reminders")
    assert {name: summary[name] for name in ("claimed", "sent", "skipped", "failed", "duplicate", "invalid")} == {
        "claimed": 4,
        "sent": 4,
        "skipped": 0,
        "failed": 0,
        "duplicate": 0,
        "invalid": 0,
    }
    assert summary["business_date"] == D and summary["due_from"] == D and summary["due_to"] == "2026-12-05"
    assert set(summary["sample_sent_keys"]) == set(EXPECTED_ON_D)
    assert summary["duration_seconds"] >= 0
    assert check_result(result, "payment_reminders", "delivery_within_thresholds").passed


def test_a_second_run_of_the_same_day_sends_nothing(world: JobWorld) -> None:
    _seed_reminders(world)
    assert world.run("send_payment_reminders", D).success
    again = world.run("send_payment_reminders", D)

    assert again.success
    assert world.sent_keys() == EXPECTED_ON_D  # still four mails in all
    summary = metadata(again, "payment_reminders")
    assert summary["duplicate"] == 4 and summary["claimed"] == 0 and summary["sent"] == 0


def test_a_backfill_sends_only_what_each_earlier_day_owed(world: JobWorld) -> None:
    _seed_reminders(world)
    for day in ("2026-11-26", "2026-11-27", "2026-11-28"):
        assert world.run("send_payment_reminders", day).success
    owed = sorted(
        [
            # 2026-11-26: due_d0 in 2, due_d1 in 3, due_d3 in 5, due_d7 in 9, due_past in 1 -> d1 (3), past (1)
            "payment_reminder:due_d1:2026-11-29:3",
            "payment_reminder:due_past:2026-11-27:1",
            # 2026-11-27: d0 in 1, d2 in 3, d7 in 8, past in 0 -> d0 (1), d2 (3), past (0)
            "payment_reminder:due_d0:2026-11-28:1",
            "payment_reminder:due_d2:2026-11-30:3",
            "payment_reminder:due_past:2026-11-27:0",
            "payment_reminder:due_d5:2026-12-03:7",
            *EXPECTED_ON_D,
        ]
    )
    assert world.sent_keys() == owed
    # The whole range again, as a second backfill would: nothing more.
    for day in ("2026-11-26", "2026-11-27", "2026-11-28"):
        assert world.run("send_payment_reminders", day).success
    assert world.sent_keys() == owed


def test_two_runs_of_the_same_day_started_together_send_each_reminder_once(world: JobWorld) -> None:
    world.services.store.add_users([user(f"usr_{n}") for n in range(600)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(600)])
    # Two run workers, as two launches of one partition would start them.
    processes = [world.run_in_subprocess("send_payment_reminders", D) for _ in range(2)]
    outputs = [process.communicate(timeout=240)[0] for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    keys = [mail.notification_id for mail in world.smtp.wait_for(600)]
    assert len(keys) == 600 and len(set(keys)) == 600
    ledger = world.ledger()
    assert len(ledger) == 600 and {record["status"] for record in ledger.values()} == {"sent"}
    assert {record["attempts"] for record in ledger.values()} == {1}
    # Both runs did part of the work or one did all of it; together, each reminder once.
    assert {record["run_id"] for record in ledger.values()} <= {
        line.split("run_id=")[1].split()[0] for output in outputs for line in output.splitlines() if "run_id=" in line
    }


def test_mark_overdue_marks_past_due_dues_then_sends_notices(world: JobWorld) -> None:
    store = world.services.store
    store.add_users([user(f"usr_{n}") for n in range(1, 12)])
    store.add_dues(
        [
            due("pend_1", user_id="usr_1", due_date="2026-11-27"),  # 1 day late: marked, then noticed
            due("pend_3", user_id="usr_2", due_date="2026-11-25"),  # marked, 3 days: no notice
            due("pend_today", user_id="usr_3", due_date="2026-11-28"),  # due today: not late
            due("over_7", user_id="usr_4", due_date="2026-11-21", status="overdue"),
            due("over_14", user_id="usr_5", due_date="2026-11-14", status="overdue"),
            due("over_30", user_id="usr_6", due_date="2026-10-29", status="overdue"),
            due("over_31", user_id="usr_7", due_date="2026-10-28", status="overdue"),
            due("over_13", user_id="usr_8", due_date="2026-11-15", status="overdue"),
            due("paid_old", user_id="usr_9", due_date="2026-11-21", status="paid"),
            due("cancel_old", user_id="usr_10", due_date="2026-11-27", status="cancelled"),
        ]
    )
    result = world.run("mark_overdue_dues", D)

    assert result.success
    assert store.get_due("pend_1")["status"] == "overdue" and store.get_due("pend_3")["status"] == "overdue"
    assert store.get_due("pend_today")["status"] == "pending"
    assert store.get_due("paid_old")["status"] == "paid" and store.get_due("cancel_old")["status"] == "cancelled"
    marks = metadata(result, "overdue_marks")
    assert (marks["write.marked"], marks["write.already_overdue"], marks["write.invalid_state"]) == (2, 0, 0)
    assert world.sent_keys() == sorted(
        [
            "overdue_notice:pend_1:2026-11-27:1",
            "overdue_notice:over_7:2026-11-21:7",
            "overdue_notice:over_14:2026-11-14:14",
            "overdue_notice:over_30:2026-10-29:30",
        ]
    )
    assert metadata(result, "overdue_notices")["sent"] == 4

    again = world.run("mark_overdue_dues", D)
    assert again.success and len(world.mails()) == 4
    assert metadata(again, "overdue_marks")["write.marked"] == 0
    assert metadata(again, "overdue_notices")["duplicate"] == 4


def test_the_materialization_shows_one_email_as_its_reader_saw_it_with_the_address_masked(world: JobWorld) -> None:
    _seed_reminders(world)
    result = world.run("send_payment_reminders", D)

    event = next(
        event
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == "payment_reminders"
    )
    sample = event.materialization.metadata["sample_email"]
    assert type(sample).__name__ == "MarkdownMetadataValue"
    text = sample.value
    shown_key = text.split("X-Notification-Id: ", 1)[1].split("\n", 1)[0]
    first = {mail.notification_id: mail for mail in world.mails()}[shown_key]
    assert text.startswith("```text\n") and text.endswith("\n```")
    assert f"Subject: {first.message['Subject']}" in text
    assert f"X-Notification-Id: {first.notification_id}" in text
    assert "Hello " in text and "Reference: " + first.notification_id in text  # the text part
    recipient = first.rcpt_tos[0]
    assert recipient not in text and f"{recipient[0]}***@example.com" in text
