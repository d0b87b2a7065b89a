"""The one delivery path for every notification kind: claim, send, record (contract §4).

Notifications stream through in chunks of at most 500: each chunk is claimed in the
ledger with one request, only what came back `claimed` is composed and sent, and
every outcome is recorded with one more request. Memory holds one chunk at a time.

Exactly once: a `duplicate` is never sent; a message the server refused is recorded
`failed` (a later run claims it again); when the mail server is unreachable, the rest
of the chunk is recorded `failed` and the step fails, so a retry sends each remaining
notification once. A crash between claim and outcome leaves the record `claimed`:
never resent automatically, reported by the maintenance job.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cron_pipelines.clients.http import MAX_BATCH_ITEMS, RejectedRecord, RejectedTally, chunked
from cron_pipelines.clients.models import ClaimResult, NotificationClaim, NotificationOutcome, format_instant
from cron_pipelines.clients.mongo_service import MongoServiceClient
from cron_pipelines.notifications.messages import MessageComposer, Notification, OutgoingMessage, UnsendableNotification
from cron_pipelines.notifications.transports import MailServerUnavailable, MailTransport, SendResult

logger = logging.getLogger("cron_pipelines.notifications")

OUTCOMES = ("claimed", "duplicate", "sent", "failed", "skipped", "rejected")
PROGRESS_LOG_INTERVAL_SECONDS = 10.0

# Decides, after the claim, whether each owned notification is still to be sent:
# None to send it, or the reason it is recorded `skipped`. Used where a service
# write must happen between the claim and the send (deactivations, decisions).
Gate = Callable[[Sequence[tuple[Notification, ClaimResult]]], Sequence[str | None]]


@dataclass(frozen=True)
class RunInfo:
    """Where notifications come from, written into every ledger record for the audit trail."""

    run_id: str
    job_name: str
    partition_key: str | None


@dataclass
class DeliveryStats:
    """Counts and bounded samples of one run's deliveries, for run metadata."""

    sample_size: int = 10
    counts: Counter[str] = field(default_factory=Counter)
    counts_by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    skip_reasons: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    rejected: RejectedTally = field(default_factory=RejectedTally)

    def count(self, outcome: str, kind: str, key: str) -> None:
        self.counts[outcome] += 1
        self.counts_by_kind.setdefault(kind, Counter())[outcome] += 1
        sample = self.samples.setdefault(outcome, [])
        if len(sample) < self.sample_size:
            sample.append(key)

    def count_skip(self, kind: str, key: str, reason: str) -> None:
        self.count("skipped", kind, key)
        # Reasons are short, fixed phrases plus field names; cap distinct ones all the same.
        if reason in self.skip_reasons or len(self.skip_reasons) < 50:
            self.skip_reasons[reason] += 1

    def count_rejected(self, record: RejectedRecord) -> None:
        self.counts["rejected"] += 1
        self.rejected.add(record)


@dataclass
class _Prepared:
    """A claimed chunk: its claim results, the outcomes known already (skips), the composed messages."""

    notifications: list[Notification]
    claim_results: list[ClaimResult] = field(default_factory=list)
    outcomes: list[NotificationOutcome] = field(default_factory=list)
    messages: list[tuple[Notification, OutgoingMessage]] = field(default_factory=list)


@dataclass
class _InFlight:
    prepared: _Prepared
    sending: Future[list[SendResult]] | None  # None: abandoned, not handed to the mail server
    not_sent_because: str = "the mail server was unavailable"


class NotificationPipeline:
    def __init__(
        self,
        *,
        ledger: MongoServiceClient,
        composer: MessageComposer,
        transport: MailTransport,
        run: RunInfo,
        stats: DeliveryStats | None = None,
        log: logging.Logger | logging.LoggerAdapter = logger,
    ) -> None:
        self._ledger = ledger
        self._composer = composer
        self._transport = transport
        self._run = run
        self._log = log
        self.stats = stats or DeliveryStats()
        self._last_progress_log = time.monotonic()
        self._progress_interval = PROGRESS_LOG_INTERVAL_SECONDS
        self._claim_token = ""
        self._last_unavailable_error: str | None = None
        self._unavailable = 0

    def deliver(self, items: Iterable[Notification | RejectedRecord], *, gate: Gate | None = None) -> None:
        """Deliver a stream of notifications chunk by chunk; RejectedRecords are counted, not sent.

        Pipelined: while one chunk's messages are on their way to the mail server, the
        next chunk is claimed and composed, so the ledger, the renderer and the mail
        server work at the same time. At most two chunks are in memory.
        """
        in_flight: _InFlight | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="notification-send") as sender:
            try:
                for chunk in chunked(items, MAX_BATCH_ITEMS):
                    prepared = self._prepare_chunk(chunk, gate)
                    if in_flight is not None:
                        finishing, in_flight = in_flight, None
                        try:
                            self._complete(finishing)
                        except MailServerUnavailable:
                            self._abandon(prepared, "the mail server was unavailable")
                            raise self._server_unavailable() from None
                        except Exception as exc:  # e.g. the ledger failed to record the outcomes
                            self._abandon(prepared, f"the run failed: {type(exc).__name__}: {exc}"[:400])
                            raise
                    in_flight = self._start(prepared, sender)
            finally:
                # Whatever failed meanwhile, the chunk handed to the mail server gets its outcomes.
                if in_flight is not None:
                    self._complete(in_flight)

    def deliver_chunk(
        self, items: Sequence[Notification | RejectedRecord], *, gate: Gate | None = None
    ) -> list[tuple[Notification, ClaimResult]]:
        """Claim, send and record one chunk (≤ 500); each notification with its claim result."""
        prepared = self._prepare_chunk(items, gate)
        self._complete(self._start(prepared, None))
        return list(zip(prepared.notifications, prepared.claim_results))

    # -- a chunk's life: prepare (claim, compose), start (send), complete (record) ------

    def _prepare_chunk(self, items: Sequence[Notification | RejectedRecord], gate: Gate | None) -> "_Prepared":
        notifications: list[Notification] = []
        for item in items:
            if isinstance(item, RejectedRecord):
                self.stats.count_rejected(item)
            else:
                notifications.append(item)
        prepared = _Prepared(notifications)
        if not notifications:
            return prepared
        prepared.claim_results = self._claim(notifications)
        owned = []
        for notification, result in zip(notifications, prepared.claim_results, strict=True):
            if self._owns(result):
                owned.append((notification, result))
                self.stats.count("claimed", notification.kind, notification.key)
            else:
                self.stats.count("duplicate", notification.kind, notification.key)
        try:
            reasons = self._skip_reasons(owned, gate)
        except Exception as exc:
            # The gate's service write failed: nothing of this chunk is sent. Recorded `failed`,
            # the notifications are claimed again, and the write retried, by a retry or later run.
            error = f"not sent: {type(exc).__name__}: {exc}"[:500]
            failed = [self._outcome(notification, "failed", error=error) for notification, _ in owned]
            for notification, _ in owned:
                self.stats.count("failed", notification.kind, notification.key)
            with contextlib.suppress(Exception):  # if the ledger is down too, the claims stay `claimed`
                self._record(failed)
            raise
        for (notification, _), reason in zip(owned, reasons):
            self._prepare(notification, reason, prepared.outcomes, prepared.messages)
        return prepared

    def _start(self, prepared: "_Prepared", sender: ThreadPoolExecutor | None) -> "_InFlight":
        """Hand the messages to the transport: in the background with `sender`, else now."""
        messages = [message for _, message in prepared.messages]
        if sender is not None:
            return _InFlight(prepared, sender.submit(self._transport.send_batch, messages))
        sent: Future[list[SendResult]] = Future()
        sent.set_result(self._transport.send_batch(messages) if messages else [])
        return _InFlight(prepared, sent)

    def _complete(self, in_flight: "_InFlight") -> None:
        """Record the chunk's outcomes; MailServerUnavailable once they are recorded, if the server was gone."""
        prepared = in_flight.prepared
        if in_flight.sending is None:
            results = [SendResult(message.key, "unavailable", f"not sent: {in_flight.not_sent_because}")
                       for _, message in prepared.messages]
        else:
            results = in_flight.sending.result()
        self._unavailable += self._outcomes_of_sending(prepared, results)
        self._record(prepared.outcomes)
        self._log_progress()
        if self._unavailable:
            raise self._server_unavailable()

    def _abandon(self, prepared: "_Prepared", because: str) -> None:
        """A claimed chunk that will not be sent now: record it `failed`, so a later run sends it.

        If even that fails (the ledger is down), its records stay `claimed`: never resent
        automatically, and reported by the maintenance job.
        """
        with contextlib.suppress(Exception):
            self._complete(_InFlight(prepared, None, because))

    def _server_unavailable(self) -> MailServerUnavailable:
        return MailServerUnavailable(
            f"{self._unavailable} notification(s) could not be sent and were recorded `failed` "
            f"for a later run: {self._last_unavailable_error}"
        )

    # -- steps -----------------------------------------------------------------

    def _claim(self, notifications: Sequence[Notification]) -> list[ClaimResult]:
        # A token per chunk, reused when the HTTP request is retried: a `duplicate` that
        # carries it was claimed by this very request, whose first answer was lost.
        self._claim_token = uuid.uuid4().hex
        claims = [
            NotificationClaim(
                idempotency_key=notification.key,
                kind=notification.kind,
                user_id=notification.user_id,
                recipient=notification.email,
                run_id=self._run.run_id,
                job_name=self._run.job_name,
                partition_key=self._run.partition_key,
                metadata={**notification.metadata, "claim_token": self._claim_token},
            )
            for notification in notifications
        ]
        return self._ledger.claim_notifications(claims)

    def _owns(self, result: ClaimResult) -> bool:
        return result.outcome == "claimed" or (
            result.record.status == "claimed" and result.record.metadata.get("claim_token") == self._claim_token
        )

    def _skip_reasons(
        self, owned: Sequence[tuple[Notification, ClaimResult]], gate: Gate | None
    ) -> list[str | None]:
        reasons: list[str | None] = [notification.skip_reason for notification, _ in owned]
        gated = [index for index, reason in enumerate(reasons) if reason is None]
        if gate is not None and gated:
            verdicts = gate([owned[index] for index in gated])
            for index, verdict in zip(gated, verdicts, strict=True):
                reasons[index] = verdict
        return reasons

    def _prepare(
        self,
        notification: Notification,
        skip_reason: str | None,
        outcomes: list[NotificationOutcome],
        messages: list[tuple[Notification, OutgoingMessage]],
    ) -> None:
        if skip_reason is not None:
            outcomes.append(self._outcome(notification, "skipped", error=skip_reason))
            self.stats.count_skip(notification.kind, notification.key, skip_reason)
            return
        try:
            messages.append((notification, self._composer.compose(notification)))
        except UnsendableNotification as exc:
            outcomes.append(self._outcome(notification, "skipped", error=str(exc)))
            self.stats.count_skip(notification.kind, notification.key, str(exc))
        except Exception as exc:  # a template bug must not strand the claim: record it, retry later
            error = f"could not render: {type(exc).__name__}: {exc}"[:500]
            outcomes.append(self._outcome(notification, "failed", error=error))
            self.stats.count("failed", notification.kind, notification.key)
            self._log.error("%s %s", notification.key, error)

    def _outcomes_of_sending(self, prepared: "_Prepared", results: Sequence[SendResult]) -> int:
        """Turn send results into outcomes and counts; how many found the server unavailable."""
        unavailable = 0
        for (notification, message), result in zip(prepared.messages, results, strict=True):
            if result.status == "sent":
                prepared.outcomes.append(self._outcome(notification, "sent", message_id=message.message_id))
                self.stats.count("sent", notification.kind, notification.key)
                continue
            if result.status == "unavailable":
                unavailable += 1
                self._last_unavailable_error = self._last_unavailable_error or result.error
            prepared.outcomes.append(self._outcome(notification, "failed", error=result.error))
            self.stats.count("failed", notification.kind, notification.key)
        return unavailable

    def _record(self, outcomes: list[NotificationOutcome]) -> None:
        if not outcomes:
            return
        missing = [result.idempotency_key for result in self._ledger.record_outcomes(outcomes) if result.outcome == "not_found"]
        if missing:
            # Only possible if the ledger lost records between claim and outcome.
            self._log.error("ledger had no record for %d outcome(s), e.g. %s", len(missing), missing[:5])

    def _outcome(
        self, notification: Notification, status: str, *, message_id: str | None = None, error: str | None = None
    ) -> NotificationOutcome:
        return NotificationOutcome(
            idempotency_key=notification.key,
            status=status,  # type: ignore[arg-type]
            message_id=message_id,
            error=error,
            at=format_instant(datetime.now(timezone.utc)),
        )

    def _log_progress(self) -> None:
        # After 10 s, 30 s, 70 s, 150 s, ... (the interval doubles): a long run shows
        # progress, and the event log does not grow with the number of notifications.
        now = time.monotonic()
        if now - self._last_progress_log >= self._progress_interval:
            self._last_progress_log = now
            self._progress_interval *= 2
            self._log.info("progress: %s", dict(self.stats.counts))

    def metadata(self) -> dict[str, Any]:
        """Counts (numeric, plotted by the UI) and bounded samples of keys and reasons."""
        metadata: dict[str, Any] = {outcome: self.stats.counts.get(outcome, 0) for outcome in OUTCOMES}
        if len(self.stats.counts_by_kind) > 1:
            for kind, counts in sorted(self.stats.counts_by_kind.items()):
                for outcome in OUTCOMES:
                    if counts.get(outcome):
                        metadata[f"{kind}.{outcome}"] = counts[outcome]
        for outcome, keys in sorted(self.stats.samples.items()):
            metadata[f"sample_{outcome}_keys"] = list(keys)
        if self.stats.skip_reasons:
            metadata["skip_reasons"] = dict(self.stats.skip_reasons.most_common(10))
        if self.stats.rejected.sample:
            metadata["rejected_records_sample"] = list(self.stats.rejected.sample)
        return metadata
