"""The outbox and SMTP transports, against a real aiosmtpd server on loopback."""

from __future__ import annotations

import email
import os
import ssl
import threading
import time
from email import policy
from pathlib import Path

import pytest

from cron_pipelines.delivery.channels.base import ChannelUnavailable, OutgoingMessage, SendResult
from cron_pipelines.delivery.channels.email.composer import MessageComposer
from cron_pipelines.delivery.channels.email.mime import MailMessage
from cron_pipelines.delivery.channels.email.outbox import OutboxTransport
from cron_pipelines.delivery.channels.email.smtp import SmtpSettings, SmtpTransport, _SmtpConnection
from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines_tests.support.certificates import self_signed_localhost
from cron_pipelines_tests.support.smtp_sink import SmtpSink, free_port

COMPOSER = MessageComposer("Cron Pipelines <no-reply@example.com>")


def _messages(count: int, *, prefix: str = "u") -> list[OutgoingMessage]:
    return [
        COMPOSER.compose(
            Notification(
                key=f"account_deactivated:{prefix}{index}:2026-08-01T00:00:00Z",
                kind=NotificationKind.ACCOUNT_DEACTIVATED,
                user_id=f"{prefix}{index}",
                address=f"{prefix}{index}@example.com",
                name=f"User {index}",
                context={"last_active_date": "2026-08-01"},
            )
        )
        for index in range(count)
    ]


@pytest.fixture
def smtp_sink():
    with SmtpSink() as sink:
        yield sink


def _smtp(sink: SmtpSink, **options) -> SmtpTransport:
    return SmtpTransport(SmtpSettings(host=sink.host, port=sink.port, timeout=5), **options)


def _collect(transport: SmtpTransport | OutboxTransport, messages: list[OutgoingMessage]) -> dict[int, SendResult]:
    """send_each's results by index, asserting each message is reported once, by a thread other than this one."""
    reported: dict[int, SendResult] = {}
    threads: set[int] = set()
    done = threading.Event()
    lock = threading.Lock()

    def on_result(index: int, result: SendResult) -> None:
        with lock:
            assert index not in reported
            reported[index] = result
            threads.add(threading.get_ident())
            if len(reported) == len(messages):
                done.set()

    transport.send_each(messages, on_result)
    assert done.wait(30) or not messages
    assert threading.get_ident() not in threads
    return reported


def _send(transport: SmtpTransport | OutboxTransport, messages: list[OutgoingMessage]) -> list[SendResult]:
    """Every message's result, in the order of the messages."""
    reported = _collect(transport, messages)
    return [reported[index] for index in range(len(messages))]


# --- outbox -----------------------------------------------------------------


def test_outbox_writes_one_parseable_eml_per_message_in_time_order(tmp_path: Path) -> None:
    transport = OutboxTransport(tmp_path / "outbox")
    messages = _messages(5)
    results = _send(transport, messages[:3]) + _send(transport, messages[3:])

    assert [result.outcome for result in results] == ["sent"] * 5
    files = sorted(os.listdir(tmp_path / "outbox"))
    assert len(files) == 5 and all(name.endswith(".eml") for name in files)
    parsed = [
        email.message_from_bytes((tmp_path / "outbox" / name).read_bytes(), policy=policy.default) for name in files
    ]
    # Sorting the names gives the order of sending.
    assert [message["X-Notification-Id"] for message in parsed] == [message.key for message in messages]
    assert [message["Message-ID"] for message in parsed] == [message.message_id for message in messages]


def test_outbox_messages_are_private_whatever_the_umask(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir(mode=0o755)
    previous = os.umask(0o022)
    try:
        transport = OutboxTransport(tmp_path / "shared")  # an existing folder is narrowed too
        assert [result.outcome for result in _send(transport, _messages(2))] == ["sent", "sent"]
        fresh = OutboxTransport(tmp_path / "new" / "outbox")
        assert [result.outcome for result in _send(fresh, _messages(1))] == ["sent"]
    finally:
        os.umask(previous)
    for folder in (tmp_path / "shared", tmp_path / "new" / "outbox"):
        assert folder.stat().st_mode & 0o777 == 0o700
        files = list(folder.iterdir())
        assert files and all(path.stat().st_mode & 0o777 == 0o600 for path in files)


def test_outbox_that_cannot_be_written_reports_every_message_unavailable(tmp_path: Path) -> None:
    transport = OutboxTransport(tmp_path / "outbox")
    (tmp_path / "outbox").chmod(0o500)
    try:
        if os.access(tmp_path / "outbox", os.W_OK):  # running as root: permissions do not bind
            (tmp_path / "outbox").chmod(0o700)
            (tmp_path / "outbox").rmdir()
            (tmp_path / "outbox").write_text("a file where the folder should be")
        results = _send(transport, _messages(2))
    finally:
        if (tmp_path / "outbox").is_dir():
            (tmp_path / "outbox").chmod(0o700)
    assert [result.outcome for result in results] == ["unavailable", "unavailable"]
    assert all("outbox not writable" in (result.error or "") for result in results)


# --- smtp -------------------------------------------------------------------


def test_smtp_delivers_over_one_reused_connection(smtp_sink: SmtpSink) -> None:
    transport = _smtp(smtp_sink, max_connections=1)
    messages = _messages(20)
    try:
        results = _send(transport, messages)
    finally:
        transport.close()
    assert [result.outcome for result in results] == ["sent"] * 20
    received = smtp_sink.wait_for(20)
    assert [mail.notification_id for mail in received] == [message.key for message in messages]
    assert received[0].mail_from == "no-reply@example.com" and received[0].rcpt_tos == ("u0@example.com",)
    assert received[0].data.rstrip(b"\r\n") == messages[0].data.rstrip(b"\r\n")
    assert smtp_sink.sessions == 1


@pytest.mark.parametrize(
    ("sender", "body"),
    [
        ("no-reply@example.com", b"Subject: plain\r\n\r\nno line starts with a dot\r\n"),  # the short path
        ("no-reply@example.com", b"Subject: dots\r\n\r\n.a line with a dot\r\n..two\r\n.\r\nend\r\n"),
        ("Ops <no-reply@example.com>", b"Subject: named sender\r\n\r\nbody without its last line break"),
    ],
)
def test_the_wire_carries_the_same_envelope_and_message_whichever_path_smtplib_takes(
    smtp_sink: SmtpSink, sender: str, body: bytes
) -> None:
    # Bare addresses and dot-free messages skip smtplib's re-parsing and dot-stuffing; the rest
    # take smtplib's own path. The server must receive the same either way.
    transport = _smtp(smtp_sink, max_connections=1)
    message = MailMessage("k1", "payment_reminder", "u1@example.com", "<m1@example.com>", body, sender=sender)
    try:
        assert [result.outcome for result in _send(transport, [message])] == ["sent"]
    finally:
        transport.close()
    (received,) = smtp_sink.wait_for(1)
    assert received.mail_from == "no-reply@example.com" and received.rcpt_tos == ("u1@example.com",)
    assert received.data.rstrip(b"\r\n") == body.rstrip(b"\r\n")  # dots un-stuffed by the server intact


def test_refused_recipients_fail_only_their_own_message_permanently_or_for_now(smtp_sink: SmtpSink) -> None:
    smtp_sink.refused_recipients.add("u1@example.com")
    smtp_sink.temporarily_refused_recipients.add("u2@example.com")
    transport = _smtp(smtp_sink, max_connections=1)
    try:
        results = _send(transport, _messages(4))
    finally:
        transport.close()
    assert [result.outcome for result in results] == ["sent", "bounced", "failed", "sent"]
    assert results[1].error is not None and results[1].error.startswith("bounced: recipient refused: 550 5.1.1")
    assert results[2].error is not None and results[2].error.startswith("recipient refused: 451 4.3.0")
    assert {mail.rcpt_tos[0] for mail in smtp_sink.wait_for(2)} == {"u0@example.com", "u3@example.com"}


def test_a_dropped_connection_is_reopened_once(smtp_sink: SmtpSink) -> None:
    transport = _smtp(smtp_sink, max_connections=1)
    messages = _messages(4)
    try:
        assert [r.outcome for r in _send(transport, messages[:2])] == ["sent", "sent"]
        smtp_sink.restart()  # the server drops the session the transport holds
        assert [r.outcome for r in _send(transport, messages[2:])] == ["sent", "sent"]
    finally:
        transport.close()
    assert [mail.notification_id for mail in smtp_sink.wait_for(4)] == [message.key for message in messages]


def test_a_server_that_is_down_marks_the_batch_unavailable_quickly() -> None:
    transport = SmtpTransport(SmtpSettings(host="127.0.0.1", port=free_port(), timeout=5), max_connections=2)
    started = time.monotonic()
    try:
        results = _send(transport, _messages(50))
    finally:
        transport.close()
    assert {result.outcome for result in results} == {"unavailable"}
    assert "cannot connect to SMTP server" in (results[0].error or "")
    assert time.monotonic() - started < 5


def test_server_going_down_mid_batch_keeps_what_was_sent(smtp_sink: SmtpSink) -> None:
    transport = _smtp(smtp_sink, max_connections=1)
    try:
        first = _send(transport, _messages(2, prefix="a"))
        smtp_sink.stop()
        second = _send(transport, _messages(3, prefix="b"))
    finally:
        transport.close()
    assert [r.outcome for r in first] == ["sent", "sent"]
    assert [r.outcome for r in second] == ["unavailable"] * 3


def test_login_when_credentials_are_configured() -> None:
    with SmtpSink(credentials=("mailer", "s3cret-password")) as sink:
        transport = SmtpTransport(
            SmtpSettings(host=sink.host, port=sink.port, username="mailer", password="s3cret-password", timeout=5)
        )
        try:
            assert [r.outcome for r in _send(transport, _messages(2))] == ["sent", "sent"]
        finally:
            transport.close()
        assert sink.logins and set(sink.logins) == {"mailer"}

        wrong = SmtpTransport(
            SmtpSettings(host=sink.host, port=sink.port, username="mailer", password="nope", timeout=5)
        )
        try:
            results = _send(wrong, _messages(1))
        finally:
            wrong.close()
        assert results[0].outcome == "unavailable"
        assert "login refused" in (results[0].error or "") and "nope" not in (results[0].error or "")


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_modes(tmp_path: Path, security: str) -> None:
    tls = self_signed_localhost(tmp_path)
    server_options = (
        {"starttls_context": tls.server_context()}
        if security == "starttls"
        else {"implicit_tls_context": tls.server_context()}
    )
    with SmtpSink(**server_options) as sink:
        transport = SmtpTransport(
            SmtpSettings(
                host="127.0.0.1", port=sink.port, security=security, timeout=5, ssl_context=tls.client_context()
            )
        )
        try:
            assert [r.outcome for r in _send(transport, _messages(2))] == ["sent", "sent"]
        finally:
            transport.close()
        assert len(sink.wait_for(2)) == 2


def test_parallel_connections_share_the_work_and_pay_latency_in_parallel() -> None:
    with SmtpSink(latency=0.02) as sink:  # 3 commands a message: ~60 ms each on one connection
        transport = SmtpTransport(SmtpSettings(host=sink.host, port=sink.port, timeout=5), max_connections=8)
        messages = _messages(40)
        try:
            started = time.monotonic()
            results = _send(transport, messages)
            elapsed = time.monotonic() - started
        finally:
            transport.close()
        assert [r.key for r in results] == [m.key for m in messages]  # results in input order
        assert {r.outcome for r in results} == {"sent"}
        assert sorted(mail.notification_id for mail in sink.wait_for(40)) == sorted(m.key for m in messages)
        # Sequentially this is 40 x 60 ms = 2.4 s; eight sessions must do far better.
        assert elapsed < 1.2
        assert sink.sessions == 8  # each session reused for about five messages


def test_rate_limit_is_never_exceeded_in_any_second_at_the_server(smtp_sink: SmtpSink) -> None:
    transport = _smtp(smtp_sink, max_connections=8, rate_limit_per_second=40)
    try:
        started = time.monotonic()
        results = _send(transport, _messages(120))
        elapsed = time.monotonic() - started
    finally:
        transport.close()
    assert {result.outcome for result in results} == {"sent"}
    arrivals = sorted(smtp_sink.arrivals)
    assert len(arrivals) == 120
    busiest = max(sum(1 for other in arrivals if moment - 1.0 < other <= moment) for moment in arrivals)
    assert busiest <= 40
    assert elapsed >= 2.0  # 120 messages at 40 per second need three windows
    assert busiest >= 35  # and the cap is used, not undershot


def test_a_stop_wakes_sends_waiting_for_the_rate_limit_at_once(smtp_sink: SmtpSink) -> None:
    transport = _smtp(smtp_sink, max_connections=2, rate_limit_per_second=0.5)  # one message every 2 s
    reported: dict[int, SendResult] = {}
    done = threading.Event()

    def on_result(index: int, result: SendResult) -> None:
        reported[index] = result
        if len(reported) == 4:
            done.set()

    try:
        transport.send_each(_messages(4), on_result)
        smtp_sink.wait_for(1)
        stopped_at = time.monotonic()
        transport.stop()
        assert done.wait(5)
        waited = time.monotonic() - stopped_at
    finally:
        transport.close()
    assert waited < 0.5, waited  # not the 2-6 s the pace would have taken
    assert sorted(result.outcome for result in reported.values()) == ["sent", "stopped", "stopped", "stopped"]
    assert len(smtp_sink.received) == 1


def test_a_session_lost_after_the_end_of_data_is_unknown_and_never_sent_again(smtp_sink: SmtpSink) -> None:
    smtp_sink.hang_up_after_data_for.add("u1@example.com")
    transport = _smtp(smtp_sink, max_connections=1)
    try:
        results = _send(transport, _messages(3))
    finally:
        transport.close()
    assert [result.outcome for result in results] == ["sent", "unknown", "sent"]
    assert "dropped the session after the end of data, before its answer" in (results[1].error or "")
    # The server kept it: sending it again on a new session would deliver it twice.
    assert [mail.notification_id for mail in smtp_sink.wait_for(3)] == [message.key for message in _messages(3)]


def test_a_session_lost_before_the_message_is_handed_over_is_sent_again_on_a_new_one(smtp_sink: SmtpSink) -> None:
    transport = _smtp(smtp_sink, max_connections=1)
    messages = _messages(2)
    try:
        assert _send(transport, messages[:1])[0].outcome == "sent"
        smtp_sink.restart()  # the idle session is gone; the next MAIL FROM finds it closed
        assert _send(transport, messages[1:])[0].outcome == "sent"
    finally:
        transport.close()
    assert [mail.notification_id for mail in smtp_sink.wait_for(2)] == [message.key for message in messages]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("421 4.3.2 Service shutting down", "refused the sender no-reply@example.com: 421 4.3.2 Service shutting down"),
        ("530 5.7.0 Authentication required", "refused the sender no-reply@example.com: 530 5.7.0"),
    ],
)
def test_a_refused_sender_is_the_servers_failure_not_the_messages(
    smtp_sink: SmtpSink, reply: str, expected: str
) -> None:
    smtp_sink.sender_reply = reply
    transport = _smtp(smtp_sink, max_connections=1)
    try:
        results = _send(transport, _messages(3))
    finally:
        transport.close()
    assert {result.outcome for result in results} == {"unavailable"}
    assert expected in (results[0].error or "")
    assert smtp_sink.received == []


def test_a_421_to_rcpt_is_the_servers_failure(smtp_sink: SmtpSink) -> None:
    smtp_sink.recipient_reply = "421 4.7.0 Too many errors, closing"
    transport = _smtp(smtp_sink, max_connections=1)
    try:
        results = _send(transport, _messages(2))
    finally:
        transport.close()
    assert [result.outcome for result in results] == ["unavailable", "unavailable"]
    assert "closed: 421 4.7.0 Too many errors, closing" in (results[0].error or "")


def test_the_check_before_claiming_tells_a_refused_login_and_sender_from_an_unreachable_server() -> None:
    with SmtpSink(credentials=("mailer", "s3cret-password")) as sink:
        wrong = _smtp(sink)
        wrong._all[0]._settings = SmtpSettings(
            host=sink.host, port=sink.port, username="mailer", password="wrong", timeout=5
        )
        anonymous = SmtpTransport(SmtpSettings(host=sink.host, port=sink.port, timeout=5, sender="a@example.com"))
        for transport, expected in (
            (wrong, "SMTP login refused by"),
            (anonymous, "refused the sender a@example.com: 530"),
        ):
            with pytest.raises(ChannelUnavailable, match=expected) as raised:
                transport.check()
            transport.close()
            assert raised.value.permanent  # trying again in a minute cannot help: no step retries
        assert sink.received == []
    unreachable = SmtpTransport(SmtpSettings(host="127.0.0.1", port=free_port(), timeout=5))
    with pytest.raises(ChannelUnavailable, match="cannot connect to SMTP server") as raised:
        unreachable.check()
    unreachable.close()
    assert not raised.value.permanent


def test_a_relay_with_a_private_ca_is_trusted_through_its_ca_file(tmp_path: Path) -> None:
    tls = self_signed_localhost(tmp_path)
    with SmtpSink(starttls_context=tls.server_context()) as sink:
        settings = {"host": "localhost", "port": sink.port, "security": "starttls", "timeout": 5}
        untrusted = SmtpTransport(SmtpSettings(**settings))
        with pytest.raises(ChannelUnavailable, match="TLS certificate not trusted .*SMTP_CA_FILE") as raised:
            untrusted.check()
        untrusted.close()
        assert raised.value.permanent
        trusted = SmtpTransport(
            SmtpSettings(**settings, ssl_context=ssl.create_default_context(cafile=str(tls.certificate)))
        )
        try:
            assert [result.outcome for result in _send(trusted, _messages(1))] == ["sent"]
        finally:
            trusted.close()


# --- results reported by the sending threads ---------------------------------


@pytest.mark.parametrize("connections", [1, 4])
def test_send_each_reports_every_message_once_as_it_is_sent(smtp_sink: SmtpSink, connections: int) -> None:
    transport = _smtp(smtp_sink, max_connections=connections)
    messages = _messages(40)
    try:
        reported = _collect(transport, messages)
    finally:
        transport.close()
    assert [(reported[index].key, reported[index].outcome) for index in range(40)] == [
        (message.key, "sent") for message in messages
    ]
    received = [mail.notification_id for mail in smtp_sink.wait_for(40)]
    assert sorted(received) == sorted(message.key for message in messages)
    if connections == 1:  # one session sends in the order given
        assert received == [message.key for message in messages]


def test_send_each_to_the_outbox_writes_in_order_and_a_stop_holds_back_the_rest(tmp_path: Path) -> None:
    transport = OutboxTransport(tmp_path / "outbox")
    messages = _messages(6)
    assert {result.outcome for result in _collect(transport, messages[:3]).values()} == {"sent"}
    transport.stop()
    stopped = _collect(transport, messages[3:])
    transport.close()
    assert {result.outcome for result in stopped.values()} == {"stopped"}
    files = sorted(os.listdir(tmp_path / "outbox"))
    keys = [
        email.message_from_bytes((tmp_path / "outbox" / name).read_bytes(), policy=policy.default)["X-Notification-Id"]
        for name in files
    ]
    assert keys == [message.key for message in messages[:3]]


def test_an_unexpected_error_while_sending_is_a_failed_result_not_a_lost_one(
    smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the sending code (simulated: only a bug raises here) must not leave the batch waiting forever."""
    messages = _messages(3)
    original = _SmtpConnection.send

    def send(self: _SmtpConnection, message: OutgoingMessage) -> SendResult:
        if message.key == messages[1].key:
            raise ZeroDivisionError("a bug")
        return original(self, message)

    monkeypatch.setattr(_SmtpConnection, "send", send)
    transport = _smtp(smtp_sink, max_connections=2)
    try:
        reported = _collect(transport, messages)
    finally:
        transport.close()
    assert [reported[index].outcome for index in range(3)] == ["sent", "failed", "sent"]
    assert reported[1].error == "not sent: ZeroDivisionError: a bug"
    assert f"sending {messages[1].key} failed unexpectedly" in caplog.text
