"""Email over SMTP: reused sessions in parallel threads, each refusal charged to the message or the server.

The server failed, not the message (`unavailable`): it cannot be reached, TLS or the login
fails, it refuses the sender, it closes with 421, or the session is lost before the message
was handed over. The message failed: a 5xx to RCPT, DATA or the end of data is a bounce, a
4xx a failure for now. A session lost after the end of data, before the answer, may have
delivered it: `unknown`, never sent again.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from queue import Queue
from typing import TYPE_CHECKING, Literal

from cron_pipelines.delivery.channels.base import (
    STOPPED,
    ChannelUnavailable,
    RateLimiter,
    SendResult,
    ThreadedTransport,
)
from cron_pipelines.delivery.channels.email.mime import MailMessage
from cron_pipelines.safe_text import printable

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

SmtpSecurity = Literal["none", "starttls", "ssl"]

# Dropped sessions, resets and timeouts; every smtplib error is an OSError too, so the
# clauses that handle server replies must come before this one.
_CONNECTION_ERRORS = (smtplib.SMTPServerDisconnected, OSError)


def _reply_text(code: int, reply: bytes | str) -> str:
    """The server's reply as one printable line: it may carry anything, ANSI escapes included."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return printable(f"{code} {text}".strip(), 300)


def _refusal(code: int, reply: bytes | str, key: str, what: str) -> SendResult:
    """A 5xx is permanent (the address bounced): recorded so that no run tries it again."""
    if 500 <= code < 600:
        return SendResult(key, "bounced", f"bounced: {what}: {_reply_text(code, reply)}")
    return SendResult(key, "failed", f"{what}: {_reply_text(code, reply)}")


# An address the composer validated and normalised (no display name, brackets, spaces or quotes).
_BARE_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+")


class _Smtp(smtplib.SMTP):
    """smtplib's session, without redoing for MAIL, RCPT and DATA what the composer guarantees.

    smtplib parses every address again with email.utils.parseaddr (about 7 µs each) and
    dot-stuffs every message with a regex (about 12 µs for 2.5 KB), in the sending threads.
    A bare address goes out as `<address>`, and a message with no line that starts with a
    dot as it is. Anything else takes smtplib's own path.
    """

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if not _BARE_ADDRESS.fullmatch(sender):
            return super().mail(sender, options)
        if options and self.does_esmtp and any(option.lower() == "smtputf8" for option in options):
            if not self.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server")
            self.command_encoding = "utf-8"
        suffix = " " + " ".join(options) if options and self.does_esmtp else ""
        self.putcmd("mail", f"from:<{sender}>{suffix}")
        return self.getreply()

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if not _BARE_ADDRESS.fullmatch(recip):
            return super().rcpt(recip, options)
        suffix = " " + " ".join(options) if options and self.does_esmtp else ""
        self.putcmd("rcpt", f"to:<{recip}>{suffix}")
        return self.getreply()

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        """DATA, as smtplib sends it, noting when the end of data has gone out: a session lost after
        that may have delivered the message, one lost before it has not."""
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        # As smtplib: a str gets CRLF line ends, bytes go as they are; a leading dot is doubled (RFC 5321 4.5.2).
        data = _LINE_END.sub("\r\n", msg).encode("ascii") if isinstance(msg, str) else bytes(msg)
        if data.startswith(b".") or b"\n." in data:
            data = _LEADING_DOT.sub(b"..", data)
        self.send(data + (b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n"))
        self.end_of_data_sent = True
        return self.getreply()

    # Set when the current message's end of data has been written; reset before each message.
    end_of_data_sent = False


_LEADING_DOT = re.compile(rb"(?m)^\.")
_LINE_END = re.compile(r"\r\n|\n|\r")


class _SmtpSsl(_Smtp, smtplib.SMTP_SSL):
    pass


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: SmtpSecurity = "none"
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = None
    # The envelope sender that `check` has the server accept before anything is claimed; none: no probe.
    sender: str = ""


class _SmtpConnection:
    """One SMTP session, opened lazily and reopened once when the server drops it before a message is handed over."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        self._smtp: _Smtp | None = None
        self._server = f"{settings.host}:{settings.port}"

    def _open(self) -> _Smtp:
        settings = self._settings
        context = settings.ssl_context or ssl.create_default_context()
        try:
            if settings.security == "ssl":
                smtp: _Smtp = _SmtpSsl(settings.host, settings.port, timeout=settings.timeout, context=context)
            else:
                smtp = _Smtp(settings.host, settings.port, timeout=settings.timeout)
                if settings.security == "starttls":
                    smtp.starttls(context=context)
            if settings.username:
                smtp.login(settings.username, settings.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelUnavailable(
                f"SMTP login refused by {self._server}: {_reply_text(exc.smtp_code, exc.smtp_error)}",
                permanent=True,
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise ChannelUnavailable(
                f"SMTP server {self._server}: TLS certificate not trusted ({printable(exc.verify_message, 200)}); "
                "see SMTP_CA_FILE",
                permanent=True,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelUnavailable(
                f"cannot connect to SMTP server {self._server}: {type(exc).__name__}: {printable(exc, 200)}"
            ) from None
        return smtp

    def check(self) -> None:
        """Open the session and have the sender accepted (MAIL FROM, then RSET): ChannelUnavailable if not."""
        if self._smtp is None:
            self._smtp = self._open()
        sender = self._settings.sender
        if not sender:
            return
        try:
            self._smtp.ehlo_or_helo_if_needed()
            code, reply = self._smtp.mail(sender)
            if code != 250:
                raise ChannelUnavailable(
                    f"SMTP server {self._server} refused the sender {sender}: {_reply_text(code, reply)}",
                    permanent=500 <= code < 600,
                )
            self._smtp.rset()
        except smtplib.SMTPResponseException as exc:  # HELO refused
            self._discard()
            raise ChannelUnavailable(
                f"SMTP server {self._server} refused the session: {_reply_text(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except _CONNECTION_ERRORS as exc:
            self._discard()
            raise ChannelUnavailable(f"SMTP server {self._server} dropped the session: {type(exc).__name__}") from None

    def send(self, message: MailMessage) -> SendResult:
        for attempt in (1, 2):
            if self._smtp is None:
                try:
                    self._smtp = self._open()
                except ChannelUnavailable as exc:
                    return SendResult(message.key, "unavailable", str(exc))
            smtp = self._smtp
            smtp.end_of_data_sent = False
            try:
                return self._send_on(smtp, message)
            except _CONNECTION_ERRORS as exc:
                self._discard()
                if smtp.end_of_data_sent:  # the server may have taken it: never send it again
                    return SendResult(
                        message.key,
                        "unknown",
                        f"SMTP server {self._server} dropped the session after the end of data, before its answer "
                        f"({type(exc).__name__}): it may have accepted the message",
                    )
                if attempt == 2:
                    return SendResult(
                        message.key, "unavailable", f"SMTP server {self._server} dropped the session twice"
                    )
        raise AssertionError("unreachable")

    def _send_on(self, smtp: _Smtp, message: MailMessage) -> SendResult:
        options: tuple[str, ...] = ()
        if message.smtputf8:
            smtp.ehlo_or_helo_if_needed()
            if not smtp.has_extn("smtputf8"):
                return SendResult(
                    message.key, "bounced", "not sent: the address needs SMTPUTF8, which the mail server does not offer"
                )
            options = ("SMTPUTF8",)
        try:
            refused = smtp.sendmail(message.sender, [message.recipient], message.data, mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(message.recipient, (550, b"recipient refused"))
            return self._refusal(code, reply, message.key, "recipient refused")
        except smtplib.SMTPDataError as exc:  # DATA, or the end of data
            self._reset_after_error()
            return self._refusal(exc.smtp_code, exc.smtp_error, message.key, "message refused")
        except smtplib.SMTPSenderRefused as exc:  # our sender, not the address: the server's problem
            self._reset_after_error()
            return SendResult(
                message.key,
                "unavailable",
                f"SMTP server {self._server} refused the sender {printable(exc.sender, 100)}: "
                f"{_reply_text(exc.smtp_code, exc.smtp_error)}",
            )
        except smtplib.SMTPResponseException as exc:  # HELO refused: the server's problem, not the address's
            self._reset_after_error()
            return SendResult(
                message.key,
                "unavailable",
                f"SMTP server {self._server} refused the session: {_reply_text(exc.smtp_code, exc.smtp_error)}",
            )
        if refused:
            code, reply = refused[message.recipient]
            return self._refusal(code, reply, message.key, "recipient refused")
        return SendResult(message.key, "sent")

    def _refusal(self, code: int, reply: bytes | str, key: str, what: str) -> SendResult:
        if code == 421:  # "service not available, closing": the server's failure, whatever command it answered
            self._discard()
            return SendResult(key, "unavailable", f"SMTP server {self._server} closed: {_reply_text(code, reply)}")
        return _refusal(code, reply, key, what)

    def _reset_after_error(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except _CONNECTION_ERRORS:
            self._discard()

    def _discard(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                self._discard()


class SmtpTransport(ThreadedTransport[MailMessage]):
    """Sends through up to `max_connections` reused SMTP sessions in parallel.

    Each session sends one message at a time; a batch is spread over the sessions so
    that a provider's per-command latency is paid in parallel. `rate_limit_per_second`
    caps messages per second across all sessions.
    """

    def __init__(
        self, settings: SmtpSettings, *, max_connections: int = 4, rate_limit_per_second: float | None = None
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        super().__init__(max_connections, "smtp")
        self._connections: Queue[_SmtpConnection] = Queue()
        self._all = [_SmtpConnection(settings) for _ in range(max_connections)]
        for connection in self._all:
            self._connections.put(connection)
        self._rate_limiter = RateLimiter(rate_limit_per_second) if rate_limit_per_second else None
        self._server_down = threading.Event()
        self._down_reason = ""
        self._checked = False

    def check(self) -> None:
        """One session opened and the sender accepted, before anything is claimed (once per transport)."""
        if self._checked:
            return
        connection = self._connections.get()
        try:
            connection.check()
        finally:
            self._connections.put(connection)
        self._checked = True

    def _send_one(self, message: MailMessage) -> SendResult:
        if self._server_down.is_set():
            return SendResult(message.key, "unavailable", self._down_reason)
        connection = self._connections.get()
        try:
            with self._rate_limiter.slot() if self._rate_limiter is not None else contextlib.nullcontext(True) as paced:
                # Checked last, right before the hand-over: a stop is never outrun by a waiting send.
                if not paced or self._stopped.is_set():
                    return SendResult(message.key, "stopped", STOPPED)
                result = connection.send(message)
        finally:
            self._connections.put(connection)
        if result.outcome == "unavailable":
            # Once the server is gone, don't pay a connect timeout per remaining message.
            self._down_reason = result.error or "SMTP server unavailable"
            self._server_down.set()
        return result

    def stop(self) -> None:
        super().stop()
        if self._rate_limiter is not None:
            self._rate_limiter.stop()

    def close(self) -> None:
        super().close()
        for connection in self._all:
            connection.close()
