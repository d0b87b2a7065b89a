"""send_ops_alerts and the sensors that launch it: a failed run, stuck claims, and a mail server that refuses us.

Every alert goes by mail and by webhook (a real HTTP receiver), each claimed once in the
ledger: a tick evaluated again or an alert run repeated sends nothing twice, and a mail
server that is down does not keep the webhook from reporting it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from cron_pipelines.models.payloads import format_instant
from cron_pipelines_tests.demo_services.helpers import due, user
from cron_pipelines_tests.support.job_world import JobWorld, failure_messages, job_environment
from cron_pipelines_tests.support.keys import TEST_JWT_SECRET
from cron_pipelines_tests.support.services import ServiceWorld
from cron_pipelines_tests.support.smtp_sink import SmtpSink
from cron_pipelines_tests.support.webhook_receiver import WebhookReceiver, receiving

D = "2026-11-28"
WEBHOOK_SECRET = "webhook-signing-Kx7Qm2Rv9Tz4Bw6Nd1Hp3"
SMTP_LOGIN = ("mailer", "the-right-password")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with receiving(WebhookReceiver()) as running:
        yield running


@pytest.fixture
def world(services: ServiceWorld, receiver: WebhookReceiver, tmp_path: Path) -> Iterator[JobWorld]:
    """The jobs on a relay that asks for a login, alerting by mail and by webhook."""
    with SmtpSink(credentials=SMTP_LOGIN) as smtp, dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        environment = job_environment(
            services,
            smtp,
            str(tmp_path),
            SMTP_USERNAME=SMTP_LOGIN[0],
            SMTP_PASSWORD=SMTP_LOGIN[1],
            SMTP_ALLOW_PLAINTEXT_AUTH="true",
            OPS_ALERT_WEBHOOK_URL=receiver.url(),
            OPS_ALERT_WEBHOOK_SECRET=WEBHOOK_SECRET,
            DAGSTER_WEBSERVER_URL="https://dagster.example.com",
        )
        yield JobWorld(services, smtp, environment, instance)


def _failure_requests(world: JobWorld, run_id: str) -> list[dg.RunRequest]:
    """What run_failure_alert_sensor asks for, as its tick for this failed run would."""
    sensor = world.defs.resolve_sensor_def("run_failure_alert_sensor")
    run = world.instance.get_run_by_id(run_id)
    failure_event = next(
        entry.dagster_event
        for entry in world.instance.all_logs(run_id)
        if entry.dagster_event and entry.dagster_event.event_type_value == "PIPELINE_FAILURE"
    )
    with dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor",
        dagster_event=failure_event,
        dagster_instance=world.instance,
        dagster_run=run,
    ).for_run_failure() as context:
        answer = sensor(context)
    return [answer] if isinstance(answer, dg.RunRequest) else []


def _alert(world: JobWorld, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """The alert run a request launches, as the daemon would launch it."""
    return world.defs.resolve_job_def("send_ops_alerts").execute_in_process(
        instance=world.instance, run_config=request.run_config, tags=dict(request.tags), raise_on_error=False
    )


def test_a_failed_run_alerts_the_operators_once_by_mail_and_by_a_signed_webhook(
    world: JobWorld, receiver: WebhookReceiver
) -> None:
    world.services.store.add_users([user("usr_1")])
    world.services.store.add_dues([due("due_1", due_date="2026-12-01")])
    world.configure(INTERNAL_JWT_SECRET="a-different-secret-that-is-long-enough!!")
    failed = world.run("send_payment_reminders", D)
    assert not failed.success
    world.configure(INTERNAL_JWT_SECRET=TEST_JWT_SECRET)  # the alert itself goes through the ledger

    (request,) = _failure_requests(world, failed.run_id)
    assert request.run_key == f"ops_alert:{failed.run_id}"
    assert _failure_requests(world, failed.run_id)[0].run_key == request.run_key  # a re-evaluated tick
    for _ in range(2):  # and the alert run twice: still one mail, one post
        assert _alert(world, request).success

    (mail,) = world.smtp.wait_for(1)
    message = mail.message
    assert mail.rcpt_tos == ("ops@example.com",)
    assert message["X-Notification-Kind"] == "ops_alert"
    assert message["X-Notification-Id"] == f"ops_alert:{failed.run_id}"
    assert message["Subject"] == "[cron_pipelines] run failed: send_payment_reminders (2026-11-28)"
    body = message.get_body(("plain",)).get_content()
    assert f"https://dagster.example.com/runs/{failed.run_id}" in body
    assert "sql-service: GET /v1/dues status=401" in body
    (post,) = receiver.received()
    assert post.path == "/services/T000/B000/secret-token" and post.signed_with(WEBHOOK_SECRET)
    assert post.headers["x-notification-id"] == f"ops_alert:{failed.run_id}:webhook"
    payload = post.json
    assert payload["text"].startswith("[cron_pipelines] run failed: send_payment_reminders (2026-11-28):")
    assert f"<https://dagster.example.com/runs/{failed.run_id}|{failed.run_id}>" in str(payload["blocks"])
    assert "sql-service: GET /v1/dues status=401" in payload["blocks"][3]["text"]["text"]
    ledger = world.ledger()
    assert ledger[f"ops_alert:{failed.run_id}"]["status"] == "sent"
    webhook_record = ledger[f"ops_alert:{failed.run_id}:webhook"]
    assert webhook_record["status"] == "sent" and webhook_record["metadata"]["channel"] == "webhook"
    assert webhook_record["recipient"] == f"http://127.0.0.1:{receiver.port}"  # never the hook's token


def test_a_failed_alert_run_is_not_alerted_about(world: JobWorld, receiver: WebhookReceiver) -> None:
    receiver.status = 404  # the hook was deleted: the alert run fails
    broken = world.defs.resolve_job_def("send_ops_alerts").execute_in_process(
        instance=world.instance,
        run_config={"ops": {"ops_alerts": {"config": {"key": "ops_alert:r1", "run_id": "r1", "job_name": "j"}}}},
        raise_on_error=False,
    )
    assert not broken.success
    assert "the webhook server failed, not the messages: webhook http://127.0.0.1" in failure_messages(broken)
    assert _failure_requests(world, broken.run_id) == []


def test_a_refused_login_fails_every_run_without_spending_an_attempt_the_webhook_reports_each_once_and_the_fixed_relay_sends_everything_once(
    world: JobWorld, receiver: WebhookReceiver
) -> None:
    world.services.store.add_users([user(f"usr_{n}") for n in range(18)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(18)])
    world.configure(SMTP_PASSWORD="a-wrong-password", STEP_MAX_RETRIES="3", STEP_RETRY_DELAY_SECONDS="0")
    failed_runs = []
    for _ in range(6):
        down = world.run("send_payment_reminders", D)
        assert not down.success
        assert f"SMTP login refused by 127.0.0.1:{world.smtp.port}: 535" in failure_messages(down)
        # Refused logins fail the same way a minute later: no step retries.
        assert [event for event in down.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"] == []
        failed_runs.append(down.run_id)
        (request,) = _failure_requests(world, down.run_id)
        assert not _alert(world, request).success  # its mail cannot go either (nothing claimed); its webhook does
    # Nothing of the day was claimed, so no attempt was spent; only the webhook alerts were sent.
    assert world.ledger().keys() == {f"ops_alert:{run_id}:webhook" for run_id in failed_runs}
    posts = receiver.received()
    assert sorted(post.headers["x-notification-id"] for post in posts) == sorted(
        f"ops_alert:{run_id}:webhook" for run_id in failed_runs
    )
    assert all(post.signed_with(WEBHOOK_SECRET) for post in posts)
    assert all("535" in post.json["blocks"][3]["text"]["text"] for post in posts)

    world.configure(SMTP_PASSWORD=SMTP_LOGIN[1])
    assert world.run("send_payment_reminders", D).success
    reminders = [key for key in world.sent_keys() if key.startswith("payment_reminder:")]
    assert reminders == sorted(f"payment_reminder:due_{n}:2026-12-01:3" for n in range(18))
    records = world.ledger()
    assert {(records[key]["status"], records[key]["attempts"]) for key in reminders} == {("sent", 1)}


def test_claims_stuck_after_a_run_died_are_alerted_once_per_run_with_how_to_settle_them(
    world: JobWorld, receiver: WebhookReceiver
) -> None:
    dead = world.run("maintenance", D)  # any finished run of this instance stands for the dead one
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
    ticks = []
    for _ in range(2):  # the next tick asks again under the same run key; the ledger sends nothing twice
        with dg.build_sensor_context(
            instance=world.instance, resources={"mongo_service": world.defs.resources["mongo_service"]}
        ) as context:
            ticks.append(list(sensor(context)))
    assert [[request.run_key for request in tick] for tick in ticks] == [[f"ops_alert:stuck_claims:{dead.run_id}"]] * 2
    for tick in ticks:
        assert _alert(world, tick[0]).success

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
    (post,) = receiver.received()
    assert post.headers["x-notification-id"] == f"ops_alert:stuck_claims:{dead.run_id}:webhook"
    assert "Message-ID &lt;planned.0@example.com&gt;" in post.json["blocks"][3]["text"]["text"]  # escaped for Slack
