"""Alerts posted to a webhook, each answer charged to the message or to the receiving server.

`2xx` is sent. A `400`, `413` or `422` refuses the message itself (`bounced`: never again).
Everything else is the server's failure (`unavailable`, so the alert is `released` for a
later run): it cannot be reached, times out, answers `401`/`403`/`404`/`410` (the hook is
gone or refuses us) or `408`/`429`/`5xx`. Every post ends within its deadline however the
server answers, and at most 4 KiB of the answer is read (for the message).
"""

from __future__ import annotations

import time

import httpcore
import httpx

from cron_pipelines.clients.transport import DeadlineTransport, current_deadline
from cron_pipelines.delivery.channels.base import STOPPED, SendResult, ThreadedTransport
from cron_pipelines.delivery.channels.webhook.message import WebhookMessage
from cron_pipelines.safe_text import printable

MESSAGE_REFUSED = frozenset({400, 413, 422})
MAX_ANSWER_BYTES = 4096


class WebhookTransport(ThreadedTransport[WebhookMessage]):
    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        super().__init__(1, "webhook")
        self._url = url
        self._origin = str(httpx.URL(url).copy_with(path="/", query=None, fragment=None)).rstrip("/")
        self._timeout = timeout
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout), transport=DeadlineTransport(1), headers={"User-Agent": "cron-pipelines"}
        )

    def check(self) -> None:
        """Nothing to ask a webhook before posting: its first answer says whether it takes alerts."""

    def _send_one(self, message: WebhookMessage) -> SendResult:
        if self._stopped.is_set():
            return SendResult(message.key, "stopped", STOPPED)
        token = current_deadline.set(time.monotonic() + self._timeout)
        try:
            with self._http.stream("POST", self._url, content=message.data, headers=dict(message.headers)) as answer:
                text = _answer_text(answer)
                status = answer.status_code
        except (httpx.TransportError, httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            return SendResult(message.key, "unavailable", f"webhook {self._origin}: {type(exc).__name__}")
        finally:
            current_deadline.reset(token)
        if 200 <= status < 300:
            return SendResult(message.key, "sent")
        reply = f"webhook {self._origin} answered {status}: {text}"
        if status in MESSAGE_REFUSED:
            return SendResult(message.key, "bounced", f"bounced: {reply}")
        return SendResult(message.key, "unavailable", reply)

    def close(self) -> None:
        super().close()
        self._http.close()


def _answer_text(answer: httpx.Response) -> str:
    """The first 4 KiB of an answer, as one printable line (a hostile server may send anything)."""
    body = bytearray()
    try:
        for chunk in answer.iter_raw():
            body += chunk
            if len(body) >= MAX_ANSWER_BYTES:
                break
    except (httpx.TransportError, httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError):
        pass  # the status is what counts
    return printable(body[:MAX_ANSWER_BYTES].decode("utf-8", "replace") or answer.reason_phrase, 300)
