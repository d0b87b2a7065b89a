"""Recipients' preferences (docs/services.md, "Recipients"): opt-outs honoured for optional kinds
only, looked up once per batch, a v1.0 service without the endpoint, and one-click unsubscribe
from the email's own header through to the next run."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from cron_pipelines.delivery.channels.email.unsubscribe import UnsubscribeTokens
from cron_pipelines.models.payloads import OptOut, PreferenceQuery
from cron_pipelines_tests.demo_services.helpers import attempt, due, user, verification
from cron_pipelines_tests.support.job_world import JobWorld, check_result, metadata
from cron_pipelines_tests.support.services import UNSUBSCRIBE_TEST_KEY

D = "2026-11-28"
LOOKUP = "/v1/notification-preferences/lookup"


def _opt_out(world: JobWorld, user_id: str, kind: str) -> None:
    (result,) = world.services.store.add_opt_outs(
        [OptOut(user_id=user_id, kind=kind, source="support", at=f"{D}T00:00:00Z")]
    )
    assert result["outcome"] == "added"


def _seed_reminders(world: JobWorld, users: int = 6) -> None:
    world.services.store.add_users([user(f"usr_{n}") for n in range(1, users + 1)])
    world.services.store.add_dues(
        [due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(1, users + 1)]
    )


def test_opted_out_users_get_nothing_and_are_recorded_opted_out(world: JobWorld) -> None:
    _seed_reminders(world)
    _opt_out(world, "usr_2", "payment_reminder")
    _opt_out(world, "usr_3", "overdue_notice")  # another kind: still reminded
    world.services.mongo_requests.clear()

    result = world.run("send_payment_reminders", D)

    assert result.success
    opted_out_key = "payment_reminder:due_2:2026-12-01:3"
    assert opted_out_key not in world.sent_keys() and len(world.sent_keys()) == 5
    record = world.ledger()[opted_out_key]
    assert record["status"] == "skipped" and record["error"] == "opted_out" and record["message_id"] is None
    summary = metadata(result, "payment_reminders")
    assert (summary["claimed"], summary["sent"], summary["skipped"], summary["opted_out"]) == (6, 5, 1, 1)
    assert summary["skip_reasons"] == {"opted_out": 1}
    # A user's own choice is not a delivery problem: the check passes without a warning.
    check = check_result(result, "payment_reminders", "delivery_within_thresholds")
    assert check.passed and check.metadata["skipped_ratio"].value == 0 and check.metadata["opted_out"].value == 1
    # One lookup for the batch's six users, not one per record.
    assert world.services.mongo_requests.count("POST", LOOKUP) == 1


def test_a_rerun_asks_once_per_batch_and_sends_nothing(world: JobWorld) -> None:
    _seed_reminders(world)
    _opt_out(world, "usr_1", "payment_reminder")
    world.run("send_payment_reminders", D)
    world.services.mongo_requests.clear()

    again = world.run("send_payment_reminders", D)

    assert metadata(again, "payment_reminders")["duplicate"] == 6
    assert len(world.sent_keys()) == 5
    # Preferences are asked before the claim (a digest's notifications wait unclaimed): once per batch.
    assert world.services.mongo_requests.count("POST", LOOKUP) == 1


def test_mandatory_kinds_ignore_opt_outs_and_are_never_looked_up(world: JobWorld) -> None:
    store = world.services.store
    store.add_users([user("emp_v_ok"), user("emp_v_remind")])
    store.add_verifications(
        [
            verification("v_ok", employee_id="emp_v_ok", requested_at="2026-11-25T09:00:00Z"),
            verification("v_remind", employee_id="emp_v_remind", requested_at="2026-11-21T09:00:00Z"),
        ]
    )
    store.add_attempts(
        [attempt("a_ok", verification_id="v_ok", outcome="success", attempted_at="2026-11-26T10:00:00Z")]
    )
    for employee in ("emp_v_ok", "emp_v_remind"):
        for kind in ("verification_result", "verification_reminder"):
            _opt_out(world, employee, kind)
    world.services.mongo_requests.clear()

    result = world.run("verify_employees", D)

    assert result.success
    assert world.sent_keys() == ["verification_result:v_ok:verified"]  # mandatory: sent all the same
    assert world.ledger()["verification_reminder:v_remind:7"]["error"] == "opted_out"
    # Only the reminder (optional) was looked up: one request, for its one user.
    (lookup,) = [entry for entry in world.services.mongo_requests.entries if entry.path == LOOKUP]
    assert lookup.method == "POST"
    assert metadata(result, "verification_reminders")["opted_out"] == 1


def test_a_v1_0_service_without_preferences_gets_everything_sent_and_is_asked_once(world: JobWorld) -> None:
    _seed_reminders(world, users=3)
    _opt_out(world, "usr_1", "payment_reminder")  # stored, but the "service" below predates v1.1
    world.services.mongo_faults.add(method="POST", path=LOOKUP, status=404, code="not_found", times=100)
    world.configure(DELIVERY_BATCH_SIZE="1")  # three batches: the 404 is remembered after the first
    world.services.mongo_requests.clear()

    result = world.run("send_payment_reminders", D)

    assert result.success
    assert len(world.sent_keys()) == 3
    assert metadata(result, "payment_reminders")["opted_out"] == 0
    assert world.services.mongo_requests.count("POST", LOOKUP) == 1


def test_a_lookup_the_service_refuses_fails_the_batch_without_sending_it(world: JobWorld) -> None:
    _seed_reminders(world, users=2)
    world.services.mongo_faults.add(method="POST", path=LOOKUP, status=400, code="invalid_request", times=10)

    result = world.run("send_payment_reminders", D)

    assert not result.success
    assert world.sent_keys() == []  # not knowing the preferences, nothing is sent
    # Asked before the claim: nothing is claimed either, so a retry or a later run takes all of it.
    assert world.ledger() == {}


# -- one-click unsubscribe ---------------------------------------------------------------------


def _with_unsubscribe(world: JobWorld) -> None:
    world.configure(UNSUBSCRIBE_BASE_URL=world.services.unsubscribe_url, UNSUBSCRIBE_SIGNING_KEY=UNSUBSCRIBE_TEST_KEY)


def test_one_click_unsubscribe_from_the_email_stops_the_next_runs_optional_mail(world: JobWorld) -> None:
    _seed_reminders(world, users=2)
    world.services.store.add_dues([due("due_1_later", user_id="usr_1", due_date="2026-11-30")])
    _with_unsubscribe(world)
    world.run("send_payment_reminders", D)
    mail = {m.notification_id: m for m in world.mails()}["payment_reminder:due_1:2026-12-01:3"]

    # RFC 8058: a mail client POSTs `List-Unsubscribe=One-Click` to the header's URL.
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = mail.message["List-Unsubscribe"].strip("<>")
    assert url.startswith(world.services.unsubscribe_url + "?token=")
    html = mail.message.get_body(("html",)).get_content()
    assert f'href="{url.replace("&", "&amp;")}"' in html and "Unsubscribe" in html  # visible in the footer too
    assert url in mail.message.get_body(("plain",)).get_content()

    answer = httpx.post(url, content=b"List-Unsubscribe=One-Click",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert answer.status_code == 200 and "unsubscribed" in answer.text
    (preference,) = world.services.store.lookup_preferences([_query("usr_1")])
    assert preference["opted_out"] == ["payment_reminder"]

    next_run = world.run("send_payment_reminders", "2026-11-29")  # due_1_later is then 1 day ahead
    assert next_run.success
    record = world.ledger()["payment_reminder:due_1_later:2026-11-30:1"]
    assert record["status"] == "skipped" and record["error"] == "opted_out"
    assert "payment_reminder:due_1_later:2026-11-30:1" not in world.sent_keys()


def _query(user_id: str) -> PreferenceQuery:
    return PreferenceQuery(user_id=user_id)


def test_mandatory_mail_carries_no_unsubscribe_header(world: JobWorld) -> None:
    store = world.services.store
    store.add_verifications([verification("v_ok", employee_id="emp_1", requested_at="2026-11-25T09:00:00Z")])
    store.add_attempts(
        [attempt("a_ok", verification_id="v_ok", outcome="success", attempted_at="2026-11-26T10:00:00Z")]
    )
    _with_unsubscribe(world)

    world.run("verify_employees", D)

    (mail,) = world.mails()
    assert mail.notification_id == "verification_result:v_ok:verified"
    assert mail.message["List-Unsubscribe"] is None and mail.message["List-Unsubscribe-Post"] is None
    assert "Unsubscribe" not in mail.message.get_body(("html",)).get_content()


def _token(claims_update: dict, key: str = UNSUBSCRIBE_TEST_KEY) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": "usr_1",
        "kind": "payment_reminder",
        "iss": "cron-pipelines",
        "aud": "unsubscribe",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(days=30)).timestamp()),
        **claims_update,
    }
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="HS256")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_token({}, key="another-key-of-sufficient-length-123"), id="tampered signature"),
        pytest.param(_token({}) + "x", id="tampered token"),
        pytest.param(_token({"exp": int((datetime.now(UTC) - timedelta(seconds=60)).timestamp())}), id="expired"),
        pytest.param(_token({"aud": "mongo-service"}), id="wrong audience"),
        pytest.param(_token({"iss": "someone-else"}), id="wrong issuer"),
        pytest.param(_token({"exp": int((datetime.now(UTC) + timedelta(days=200)).timestamp())}), id="over 90 days"),
        pytest.param(_token({"kind": "account_deactivated"}), id="mandatory kind"),
        pytest.param(_token({"kind": None}), id="no kind"),
        pytest.param("", id="no token"),
        pytest.param("a" * 5000, id="oversized"),
    ],
)
def test_the_endpoint_refuses_bad_tokens_and_records_nothing(world: JobWorld, token: str) -> None:
    world.services.store.add_users([user("usr_1")])
    for request in (httpx.post, httpx.get):
        answer = request(world.services.unsubscribe_url, params={"token": token})
        assert answer.status_code == 400 and "not valid" in answer.text
    assert world.services.store.lookup_preferences([_query("usr_1")])[0]["opted_out"] == []


def test_get_shows_a_confirmation_page_and_changes_nothing_until_posted(world: JobWorld) -> None:
    world.services.store.add_users([user("usr_1")])
    token = UnsubscribeTokens(UNSUBSCRIBE_TEST_KEY, "cron-pipelines").mint("usr_1", "inactivity_warning")

    page = httpx.get(world.services.unsubscribe_url, params={"token": token})
    assert page.status_code == 200 and '<form method="post">' in page.text and token in page.text
    assert world.services.store.lookup_preferences([_query("usr_1")])[0]["opted_out"] == []

    # The page's button posts the token as a form field.
    posted = httpx.post(world.services.unsubscribe_url, data={"token": token})
    assert posted.status_code == 200
    again = httpx.post(world.services.unsubscribe_url, data={"token": token})  # idempotent
    assert again.status_code == 200
    assert world.services.store.lookup_preferences([_query("usr_1")])[0]["opted_out"] == ["inactivity_warning"]
    unknown = UnsubscribeTokens(UNSUBSCRIBE_TEST_KEY, "cron-pipelines").mint("usr_gone", "payment_reminder")
    assert httpx.post(world.services.unsubscribe_url, params={"token": unknown}).status_code == 404


# --- digests ---------------------------------------------------------------------------

DIGEST_DUES = {  # due id → (due date, amount in minor units, currency): reminded 7, 1 and 3 days ahead
    "due_d_week": ("2026-12-05", 250000, "INR"),
    "due_d_tomorrow": ("2026-11-29", 125000, "INR"),
    "due_d_three": ("2026-12-01", 4000, "EUR"),
}


def _seed_digest_reader(world: JobWorld) -> None:
    store = world.services.store
    store.add_users([user("usr_digest"), user("usr_plain")])
    store.add_dues(
        [
            due(due_id, user_id="usr_digest", due_date=due_date, amount_cents=amount, currency=currency)
            for due_id, (due_date, amount, currency) in DIGEST_DUES.items()
        ]
        + [due("due_plain", user_id="usr_plain", due_date="2026-12-01")]
    )
    store.set_digest("usr_digest", True)
    # Batches of one: the reader's dues pass in three different batches, with another user's between.
    world.configure(DELIVERY_BATCH_SIZE="1")


def _digest_keys() -> list[str]:
    return sorted(
        f"payment_reminder:{due_id}:{due_date}:{days}"
        for (due_id, (due_date, _, _)), days in zip(DIGEST_DUES.items(), (7, 1, 3), strict=True)
    )


def test_a_digest_reader_gets_one_email_listing_every_due_in_date_order_with_a_total_per_currency(
    world: JobWorld,
) -> None:
    _seed_digest_reader(world)

    result = world.run("send_payment_reminders", D)

    assert result.success
    mails = {mail.rcpt_tos[0]: mail for mail in world.mails()}
    assert sorted(mails) == ["usr_digest@example.com", "usr_plain@example.com"]
    digest = mails["usr_digest@example.com"]
    assert sorted(digest.notification_ids) == _digest_keys()
    message = digest.message
    text = message.get_body(("plain",)).get_content()
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert lines == [
        "- ₹1,250.00 for Membership fee, due on November 29, 2026, in 1 day",
        "- €40.00 for Membership fee, due on December 1, 2026, in 3 days",
        "- ₹2,500.00 for Membership fee, due on December 5, 2026, in 7 days",
    ]
    assert "In total: €40.00 and ₹3,750.00" in text
    assert message["Subject"] == "Payments due soon: 3, in total €40.00 and ₹3,750.00"
    # Every listed key is its own ledger record, sent with the digest's Message-ID.
    ledger = world.ledger()
    assert {ledger[key]["status"] for key in _digest_keys()} == {"sent"}
    assert {ledger[key]["message_id"] for key in _digest_keys()} == {message["Message-ID"]}
    summary = metadata(result, "payment_reminders")
    assert (summary["claimed"], summary["sent"], summary["digest_emails"]) == (4, 4, 1)


def test_a_digest_of_one_due_is_still_a_digest(world: JobWorld) -> None:
    world.services.store.add_users([user("usr_one")])
    world.services.store.add_dues([due("due_one", user_id="usr_one", due_date="2026-12-01")])
    world.services.store.set_digest("usr_one", True)

    result = world.run("send_payment_reminders", D)

    (mail,) = world.mails()
    assert mail.notification_ids == ["payment_reminder:due_one:2026-12-01:3"]
    assert str(mail.message["Subject"]).startswith("Payments due soon: 1, in total ")
    assert metadata(result, "payment_reminders")["digest_emails"] == 1


def test_a_rerun_sends_no_digest_again(world: JobWorld) -> None:
    _seed_digest_reader(world)
    world.run("send_payment_reminders", D)

    again = world.run("send_payment_reminders", D)

    assert again.success and len(world.mails()) == 2
    summary = metadata(again, "payment_reminders")
    assert (summary["duplicate"], summary["sent"], summary["digest_emails"]) == (4, 0, 0)


def test_a_digest_whose_keys_partly_came_back_duplicate_lists_only_the_owed_ones(world: JobWorld) -> None:
    _seed_digest_reader(world)
    already_sent = "payment_reminder:due_d_tomorrow:2026-11-29:1"
    world.services.store.add_notifications(
        [{"idempotency_key": already_sent, "kind": "payment_reminder", "user_id": "usr_digest",
          "recipient": "usr_digest@example.com", "status": "sent", "run_id": "earlier", "job_name": "earlier",
          "partition_key": D, "attempts": 1, "claimed_at": f"{D}T00:00:00Z", "sent_at": f"{D}T00:00:01Z",
          "message_id": "<earlier@example.com>", "metadata": {}}]
    )  # fmt: skip

    world.run("send_payment_reminders", D)

    (digest,) = [mail for mail in world.mails() if mail.rcpt_tos == ("usr_digest@example.com",)]
    assert sorted(digest.notification_ids) == [key for key in _digest_keys() if key != already_sent]
    assert "November 29" not in digest.message.get_body(("plain",)).get_content()
    assert world.ledger()[already_sent]["message_id"] == "<earlier@example.com>"


def test_a_digest_readers_opt_out_wins_over_the_digest(world: JobWorld) -> None:
    _seed_digest_reader(world)
    _opt_out(world, "usr_digest", "payment_reminder")

    result = world.run("send_payment_reminders", D)

    assert [mail.rcpt_tos for mail in world.mails()] == [("usr_plain@example.com",)]
    assert metadata(result, "payment_reminders")["opted_out"] == 3


# --- the reader's language and time zone -----------------------------------------------


def _subjects_by_user(world: JobWorld) -> dict[str, str]:
    return {mail.rcpt_tos[0].split("@")[0]: str(mail.message["Subject"]) for mail in world.mails()}


def test_readers_get_their_language_and_their_figures(world: JobWorld) -> None:
    store = world.services.store
    store.add_users(
        [user("usr_in", locale="en-IN", timezone="Asia/Kolkata"), user("usr_de", locale="de-DE"), user("usr_v10")]
    )
    store.add_dues(
        [
            due("due_in", user_id="usr_in", due_date="2026-12-01", amount_cents=125_000_00, currency="INR"),
            due("due_de", user_id="usr_de", due_date="2026-12-01", amount_cents=1_250_00, currency="EUR"),
            due("due_v10", user_id="usr_v10", due_date="2026-12-01", amount_cents=1_250_00, currency="USD"),
        ]
    )

    world.run("send_payment_reminders", D)

    subjects = _subjects_by_user(world)
    assert subjects == {
        "usr_in": "Payment due in 3 days, 1 December 2026: ₹1,25,000.00",
        "usr_de": "Zahlung fällig am 1. Dezember 2026 (noch 3 Tage): 1.250,00\u00a0€",
        "usr_v10": "Payment due in 3 days, December 1, 2026: $1,250.00",
    }


def test_the_inactivity_warning_names_the_deactivation_day_in_the_readers_time_zone(world: JobWorld) -> None:
    # Last active 2026-10-01: warned on D, deactivated from start(2026-12-31) in CRON_TIMEZONE (UTC).
    store = world.services.store
    store.add_users(
        [
            user(f"usr_{name}", last_login_at="2026-10-01T12:00:00Z", **fields)
            for name, fields in {
                "utc": {},
                "berlin": {"locale": "de-DE", "timezone": "Europe/Berlin"},
                "la": {"timezone": "America/Los_Angeles"},
                "bogus": {"timezone": "../../etc/passwd", "locale": "xx-QQ-bogus-tag"},
            }.items()
        ]
    )

    world.run("notify_inactive_users", D)

    subjects = _subjects_by_user(world)
    assert subjects == {
        "usr_utc": "Your account will be deactivated on December 31, 2026",
        "usr_berlin": "Ihr Konto wird am 31. Dezember 2026 deaktiviert",
        # 00:00 UTC on 31 December is the afternoon of 30 December in Los Angeles.
        "usr_la": "Your account will be deactivated on December 30, 2026",
        "usr_bogus": "Your account will be deactivated on December 31, 2026",  # unknown values: en, CRON_TIMEZONE
    }


def test_a_digest_the_mail_server_could_not_take_is_sent_whole_by_the_next_run(world: JobWorld) -> None:
    _seed_digest_reader(world)
    world.smtp.recipient_reply = "421 4.3.2 Service shutting down"  # after the claims: the server's failure

    down = world.run("send_payment_reminders", D)

    assert not down.success and world.mails() == []
    # Whatever was claimed is `released` (a later run takes it); what never was, waits for that run too.
    statuses = {record["status"] for record in world.ledger().values()}
    assert statuses == {"released"}
    world.smtp.recipient_reply = None
    back = world.run("send_payment_reminders", D)

    assert back.success
    (digest,) = [mail for mail in world.smtp.wait_for(2) if mail.rcpt_tos == ("usr_digest@example.com",)]
    assert sorted(digest.notification_ids) == _digest_keys()
    ledger = world.ledger()
    assert {ledger[key]["message_id"] for key in _digest_keys()} == {digest.message["Message-ID"]}
    assert {record["status"] for record in ledger.values()} == {"sent"}
    assert world.run("send_payment_reminders", D).success and len(world.mails()) == 2


def test_an_interrupt_during_the_digests_records_every_claimed_key_and_the_next_run_sends_the_rest_once(
    world: JobWorld,
) -> None:
    readers = 150
    store = world.services.store
    store.add_users([user(f"usr_{n}") for n in range(readers)])
    store.add_dues(
        [
            due(f"due_{n}_{days}", user_id=f"usr_{n}", due_date=due_date)
            for n in range(readers)
            for days, due_date in ((3, "2026-12-01"), (7, "2026-12-05"))
        ]
    )
    for n in range(readers):
        store.set_digest(f"usr_{n}", True)
    world.smtp.latency = 0.03  # digests go out slowly (about 30 a second): the interrupt lands among them
    process = world.run_in_subprocess("send_payment_reminders", D)
    world.smtp.wait_for(20, timeout=120)
    process.send_signal(signal.SIGINT)  # an operator's Ctrl-C on `cron-pipelines run`
    process.wait(timeout=60)
    world.smtp.latency = 0

    first = list(world.mails())
    ledger = world.ledger()
    assert 20 <= len(first) < readers
    assert [key for key, record in ledger.items() if record["status"] == "claimed"] == []
    for mail in first:  # what went out is recorded `sent`, each key with its email's Message-ID
        assert {ledger[key]["message_id"] for key in mail.notification_ids} == {mail.message["Message-ID"]}
    mailed = {key for mail in first for key in mail.notification_ids}
    assert {key for key, record in ledger.items() if record["status"] == "sent"} == mailed
    assert {record["status"] for key, record in ledger.items() if key not in mailed} <= {"released"}

    assert world.run("send_payment_reminders", D).success
    keys = [key for mail in world.smtp.wait_for(readers) for key in mail.notification_ids]
    assert len(world.mails()) == readers  # one digest per reader over both runs
    assert len(keys) == len(set(keys)) == 2 * readers  # every key exactly once
    assert {record["status"] for record in world.ledger().values()} == {"sent"}
