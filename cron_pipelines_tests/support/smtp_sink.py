"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives.

It can refuse chosen recipients for good (550) or for now (451), with a reply text of
the test's choosing, refuse every sender from the N-th message on (the server's own
failure), offer SMTPUTF8 or not, require a login, speak STARTTLS or implicit TLS, add
latency to every command like a remote provider, and be restarted on the same port to
drop every open session.
"""

from __future__ import annotations

import asyncio
import email
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    received_at: float = 0.0  # wall clock, to compare with Dagster event timestamps

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]

    @property
    def notification_id(self) -> str:
        return str(self.message["X-Notification-Id"])

    @property
    def notification_ids(self) -> list[str]:
        """Every key the email carries: one, or one per notification of a digest."""
        return [str(value) for value in self.message.get_all("X-Notification-Id", [])]


def _header_value(data: bytes, name: bytes) -> bytes:
    """A header's raw value, found without parsing the whole message."""
    start = data.find(b"\r\n" + name + b": ")
    if start < 0:
        return b""
    start += len(name) + 4
    return data[start : data.find(b"\r\n", start)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def _latency(self) -> None:
        if self.sink.latency:
            await asyncio.sleep(self.sink.latency)

    async def handle_MAIL(self, server, session: Session, envelope: Envelope, address: str, options) -> str:
        await self._latency()
        sink = self.sink
        if sink.sender_reply is not None and sink.count >= sink.refuse_senders_after:
            return sink.sender_reply  # the server's own failure, e.g. 421 shutting down or 530 auth required
        self.sink._sessions.add(session.peer)  # the client's (address, port): one per connection
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, options) -> str:
        await self._latency()
        with self.sink._lock:
            self.sink.rcpt_attempts[address] += 1
        if self.sink.recipient_reply is not None:
            return self.sink.recipient_reply
        if address in self.sink.refused_recipients:
            return "550 5.1.1 <%s>: mailbox unavailable%s" % (address, self.sink.refusal_text)
        if address in self.sink.temporarily_refused_recipients:
            return "451 4.3.0 <%s>: try again later%s" % (address, self.sink.refusal_text)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        await self._latency()
        self.sink._record(
            ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content, time.time())
        )
        if set(envelope.rcpt_tos) & self.sink.hang_up_after_data_for:
            server.transport.close()  # taken, and the session lost before the answer
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(
        self,
        *,
        port: int | None = None,
        credentials: tuple[str, str] | None = None,
        starttls_context: ssl.SSLContext | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
        latency: float = 0.0,
        keep_messages: bool = True,
        smtputf8: bool = True,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.refused_recipients: set[str] = set()
        self.temporarily_refused_recipients: set[str] = set()
        self.refusal_text = ""  # appended to refusals, e.g. to inject escape codes
        # With a reply set, MAIL FROM gets it once `refuse_senders_after` messages have arrived.
        self.sender_reply: str | None = None
        self.refuse_senders_after = 0
        # With a reply set, every RCPT gets it (e.g. 421: the server closing).
        self.recipient_reply: str | None = None
        # For these recipients the server keeps the message, then drops the session before answering.
        self.hang_up_after_data_for: set[str] = set()
        self.smtputf8 = smtputf8
        self.rcpt_attempts: Counter[str] = Counter()
        self.latency = latency
        self.logins: list[str] = []
        self._credentials = credentials
        self._starttls_context = starttls_context
        self._implicit_tls_context = implicit_tls_context
        self._received: list[ReceivedMail] = []
        # For volume runs: count and remember ids only, not every message's bytes.
        self._keep_messages = keep_messages
        self.count = 0
        self.notification_ids: set[bytes] = set()
        self.duplicate_ids = 0
        self.arrivals: list[float] = []
        self._sessions: set[object] = set()
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self._credentials is not None:
            username, password = auth_data.login.decode(), auth_data.password.decode()
            if (username, password) == self._credentials:
                self.logins.append(username)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpSink:
        options: dict = {"ready_timeout": 10.0, "enable_SMTPUTF8": self.smtputf8}
        if self._credentials is not None:
            options.update(authenticator=self._authenticate, auth_require_tls=False, auth_required=True)
        if self._starttls_context is not None:
            options.update(tls_context=self._starttls_context, require_starttls=True)
        if self._implicit_tls_context is not None:
            options.update(ssl_context=self._implicit_tls_context)
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        """Stop and start on the same port: every open session is dropped."""
        self.stop()
        self.start()

    def _record(self, mail: ReceivedMail) -> None:
        notification_id = _header_value(mail.data, b"X-Notification-Id")
        with self._lock:
            self.count += 1
            self.arrivals.append(time.monotonic())
            if notification_id in self.notification_ids:
                self.duplicate_ids += 1
            self.notification_ids.add(notification_id)
            if self._keep_messages:
                self._received.append(mail)

    @property
    def sessions(self) -> int:
        """How many SMTP connections sent at least one message."""
        return len(self._sessions)

    @property
    def received(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.received

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
