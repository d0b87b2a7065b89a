"""The one delivery path for every notification kind and channel: claim, send, record (docs/services.md, "The ledger").

Notifications stream through in batches of `batch_size` (default 50). Each batch passes
the policy steps (opt-outs, digests), is claimed with one request, and only what came back
ours is composed and sent; outcomes are recorded as the batch's results come in. While one
batch is with the transport, the next is claimed, composed and queued behind it, and the
one before is recorded: at most two batches are claimed and not yet recorded at any
moment, all a hard crash (`kill -9`) can leave `claimed`.

Nothing twice, whatever the source sends: a key repeated inside a batch is sent once
(`repeated_in_source`); a key repeated in a later batch comes back `duplicate`.

Nothing lost silently: the ledger's rules (`ledger.session`) say what each result is
recorded as. When the run stops, by an interrupt or an error, sending stops at once, and
every claimed notification is recorded: `sent` if it was handed over, else `released` so
a later run sends it. What the ledger cannot take (it is down) is kept as the `journal`,
which the next attempt records first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from cron_pipelines.batching import chunked
from cron_pipelines.clients.mongo_service import MongoServiceClient
from cron_pipelines.delivery.batch import Batch
from cron_pipelines.delivery.channels.base import Channel, Transport, UnsendableNotification
from cron_pipelines.delivery.ledger.journal import Journal
from cron_pipelines.delivery.ledger.session import DEFAULT_MAX_ATTEMPTS, LedgerSession, RunInfo, gave_up
from cron_pipelines.delivery.policies import Decisions, PolicyStep, decide_all
from cron_pipelines.delivery.policies.digests import MAX_DIGEST_ITEMS, DigestReaders
from cron_pipelines.delivery.policies.preferences import OptOuts, PreferenceBook
from cron_pipelines.delivery.runtime import StopRequested, collector_spared, interrupts_deferred
from cron_pipelines.delivery.sending import Dispatcher
from cron_pipelines.delivery.stats import DeliveryStats, Progress, delivery_metadata
from cron_pipelines.models.notification import Notification
from cron_pipelines.models.payloads import PLANNED_MESSAGE_ID, ClaimResult
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines.safe_text import printable

logger = logging.getLogger("cron_pipelines.delivery")

DEFAULT_BATCH_SIZE = 50
MAX_BATCH_SIZE = 500  # the contract's batch limit
DEFAULT_RECORD_INTERVAL_SECONDS = 1.0

# Decides, after the claim, whether each owned notification is still to be sent:
# None to send it, or the reason it is recorded `skipped`. Used where a service
# write must happen between the claim and the send (deactivations, decisions).
Gate = Callable[[Sequence[tuple[Notification, ClaimResult]]], Sequence[str | None]]
Item = Notification | InvalidRecord | tuple[Notification, ...]
# What a failure of each channel's receiving end is called in messages.
SERVERS = {"email": "mail server", "webhook": "webhook server"}


class NotificationPipeline:
    def __init__(
        self,
        *,
        ledger: MongoServiceClient,
        channel: Channel,
        transport: Transport,
        run: RunInfo,
        stats: DeliveryStats | None = None,
        log: logging.Logger | logging.LoggerAdapter = logger,
        batch_size: int = DEFAULT_BATCH_SIZE,
        record_interval: float = DEFAULT_RECORD_INTERVAL_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        inherited_tokens: dict[str, str] | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE}")
        self.stats = stats or DeliveryStats()
        self._channel = channel
        self._log = log
        self._batch_size = batch_size
        self._record_interval = record_interval
        self._max_attempts = max_attempts
        self.session = LedgerSession(
            ledger,
            run,
            self.stats,
            channel=channel.name,
            batch_size=batch_size,
            log=log,
            inherited_tokens={} if inherited_tokens is None else inherited_tokens,
        )
        self._sending = Dispatcher(transport, self.session, self.stats, log, SERVERS.get(channel.name, channel.name))
        book = PreferenceBook(ledger)
        self._digests = DigestReaders(book, lambda n: self.stats.count("repeated_in_source", n.kind, n.key))
        # In this order: an opt-out wins over a digest.
        self._policies: list[PolicyStep] = [OptOuts(book), self._digests]
        self._stop_requested = threading.Event()
        self._progress = Progress(self.stats, log)

    @property
    def journal(self) -> Journal:
        return self.session.journal

    @property
    def batch_size(self) -> int:
        """Notifications claimed per ledger request."""
        return self._batch_size

    def request_stop(self) -> None:
        """From any thread: hand nothing more to the server, and stop as an interrupt would."""
        self._sending.transport.stop()
        self._stop_requested.set()

    def deliver(self, items: Iterable[Notification | InvalidRecord], *, gate: Gate | None = None) -> None:
        """Deliver a stream of notifications batch by batch; InvalidRecords are counted, not sent."""
        self._deliver(items, gate, None)

    def deliver_chunk(
        self, items: Sequence[Notification | InvalidRecord], *, gate: Gate | None = None
    ) -> dict[str, ClaimResult]:
        """Deliver these notifications now; each key's claim result, for rules that depend on it."""
        claims: dict[str, ClaimResult] = {}
        self._deliver(items, gate, claims)
        return claims

    def metadata(self) -> dict[str, Any]:
        sample = self._sending.sample
        preview = self._channel.preview(sample) if sample is not None else None
        return delivery_metadata(self.stats, left_claimed=self.session.left_claimed, sample=preview)

    def _deliver(
        self, items: Iterable[Notification | InvalidRecord], gate: Gate | None, claims: dict[str, ClaimResult] | None
    ) -> None:
        earlier: Batch | None = None  # with the transport
        later: Batch | None = None  # claimed meanwhile, queued behind it
        with collector_spared():
            try:
                for chunk in self._chunks(items):
                    if self._stop_requested.is_set():
                        raise StopRequested("the run is being terminated")
                    later = Batch()
                    self._claim_and_compose(chunk, gate, later)
                    if claims is not None:
                        claims.update(later.claim_results)
                    with interrupts_deferred(redeliver=True):
                        self._sending.start(later)
                    if earlier is not None:
                        self._finish(earlier)
                    earlier, later = later, None
                if earlier is not None:
                    self._finish(earlier)
                    earlier = None
                if self._stop_requested.is_set():
                    raise StopRequested("the run is being terminated")
            except BaseException as exc:
                with interrupts_deferred(redeliver=False):
                    # An interrupt stops sending at once; after an error the batch on its way may finish.
                    interrupted = not isinstance(exc, Exception)
                    because = "the run was stopped" if interrupted else printable(f"{type(exc).__name__}: {exc}", 300)
                    self._stop([earlier, later], interrupted=interrupted, because=because)
                raise
            finally:
                self._digests.close()

    def _chunks(self, items: Iterable[Notification | InvalidRecord]) -> Iterator[Sequence[Item]]:
        """The stream in batches, then the digests that waited for it, packed to about `batch_size` keys.

        A digest is never split over two claims: one larger than `batch_size` (at most
        MAX_DIGEST_ITEMS, within the contract's 500) is a batch of its own.
        """
        yield from chunked(items, self._batch_size)
        chunk: list[tuple[Notification, ...]] = []
        keys = 0
        for digest in self._digests.digests(MAX_DIGEST_ITEMS):
            if chunk and keys + len(digest) > self._batch_size:
                yield chunk
                chunk, keys = [], 0
            chunk.append(digest)
            keys += len(digest)
        if chunk:
            yield chunk

    # -- a batch's life: decide and claim, compose, start (send), finish (record) ---------

    def _claim_and_compose(self, items: Sequence[Item], gate: Gate | None, batch: Batch) -> None:
        claimable = self.session.claims_for(items, batch, self._channel.new_message_id)
        # A digest read back from the spill was decided when it was held.
        decisions = decide_all(self._policies, [n for n, _ in claimable if n.key not in batch.digest_of])
        claimable = [(n, claim) for n, claim in claimable if n.key not in decisions.holds]
        if not claimable:
            return
        # The server must take the sender before anything is claimed: a refused login or an
        # unreachable relay fails the step with nothing claimed, so no attempt is spent.
        self._sending.transport.check()
        self.session.claim(claimable, batch)
        # If the gate's service write fails, nothing of this batch is sent: its claims are recorded
        # `released` as the step stops, and a retry or later run claims them and writes again.
        reasons = self._skip_reasons(batch.owned, gate, decisions)
        # A digest's keys share the Message-ID planned for them; a key owned through an earlier
        # attempt's lost claim holds that attempt's. Each planned id is its own message, so every
        # ledger record names the Message-ID of the message that carried it.
        digests: dict[tuple[int, object], list[tuple[Notification, ClaimResult]]] = {}
        for (notification, claim), reason in zip(batch.owned, reasons, strict=True):
            if reason is not None:
                self._skip(notification, reason, batch)
            elif (digest := batch.digest_of.get(notification.key)) is not None:
                planned = claim.record.metadata.get(PLANNED_MESSAGE_ID)
                digests.setdefault((digest, planned), []).append((notification, claim))
            else:
                self._compose([(notification, claim)], batch, digest=False)
        for owed in digests.values():  # a digest lists only what this run owns and owes
            self._compose(owed, batch, digest=True)

    def _skip_reasons(
        self, owned: Sequence[tuple[Notification, ClaimResult]], gate: Gate | None, decisions: Decisions
    ) -> list[str | None]:
        reasons: list[str | None] = []
        for notification, claim in owned:
            reason = notification.skip_reason or gave_up(claim, self._max_attempts)
            if reason is None and (skip := decisions.skips.get(notification.key)) is not None:
                reason = skip.reason
                if skip.count is not None:
                    self.stats.count(skip.count, notification.kind, notification.key)
            reasons.append(reason)
        gated = [index for index, reason in enumerate(reasons) if reason is None]
        if gate is not None and gated:
            verdicts = gate([owned[index] for index in gated])
            for index, verdict in zip(gated, verdicts, strict=True):
                reasons[index] = verdict
        return reasons

    def _skip(self, notification: Notification, reason: str, batch: Batch) -> None:
        batch.decide(self.session.outcome(notification.key, "skipped", error=reason))
        self.stats.count_skip(notification.kind, notification.key, reason)

    def _compose(self, owned: Sequence[tuple[Notification, ClaimResult]], batch: Batch, *, digest: bool) -> None:
        """The message for one notification, or the digest of several; a refusal decides every one of them."""
        notifications = tuple(notification for notification, _ in owned)
        planned = owned[0][1].record.metadata.get(PLANNED_MESSAGE_ID)
        try:
            message = self._channel.message(notifications, planned if isinstance(planned, str) else None, digest=digest)
        except UnsendableNotification as exc:
            for notification in notifications:
                self._skip(notification, str(exc), batch)
        except Exception as exc:  # a template bug must not strand the claims: `failed`, tried again up to the cap
            error = printable(f"could not render: {type(exc).__name__}: {exc}", 500)
            for notification in notifications:
                batch.decide(self.session.outcome(notification.key, "failed", error=error))
                self.stats.count("failed", notification.kind, notification.key)
            self._log.error("%s %s", notifications[0].key, error)
        else:
            batch.messages.append((notifications, message, digest))

    def _finish(self, batch: Batch) -> None:
        """Wait for the batch's results, recording what has arrived every `record_interval`, then the rest."""
        while not batch.finished.wait(self._record_interval):
            self._record_rest(batch)
            if self._stop_requested.is_set():
                raise StopRequested("the run is being terminated")
        if batch.reporting_error is not None:
            raise RuntimeError("a sending result could not be recorded") from batch.reporting_error
        self._record_rest(batch)
        if self._sending.unavailable:  # the server failed: the step fails, what it did not take released
            raise self._sending.server_failure()

    def _record_rest(self, batch: Batch) -> None:
        outcomes = batch.outcomes[batch.recorded :]
        if outcomes:
            self.session.record(outcomes)
            batch.recorded += len(outcomes)
        self._progress.log()

    def _stop(self, batches: Sequence[Batch | None], *, interrupted: bool, because: str) -> None:
        """After an interrupt or error: record what happened to every claimed notification.

        After an interrupt nothing more is handed over: what was not comes back `stopped`, and
        everything claimed and never handed over is recorded `released`, so a later run sends
        it without counting an attempt. What the ledger cannot take now goes to the journal.
        """
        if interrupted:
            self._sending.transport.stop()
            self._log.warning(
                "interrupted: no message is handed to the mail server from now on; "
                "recording what happened to every claimed notification"
            )
        for batch in batches:
            if batch is not None:
                if batch.started:
                    batch.finished.wait()
                self._sending.not_handed_over += self.session.abandon(batch, because)
        self.session.flush_journal(quietly=True)
        self.session.settle_unanswered(because)
        if self._sending.not_handed_over:
            self._log.warning(
                "stopped: %d claimed notification(s) not handed to the mail server, recorded `released` for a later run",
                self._sending.not_handed_over,
            )
        if self._digests.unread:
            self._log.warning(
                "%d digest notification(s) were waiting for their digest and were never claimed: "
                "none of them was sent, and a later run sends them",
                self._digests.unread,
            )
