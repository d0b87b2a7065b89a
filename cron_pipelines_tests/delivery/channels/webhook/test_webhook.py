"""The ops-alert webhook against a real HTTP receiver on loopback, honest or not."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from cron_pipelines.delivery.channels.base import SendResult, UnsendableNotification
from cron_pipelines.delivery.channels.webhook.message import (
    MAX_SECTION_CHARACTERS,
    WebhookComposer,
    WebhookMessage,
    signature,
)
from cron_pipelines.delivery.channels.webhook.transport import WebhookTransport
from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines_tests.support.smtp_sink import free_port
from cron_pipelines_tests.support.webhook_receiver import WebhookReceiver, receiving

SECRET = "webhook-signing-Kx7Qm2Rv9Tz4Bw6Nd1Hp3"


def _alert(error: str = "step failed", key: str = "ops_alert:r1:webhook") -> Notification:
    return Notification(
        key=key,
        kind=NotificationKind.OPS_ALERT,
        user_id=None,
        address="https://hooks.example.com",
        name=None,
        context={
            "headline": "run failed",
            "summary": "A run failed.",
            "job_name": "send_payment_reminders",
            "partition_key": "2026-11-28",
            "run_id": "r1",
            "run_url": "https://dagster.example.com/runs/r1",
            "error": error,
        },
    )


def _send(transport: WebhookTransport, messages: list[WebhookMessage]) -> list[SendResult]:
    results: dict[int, SendResult] = {}
    done = threading.Event()

    def on_result(index: int, result: SendResult) -> None:
        results[index] = result
        if len(results) == len(messages):
            done.set()

    transport.send_each(messages, on_result)
    assert done.wait(30)
    return [results[index] for index in range(len(messages))]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with receiving(WebhookReceiver()) as running:
        yield running


def test_an_alert_is_a_slack_message_signed_over_its_exact_body() -> None:
    message = WebhookComposer(SECRET).message([_alert()], None, digest=False)
    headers = dict(message.headers)
    assert headers["X-Signature-256"] == signature(SECRET, message.data)
    assert headers["X-Notification-Id"] == "ops_alert:r1:webhook" and headers["Content-Type"] == "application/json"
    payload = json.loads(message.data)
    assert payload["text"] == (
        "[cron_pipelines] run failed: send_payment_reminders (2026-11-28): A run failed. "
        "https://dagster.example.com/runs/r1"
    )
    assert [block["type"] for block in payload["blocks"]] == ["header", "section", "section", "section"]
    assert message.recipient == "https://hooks.example.com"
    assert "X-Signature-256" not in dict(WebhookComposer(None).message([_alert()], None, digest=False).headers)


def test_text_from_outside_cannot_open_links_or_mentions_and_is_bounded_by_slacks_limits() -> None:
    hostile = "<!channel> <https://evil.example|click> & ```break out```\x1b[31m\n" + "x" * 50_000
    payload = json.loads(WebhookComposer(SECRET).message([_alert(hostile)], None, digest=False).data)
    error = payload["blocks"][3]["text"]["text"]
    assert "&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp;" in error
    assert "<!channel>" not in error and "\x1b" not in error and "'''break out'''" in error
    assert len(error) <= MAX_SECTION_CHARACTERS


def test_a_webhook_carries_one_ops_alert() -> None:
    composer = WebhookComposer(SECRET)
    with pytest.raises(UnsendableNotification, match="one alert"):
        composer.message([_alert(), _alert(key="ops_alert:r2:webhook")], None, digest=True)
    reminder = Notification("payment_reminder:d:2026-12-01:3", NotificationKind.PAYMENT_REMINDER, "u", "a@b.c", None)
    with pytest.raises(UnsendableNotification, match="not payment_reminder"):
        composer.message([reminder], None, digest=False)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "sent"), (204, "sent"), (400, "bounced"), (404, "unavailable"), (429, "unavailable"), (503, "unavailable")],
)
def test_each_answer_is_charged_to_the_message_or_the_server(
    receiver: WebhookReceiver, status: int, outcome: str
) -> None:
    receiver.status, receiver.answer = status, b"no_service"
    transport = WebhookTransport(receiver.url())
    try:
        (result,) = _send(transport, [WebhookComposer(SECRET).message([_alert()], None, digest=False)])
    finally:
        transport.close()
    assert result.outcome == outcome
    if outcome != "sent":
        assert f"webhook http://127.0.0.1:{receiver.port} answered {status}: no_service" in (result.error or "")
        assert "secret-token" not in (result.error or "")  # the hook's path is its secret
    (post,) = receiver.received()
    assert post.signed_with(SECRET)


def test_a_receiver_that_trickles_or_floods_its_answer_is_cut_off_in_bounded_time_and_memory(
    receiver: WebhookReceiver,
) -> None:
    receiver.trickle, receiver.answer = True, b"x" * 60
    transport = WebhookTransport(receiver.url(), timeout=2.0)
    started = time.monotonic()
    try:
        (trickled,) = _send(transport, [WebhookComposer(SECRET).message([_alert()], None, digest=False)])
    finally:
        transport.close()
    assert time.monotonic() - started < 6 and trickled.outcome in ("sent", "unavailable")
    receiver.trickle, receiver.answer = False, b"y" * (20 * 1024 * 1024)
    transport = WebhookTransport(receiver.url())
    try:
        (flooded,) = _send(transport, [WebhookComposer(SECRET).message([_alert()], None, digest=False)])
    finally:
        transport.close()
    assert flooded.outcome == "sent"


def test_an_unreachable_receiver_and_a_stop_release_the_alert() -> None:
    transport = WebhookTransport(f"http://127.0.0.1:{free_port()}/hook")
    message = WebhookComposer(SECRET).message([_alert()], None, digest=False)
    try:
        (unreachable,) = _send(transport, [message])
        transport.stop()
        (stopped,) = _send(transport, [message])
    finally:
        transport.close()
    assert unreachable.outcome == "unavailable" and "ConnectError" in (unreachable.error or "")
    assert stopped.outcome == "stopped"
