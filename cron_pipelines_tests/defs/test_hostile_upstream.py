"""Nothing twice, nothing blocked, nothing unbounded: a buggy or hostile sql-service on loopback.

The ledger (mongo-service) is the real stand-in and the mail server a real aiosmtpd, so
every test can check exactly-once delivery: no key mailed twice, no record left `claimed`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from cron_pipelines_tests.demo_services.helpers import due, user
from cron_pipelines_tests.support.hostile_service import HostileService, due_item, gzip_bomb, serving
from cron_pipelines_tests.support.job_world import JobWorld, failure_messages, metadata

D = "2026-11-28"  # reminders are due on 2026-12-01, three days ahead


@pytest.fixture
def hostile(world: JobWorld) -> Iterator[HostileService]:
    with serving(HostileService()) as service:
        world.configure(SQL_SERVICE_URL=service.url)
        yield service


def _items(count: int) -> list[dict]:
    return [due_item(f"due_{n:03d}") for n in range(count)]


def _assert_each_key_mailed_at_most_once_and_nothing_left_claimed(world: JobWorld) -> None:
    counts = Counter(mail.notification_id for mail in world.mails())
    assert all(count == 1 for count in counts.values()), counts.most_common(3)
    assert [key for key, record in world.ledger().items() if record["status"] == "claimed"] == []


# --- repeats: each key at most once ------------------------------------------------------


def test_an_item_repeated_inside_a_page_is_mailed_once_and_counted(world: JobWorld, hostile: HostileService) -> None:
    hostile.mode, hostile.items = "repeated_item", _items(3)
    result = world.run("send_payment_reminders", D)

    assert result.success
    assert len(world.mails()) == 3
    _assert_each_key_mailed_at_most_once_and_nothing_left_claimed(world)
    summary = metadata(result, "payment_reminders")
    assert (summary["sent"], summary["repeated_in_source"], summary["duplicate"]) == (3, 1, 0)


@pytest.mark.parametrize(("batch_size", "repeated_in_source", "duplicate"), [("100", 4, 0), ("2", 0, 4)])
def test_overlapping_pages_mail_each_key_once(
    world: JobWorld, hostile: HostileService, batch_size: str, repeated_in_source: int, duplicate: int
) -> None:
    # Pages of 2 that each repeat the last item of the page before: 5 items, 9 listed, over 5 pages.
    # In one claim batch a repeat is caught before claiming; across batches the ledger answers `duplicate`.
    world.configure(DELIVERY_BATCH_SIZE=batch_size)
    hostile.mode, hostile.items, hostile.page_size = "overlapping_pages", _items(5), 2
    result = world.run("send_payment_reminders", D)

    assert result.success
    assert sorted(world.sent_keys()) == sorted(f"payment_reminder:due_{n:03d}:2026-12-01:3" for n in range(5))
    _assert_each_key_mailed_at_most_once_and_nothing_left_claimed(world)
    summary = metadata(result, "payment_reminders")
    assert (summary["sent"], summary["repeated_in_source"], summary["duplicate"]) == (5, repeated_in_source, duplicate)


# --- streams that would never end ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["cursor_to_start", "cursor_cycle"])
def test_a_cursor_that_loops_fails_the_step_at_once_naming_the_cursor(
    world: JobWorld, hostile: HostileService, mode: str
) -> None:
    world.configure(STEP_MAX_RETRIES="2", STEP_RETRY_DELAY_SECONDS="0")
    hostile.mode, hostile.items, hostile.page_size = mode, _items(4), 2
    started = time.monotonic()
    result = world.run("send_payment_reminders", D)

    assert not result.success and time.monotonic() - started < 30
    errors = failure_messages(result)
    assert "sql-service: GET /v1/dues" in errors and "was already followed: the pages loop" in errors
    assert len(hostile.requests) <= 4  # no step retry: a protocol violation is permanent
    _assert_each_key_mailed_at_most_once_and_nothing_left_claimed(world)


def test_a_page_larger_than_the_limit_is_refused(world: JobWorld, hostile: HostileService) -> None:
    hostile.mode, hostile.items = "oversized_page", _items(1001)
    result = world.run("send_payment_reminders", D)

    assert not result.success
    assert "page holds 1001 items, more than limit=1000" in failure_messages(result)
    assert world.mails() == [] and world.ledger() == {}


# --- bounded time and memory -----------------------------------------------------------------

# A run process of this project peaks near 150 MB (docs/performance.md), plus at most
# about twice the 16 MiB answer cap while one is being read; reading any of these answers
# whole would take hundreds of megabytes (the page) or gigabytes (the bomb).
MEMORY_BOUND_MB = 200


def test_a_page_of_100000_items_is_refused_in_bounded_memory(world: JobWorld, hostile: HostileService) -> None:
    hostile.mode, hostile.items = "oversized_page", _items(100_000)  # about 30 MB of JSON
    run = world.run_measured("send_payment_reminders", D)

    assert run.returncode != 0
    assert "answer is larger than 16777216 bytes (SERVICE_MAX_RESPONSE_BYTES)" in run.output
    assert run.peak_rss_mb < MEMORY_BOUND_MB, run.peak_rss_mb
    assert world.mails() == [] and world.ledger() == {}


def test_a_gzip_bomb_is_cut_off_at_the_cap_in_bounded_memory(world: JobWorld, hostile: HostileService) -> None:
    hostile.mode = "gzip_bomb"  # 1 MB on the wire, 1 GiB inflated
    gzip_bomb()  # made before the run, so the run's time is its own
    run = world.run_measured("send_payment_reminders", D)

    assert run.returncode != 0 and run.seconds < 30
    assert "sql-service: GET /v1/dues status=200" in run.output
    assert "answer is larger than 16777216 bytes" in run.output
    assert run.peak_rss_mb < MEMORY_BOUND_MB, run.peak_rss_mb
    assert world.mails() == [] and world.ledger() == {}


def test_a_server_that_trickles_is_cut_off_by_the_request_deadline(world: JobWorld, hostile: HostileService) -> None:
    world.configure(SERVICE_REQUEST_DEADLINE_SECONDS="2", SERVICE_MAX_ATTEMPTS="2", SERVICE_READ_TIMEOUT_SECONDS="5")
    hostile.mode = "trickle"  # one byte a second: each read is quick, the whole never ends
    started = time.monotonic()
    result = world.run("send_payment_reminders", D)

    assert not result.success and time.monotonic() - started < 15
    errors = failure_messages(result)
    assert "sql-service: GET /v1/dues status=none" in errors and "gave up after 2 attempts: timed out" in errors
    assert len(hostile.requests) == 2


def test_fresh_cursors_over_the_same_items_are_a_protocol_error_within_a_few_pages(
    world: JobWorld, hostile: HostileService
) -> None:
    hostile.mode, hostile.items, hostile.page_size = "fresh_cursor_same_items", _items(5), 5
    started = time.monotonic()
    result = world.run("send_payment_reminders", D)

    assert not result.success and time.monotonic() - started < 30
    errors = failure_messages(result)
    assert "sql-service: GET /v1/dues" in errors
    assert "3 pages in a row added no new item, the last with next_cursor '4': the pages do not advance" in errors
    assert len(hostile.requests) == 4  # the first page, then three that add nothing
    assert [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"] == []
    # The stream failed before its first batch was full: nothing claimed, so a later run sends it all.
    assert world.mails() == [] and world.ledger() == {}


def test_a_listing_longer_than_the_page_limit_is_refused(world: JobWorld, hostile: HostileService) -> None:
    world.configure(SERVICE_MAX_PAGES="4")
    hostile.items, hostile.page_size = _items(10), 2
    result = world.run("send_payment_reminders", D)
    assert not result.success
    assert "more than 4 pages (SERVICE_MAX_PAGES), cursor '8'" in failure_messages(result)
    assert len(hostile.requests) == 4
    _assert_each_key_mailed_at_most_once_and_nothing_left_claimed(world)


def test_a_service_that_throttles_forever_fails_the_step_within_its_budget_whatever_the_retries(
    world: JobWorld, hostile: HostileService
) -> None:
    # Retry-After is honoured up to 60 s; here each wait would spend the step's whole budget.
    world.configure(
        SERVICE_STEP_DEADLINE_SECONDS="8", SERVICE_MAX_ATTEMPTS="5", STEP_MAX_RETRIES="3", STEP_RETRY_DELAY_SECONDS="0"
    )
    hostile.mode = "throttle"
    started = time.monotonic()
    result = world.run("send_payment_reminders", D)

    elapsed = time.monotonic() - started
    assert not result.success and elapsed < 20, elapsed
    errors = failure_messages(result)
    assert "sql-service: GET /v1/dues status=429 code=rate_limited" in errors
    assert "its whole budget (SERVICE_STEP_DEADLINE_SECONDS=8)" in errors
    assert [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"] == []
    assert world.mails() == [] and world.ledger() == {}


def test_step_retries_share_the_budget_of_time_lost_to_a_failing_service(
    world: JobWorld, hostile: HostileService
) -> None:
    """Each attempt gives up on its own (503s outlast the request's tries); the retries continue from what it lost."""
    world.configure(
        SERVICE_STEP_DEADLINE_SECONDS="6",
        SERVICE_MAX_ATTEMPTS="2",
        SERVICE_REQUEST_DEADLINE_SECONDS="2",
        STEP_MAX_RETRIES="5",
        STEP_RETRY_DELAY_SECONDS="0",
    )
    hostile.mode = "trickle"  # every try times out after 2 s: 4 s lost per attempt
    started = time.monotonic()
    result = world.run("send_payment_reminders", D)

    elapsed = time.monotonic() - started
    assert not result.success and elapsed < 15, elapsed
    retries = [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 1  # the second attempt had 2 s left: one try, then the budget was spent
    assert "its whole budget (SERVICE_STEP_DEADLINE_SECONDS=6)" in failure_messages(result)
    assert len(hostile.requests) == 3


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("deep_json", "answer nests JSON too deeply"),
        ("invalid_utf8", "answer is not valid UTF-8"),
        ("wrong_content_type", "answer is 'text/html', not application/json"),
        ("redirect", "status=302"),
    ],
)
def test_an_unreadable_answer_is_a_permanent_protocol_error(
    world: JobWorld, hostile: HostileService, mode: str, reason: str
) -> None:
    world.configure(STEP_MAX_RETRIES="2", STEP_RETRY_DELAY_SECONDS="0")
    hostile.mode = mode
    result = world.run("send_payment_reminders", D)

    assert not result.success
    errors = failure_messages(result)
    assert "sql-service: GET /v1/dues" in errors and reason in errors
    assert len(hostile.requests) == 1  # neither the HTTP client nor the step retried it
    assert world.mails() == []


# --- absurd records: one bad record never blocks the others -------------------------------------


def _seed(world: JobWorld, *records: tuple[str, dict]) -> None:
    store = world.services.store
    store.add_users([user("usr_ok"), *(user(f"usr_{name}", **fields) for name, fields in records)])
    store.add_dues([due("due_ok", user_id="usr_ok", due_date="2026-12-01")])
    store.add_dues([due(f"due_{name}", user_id=f"usr_{name}", due_date="2026-12-01") for name, _ in records])


def test_a_600_character_id_is_counted_invalid_and_the_rest_is_sent(world: JobWorld) -> None:
    store = world.services.store
    store.add_users([user("usr_ok")])
    store.add_dues(
        [
            due("due_ok", user_id="usr_ok", due_date="2026-12-01"),
            due("d" * 600, user_id="usr_ok", due_date="2026-12-01"),
        ]
    )
    result = world.run("send_payment_reminders", D)

    assert result.success
    assert world.sent_keys() == ["payment_reminder:due_ok:2026-12-01:3"]
    summary = metadata(result, "payment_reminders")
    assert summary["invalid"] == 1 and summary["sent"] == 1
    assert "id: String should have at most 128 characters" in summary["invalid_records_sample"][0]
    assert summary["invalid_records_sample"][0].startswith("d" * 80 + "…")
    _assert_each_key_mailed_at_most_once_and_nothing_left_claimed(world)


def test_a_one_megabyte_name_is_skipped_with_the_reason_and_the_rest_is_sent(world: JobWorld) -> None:
    _seed(world, ("huge", {"full_name": "A" * 1_000_000}))
    result = world.run("send_payment_reminders", D)

    assert result.success
    assert world.sent_keys() == ["payment_reminder:due_ok:2026-12-01:3"]
    assert max(len(mail.data) for mail in world.mails()) < 20_000
    record = world.ledger()["payment_reminder:due_huge:2026-12-01:3"]
    assert record["status"] == "skipped"
    assert record["error"] == "malformed due record: user.full_name: String should have at most 200 characters"


def test_bidirectional_overrides_are_stripped_from_a_display_name(world: JobWorld) -> None:
    _seed(world, ("bidi", {"full_name": "Asha \u202eexe.fdp"}))
    result = world.run("send_payment_reminders", D)

    assert result.success and len(world.mails()) == 2
    mail = next(mail for mail in world.mails() if "due_bidi" in mail.notification_id)
    assert mail.message["To"].addresses[0].display_name == "Asha exe.fdp"
    assert "\u202e" not in mail.message.get_body(("plain",)).get_content()


# --- internationalised addresses -------------------------------------------------------------------


def test_a_non_ascii_address_goes_over_smtputf8_when_offered(world: JobWorld) -> None:
    _seed(world, ("jose", {"email": "jos\u00e9@ex\u00e4mple.com"}))
    result = world.run("send_payment_reminders", D)

    assert result.success and len(world.mails()) == 2
    mail = next(mail for mail in world.mails() if "due_jose" in mail.notification_id)
    assert mail.rcpt_tos == ("jos\u00e9@xn--exmple-cua.com",)
    assert world.ledger()["payment_reminder:due_jose:2026-12-01:3"]["status"] == "sent"


def test_a_non_ascii_address_is_skipped_when_the_server_lacks_smtputf8(world: JobWorld) -> None:
    from cron_pipelines_tests.support.smtp_sink import SmtpSink

    with SmtpSink(smtputf8=False) as ascii_only:
        world.configure(SMTP_PORT=str(ascii_only.port))
        _seed(world, ("jose", {"email": "jos\u00e9@ex\u00e4mple.com"}), ("idn", {"email": "ana@ex\u00e4mple.com"}))
        result = world.run("send_payment_reminders", D)
        received = {mail.notification_id: mail for mail in ascii_only.wait_for(2)}

    assert result.success
    assert set(received) == {"payment_reminder:due_ok:2026-12-01:3", "payment_reminder:due_idn:2026-12-01:3"}
    assert received["payment_reminder:due_idn:2026-12-01:3"].rcpt_tos == ("ana@xn--exmple-cua.com",)
    record = world.ledger()["payment_reminder:due_jose:2026-12-01:3"]
    assert record["status"] == "skipped" and "needs SMTPUTF8" in record["error"]  # never `failed`


# --- hostile text never reaches a terminal or a log raw ----------------------------------------

RAW_CONTROLS = ("\x1b", "\x07", "\n2026-11-30 12:00:00 INFO all good")


def _cli(world: JobWorld, *args: str) -> str:
    environment = {**os.environ, **world.environment, "DAGSTER_HOME": world.instance.root_directory}
    completed = subprocess.run(
        [sys.executable, "-m", "cron_pipelines.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return completed.stdout + completed.stderr


def test_a_service_error_message_with_a_fake_log_line_and_ansi_codes_is_escaped(
    world: JobWorld, hostile: HostileService
) -> None:
    hostile.mode = "hostile_error"
    run = world.run_measured("send_payment_reminders", D)  # the console log, as an operator sees it

    assert run.returncode != 0
    assert "sql-service: GET /v1/dues status=400 code=bad\\x1b[0m" in run.output
    assert "bad\\x0a2026-11-30 12:00:00 INFO all good, nothing to see\\x1b[2J" in run.output
    assert not any(control in run.output for control in RAW_CONTROLS)
    stored = [entry.user_message for entry in world.instance.all_logs(_run_id(run.output))]
    assert stored and not any(control in message for message in stored for control in RAW_CONTROLS)


def test_an_smtp_reply_with_ansi_codes_is_escaped_in_the_ledger_view_of_audit(world: JobWorld) -> None:
    _seed(world, ("temp", {}), ("gone", {}))
    world.smtp.temporarily_refused_recipients.add("usr_temp@example.com")
    world.smtp.refused_recipients.add("usr_gone@example.com")
    world.smtp.refusal_text = " \x1b[2J\x1b[31mred alert\x07"
    run = world.run_measured("send_payment_reminders", D)
    assert run.returncode == 0 and not any(control in run.output for control in RAW_CONTROLS)

    for user_id in ("usr_temp", "usr_gone"):
        table = _cli(world, "audit", "--user", user_id)
        assert "\\x1b[2J\\x1b[31mred alert\\x07" in table
        assert not any(control in table for control in RAW_CONTROLS)


def _run_id(output: str) -> str:
    return output.split("run_id=")[1].split()[0]
