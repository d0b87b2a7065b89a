"""A batch's messages handed to its channel's transport, and each result turned into the ledger's outcome.

The transport's threads report each message's result as it is known; this turns it into
the outcome of every notification the message carries (several for a digest), counts it,
and lets the batch finish when the last one is in. The ledger's rules say which result is
which outcome (`ledger.session.STATUS_OF_SENDING`).
"""

from __future__ import annotations

import logging
import threading

from cron_pipelines.delivery.batch import Batch
from cron_pipelines.delivery.channels.base import ChannelUnavailable, OutgoingMessage, SendResult, Transport
from cron_pipelines.delivery.ledger.session import STATUS_OF_SENDING, LedgerSession
from cron_pipelines.delivery.stats import DeliveryStats
from cron_pipelines.models.notification import Notification

REFUSED = "refused by the mail server"


class Dispatcher:
    def __init__(
        self,
        transport: Transport,
        session: LedgerSession,
        stats: DeliveryStats,
        log: logging.Logger | logging.LoggerAdapter,
        server: str,
    ) -> None:
        self.transport = transport
        self._server = server  # what a failure names: "the mail server"
        self._session = session
        self._stats = stats
        self._log = log
        self._lock = threading.Lock()  # the sending threads turn results into outcomes one at a time
        self.unavailable = 0  # messages the server did not take because it failed
        self._unavailable_error: str | None = None
        self.not_handed_over = 0  # claimed notifications a stop or an error kept from the server
        # The first message sent, shown (its reader's view) with the run's metadata.
        self.sample: OutgoingMessage | None = None

    def start(self, batch: Batch) -> None:
        """Hand the batch's messages to the transport; its sending threads record each result on the batch."""
        batch.started = True
        if not batch.messages:
            batch.finished.set()
            return

        def on_result(index: int, result: SendResult) -> None:
            notifications, message, digest = batch.messages[index]
            with self._lock:
                try:
                    if result.outcome == "sent" and digest:
                        self._stats.count("digest_emails", message.kind, message.key)
                    for notification in notifications:
                        self._decide(batch, notification, message, result)
                except BaseException as exc:  # the batch still finishes; the main thread raises it
                    batch.reporting_error = batch.reporting_error or exc
                finally:
                    batch.reported += 1
                    if batch.reported == len(batch.messages):
                        batch.finished.set()

        self.transport.send_each([message for _, message, _ in batch.messages], on_result)

    def _decide(self, batch: Batch, notification: Notification, message: OutgoingMessage, result: SendResult) -> None:
        status = STATUS_OF_SENDING[result.outcome]
        if status is None:  # it may have arrived: at most once, left `claimed` for an operator
            self._session.unknown += 1
            self._stats.count("unknown", notification.kind, notification.key)
            self._log.error("%s (Message-ID %s): %s", notification.key, message.message_id, result.error)
            batch.decided.add(notification.key)
            return
        if status == "sent":
            self.sample = self.sample or message
            self._stats.count("sent", notification.kind, notification.key)
        elif status == "skipped":
            self._stats.count_skip(notification.kind, notification.key, result.error or REFUSED)
        else:
            self._stats.count(status, notification.kind, notification.key)
        if result.outcome == "unavailable":
            self.unavailable += 1
            self._unavailable_error = self._unavailable_error or result.error
        elif result.outcome == "stopped":
            self.not_handed_over += 1
        error = (result.error or REFUSED) if status == "skipped" else result.error
        message_id = message.message_id if status == "sent" else None
        batch.decide(self._session.outcome(notification.key, status, message_id=message_id, error=error))

    def server_failure(self) -> ChannelUnavailable:
        return ChannelUnavailable(
            f"the {self._server} failed, not the messages: {self._unavailable_error}. Every claimed notification "
            "it did not take is recorded `released`: a later run sends it without counting an attempt"
        )
