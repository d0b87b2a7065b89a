"""What every channel is: a composer that turns notifications into messages, and a transport.

A channel (email, webhook, ...) is one folder beside this module. Its transport hands the
messages over in background threads and answers each one with one `SendResult`, so the
pipeline records every outcome the same way whatever the channel (docs/services.md,
"The mail"):
- `sent`;
- `bounced`: the message refused for good: never tried again (`skipped`);
- `failed`: the message refused for now: a later run tries again, and it counts as one
  of the message's attempts;
- `unavailable`: the server failed, not the message; the rest of the batch is marked so
  without trying, and the pipeline records them `released` and fails the step;
- `unknown`: handed over, and the answer lost: it may have arrived, so nothing is
  recorded (at most once) and the claim is left for an operator, as after a crash;
- `stopped`: not handed over because the run is being stopped (`released`).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from cron_pipelines.models.notification import Notification
from cron_pipelines.safe_text import printable

SendOutcome = Literal["sent", "bounced", "failed", "unavailable", "unknown", "stopped"]
STOPPED = "not sent: the run was stopped before this message was handed over"

logger = logging.getLogger("cron_pipelines.delivery")


@dataclass(frozen=True)
class OutgoingMessage:
    """One message a channel composed, ready for its transport: what the pipeline needs of any channel."""

    key: str  # the (first) notification it carries
    kind: str
    recipient: str  # an e-mail address, a webhook's URL: whatever the channel delivers to
    message_id: str  # recorded with every notification it carries
    data: bytes


@dataclass(frozen=True)
class SendResult:
    key: str
    outcome: SendOutcome
    error: str | None = None


# Called from a sending thread with the message's index in its batch and its result.
ResultCallback = Callable[[int, SendResult], None]


class UnsendableNotification(ValueError):
    """The notification must not be sent (bad recipient, unsafe header value); the message is the reason."""


class ChannelUnavailable(Exception):
    """The receiving server failed, not a message: it could not be reached, or refused us as a client.

    `permanent` when trying again in a minute cannot help (the login or the sender refused, a
    TLS certificate not trusted): the step then fails without retries.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# The messages one channel's transport takes (an email's envelope, a webhook's URL).
Message = TypeVar("Message", bound=OutgoingMessage)
AnyMessage = TypeVar("AnyMessage", bound=OutgoingMessage, contravariant=True)


class Transport(Protocol[AnyMessage]):
    """Where a channel's messages go; opened per step, closed by whoever opened it."""

    def check(self) -> None:
        """Raise ChannelUnavailable unless a message could be handed over now (before anything is claimed)."""

    def send_each(self, messages: Sequence[AnyMessage], on_result: ResultCallback) -> None:
        """Hand the messages over in the background; `on_result` is called once per message as its result is known."""

    def stop(self) -> None:
        """From now on hand nothing over; messages not yet handed over come back `stopped`."""

    def close(self) -> None: ...


class Channel(Protocol):
    """A way of reaching people: composes a notification (or a digest of several) into one message."""

    name: str

    def new_message_id(self) -> str:
        """A fresh message id, planned before the claim so the ledger holds it even if the run dies."""

    def message(
        self, notifications: Sequence[Notification], message_id: str | None, *, digest: bool
    ) -> OutgoingMessage:
        """The message for one notification, or the `digest` of several; UnsendableNotification if it must not go."""

    def preview(self, message: OutgoingMessage) -> str:
        """What the reader saw of `message`, personal data masked: for the run's metadata."""


class ThreadedTransport(ABC, Generic[Message]):
    """Sends each message on one of `workers` threads, in the order given when there is one.

    No thread waits for the results: the sending thread reports each one itself, which in a
    long run saves a thread wake-up, and a turn of the GIL, per message.
    """

    def __init__(self, workers: int, thread_name_prefix: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name_prefix)
        self._stopped = threading.Event()

    @abstractmethod
    def _send_one(self, message: Message) -> SendResult:
        """Hand one message over (or not, once stopped); never raises for a refusal."""

    @abstractmethod
    def check(self) -> None: ...

    def stop(self) -> None:
        self._stopped.set()

    def send_each(self, messages: Sequence[Message], on_result: ResultCallback) -> None:
        for index, message in enumerate(messages):
            self._pool.submit(self._send_and_report, index, message, on_result)

    def _send_and_report(self, index: int, message: Message, on_result: ResultCallback) -> None:
        try:
            result = self._send_one(message)
        except Exception as exc:  # a bug here must not leave the message without a result
            logger.exception("sending %s failed unexpectedly", message.key)
            result = SendResult(message.key, "failed", f"not sent: {type(exc).__name__}: {printable(exc, 200)}")
        on_result(index, result)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class RateLimiter:
    """At most `per_second` messages in any one-second window, as the mail server counts them.

    A send may start only while fewer than the allowed number are in flight or finished
    within the window. Every message arrives at the server after it starts and before it
    finishes, so no window at the server can hold more, whatever threads or the GIL do.
    `stop()` wakes every waiting send at once: a slow pace never delays a Terminate.
    """

    def __init__(self, per_second: float) -> None:
        self._permits = max(1, int(per_second))
        self._window = self._permits / per_second
        self._finished: deque[float] = deque()
        self._in_flight = 0
        self._stopped = False
        self._changed = threading.Condition()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Waits for a permit: True once granted, False (nothing to send) once stopped."""
        with self._changed:
            while True:
                if self._stopped:
                    break
                now = time.monotonic()
                while self._finished and self._finished[0] <= now - self._window:
                    self._finished.popleft()
                if self._in_flight + len(self._finished) < self._permits:
                    self._in_flight += 1
                    break
                self._changed.wait(self._finished[0] + self._window - now if self._finished else None)
        if self._stopped:
            yield False
            return
        try:
            yield True
        finally:
            with self._changed:
                self._in_flight -= 1
                self._finished.append(time.monotonic())
                self._changed.notify_all()
