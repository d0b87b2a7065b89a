"""The one delivery path for every notification kind: claim, send, record (docs/services.md, "The ledger").

Notifications stream through in batches of `batch_size` (default 100). Each batch is
claimed with one request shortly before it is sent; only what came back `claimed` is
composed and sent; outcomes are recorded as they come in, every `batch_size` messages
or every `record_interval` seconds. While one batch is on its way to the mail server,
the one before is recorded and the next is claimed and composed, so the mail server
never waits for the ledger. At most those three batches are claimed and not yet
recorded at any moment: that is all a hard crash (`kill -9`) can leave `claimed`.

Nothing twice, whatever the source sends: a key repeated inside a batch is sent once
(`repeated_in_source`); a key repeated in a later batch comes back `duplicate`. A
`duplicate` is owned only when this very claim request was retried after its answer
was lost, or it carries the token of an earlier attempt's unanswered claim.

Preferences (docs/services.md, "Recipients"): before a batch is claimed, one lookup
asks for the preferences of its optional notifications' users. An opted-out one is
claimed and recorded `skipped` (`opted_out`). One whose user reads digests is not
claimed yet: it waits in a `DigestSpill` until the stream is done, then each reader's
waiting notifications of a kind are claimed together and, what is owned of them, sent
as one email whose Message-ID every one of them is recorded with.

Nothing lost silently: a refused message is `failed` (4xx, retried by later runs up
to `max_attempts`) or `skipped` (a 5xx bounce: never again). The mail server is asked
to take the sender before anything is claimed; when it fails later (not a message),
what it did not take is `released`: a later run claims it again without counting an
attempt. When the run stops, by an interrupt or an error, sending stops at once, and
every claimed notification is recorded: `sent` if it was handed to the mail server,
else `released` so a later run sends it. A session lost after the end of data leaves
its message `claimed` (it may have arrived: at most once, reported). What the ledger
cannot take (it is down) is kept as the `journal`, which the next attempt records first.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from cron_pipelines.clients.http import chunked
from cron_pipelines.clients.mongo_service import MongoServiceClient
from cron_pipelines.delivery.channels.base import (
    ChannelUnavailable,
    OutgoingMessage,
    SendResult,
    Transport,
    UnsendableNotification,
)
from cron_pipelines.delivery.channels.email.composer import MessageComposer
from cron_pipelines.delivery.channels.email.mime import preview_text
from cron_pipelines.delivery.policies.digests import MAX_DIGEST_ITEMS, DigestSpill
from cron_pipelines.models.notification import DIGEST_KINDS, Notification, is_optional
from cron_pipelines.models.payloads import (
    CLAIM_TOKEN,
    PLANNED_MESSAGE_ID,
    ClaimResult,
    NotificationClaim,
    NotificationOutcome,
    OutcomeStatus,
    format_instant,
)
from cron_pipelines.models.records import InvalidRecord, InvalidTally, describe_validation_error
from cron_pipelines.safe_text import as_markdown_block, printable

logger = logging.getLogger("cron_pipelines.delivery")

# The counts every notification asset reports (README, "Auditing"): claim outcomes, then ledger statuses.
COUNTS = (
    "claimed", "duplicate", "sent", "failed", "released", "skipped", "opted_out", "invalid", "repeated_in_source",
    "digest_emails", "unknown",
)  # fmt: skip
# Markdown of one email the run sent, as its reader saw it (addresses masked).
SAMPLE_EMAIL = "sample_email"
# The skip reason of an optional notification whose user opted out of its kind.
OPTED_OUT = "opted_out"
PROGRESS_LOG_INTERVAL_SECONDS = 10.0
DEFAULT_BATCH_SIZE = 50
MAX_BATCH_SIZE = 500  # the contract's batch limit
DEFAULT_RECORD_INTERVAL_SECONDS = 1.0
DEFAULT_MAX_ATTEMPTS = 5

# Decides, after the claim, whether each owned notification is still to be sent:
# None to send it, or the reason it is recorded `skipped`. Used where a service
# write must happen between the claim and the send (deactivations, decisions).
Gate = Callable[[Sequence[tuple[Notification, ClaimResult]]], Sequence[str | None]]


class StopRequested(KeyboardInterrupt):
    """The run is being terminated, and no signal told this process: a step on a Celery worker.

    An interrupt like SIGINT, raised where the pipeline waits: every delivery stops the same way.
    """


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
    invalid: InvalidTally = field(default_factory=InvalidTally)

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, outcome: str, kind: str, key: str) -> None:
        with self._lock:  # the sending threads count sends while the main thread counts claims
            self._count(outcome, kind, key)

    def _count(self, outcome: str, kind: str, key: str) -> None:
        self.counts[outcome] += 1
        self.counts_by_kind.setdefault(kind, Counter())[outcome] += 1
        sample = self.samples.setdefault(outcome, [])
        if len(sample) < self.sample_size:
            sample.append(key)

    def count_skip(self, kind: str, key: str, reason: str) -> None:
        # Reasons are short, fixed phrases plus field names; cap distinct ones all the same.
        reason = printable(reason, 200)
        with self._lock:
            self._count("skipped", kind, key)
            if reason in self.skip_reasons or len(self.skip_reasons) < 50:
                self.skip_reasons[reason] += 1

    def count_invalid(self, record: InvalidRecord) -> None:
        with self._lock:
            self.counts["invalid"] += 1
            self.invalid.add(record)


@dataclass
class Journal:
    """What an attempt owes the ledger and could not deliver to it (the ledger was down).

    `outcomes`: results not yet recorded (a `sent`, or a `failed` for a notification
    never handed to the mail server). `unanswered_claims`: key → token of claims sent
    without an answer; whatever they claimed was never sent.
    """

    outcomes: list[NotificationOutcome] = field(default_factory=list)
    unanswered_claims: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.outcomes) + len(self.unanswered_claims)

    def to_json(self) -> dict[str, Any]:
        return {
            "outcomes": [outcome.model_dump(mode="json") for outcome in self.outcomes],
            "unanswered_claims": dict(self.unanswered_claims),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Journal:
        return cls(
            outcomes=[NotificationOutcome.model_validate(item) for item in data.get("outcomes", [])],
            unanswered_claims={str(key): str(token) for key, token in dict(data.get("unanswered_claims", {})).items()},
        )


@dataclass
class _Batch:
    """A batch on its way: claims sent, what it owns, what is already decided, what it sends.

    Filled in place, so whoever stops the run finds every claim wherever an interrupt
    struck: `pending_claims` until the claim's answer is processed, then `owned`.
    """

    # One claim token per batch, reused when the claim request is retried: a `duplicate` that
    # carries it was claimed by this very request, whose first answer was lost.
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    pending_claims: dict[str, str] = field(default_factory=dict)  # key → token, answer not processed yet
    owned: list[tuple[Notification, ClaimResult]] = field(default_factory=list)
    claim_results: dict[str, ClaimResult] = field(default_factory=dict)
    # Each email with the notifications it carries (several for a digest).
    messages: list[tuple[tuple[Notification, ...], OutgoingMessage, bool]] = field(default_factory=list)
    digest_of: dict[str, int] = field(default_factory=dict)  # key → its digest in this batch
    # Outcomes in the order they became known. The sending threads append the sending's own;
    # the main thread only reads, and records them from `recorded` on.
    outcomes: list[NotificationOutcome] = field(default_factory=list)
    decided: set[str] = field(default_factory=set)  # keys with an outcome
    recorded: int = 0
    reported: int = 0  # messages whose result the transport has reported
    reporting_error: BaseException | None = None  # a result that could not be turned into outcomes
    finished: threading.Event = field(default_factory=threading.Event)
    started: bool = False

    def decide(self, outcome: NotificationOutcome) -> None:
        self.outcomes.append(outcome)
        self.decided.add(outcome.idempotency_key)


@contextlib.contextmanager
def _interrupts_deferred(*, redeliver: bool) -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, so bookkeeping is never half done.

    With `redeliver`, a signal that came meanwhile is raised again right after the block,
    where the run's state is consistent; otherwise (cleanup after a stop) it is only logged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        number: signal.signal(number, lambda signum, _frame: received.append(signum))
        for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received and redeliver:
            signal.raise_signal(received[0])
        elif received:
            logger.warning("interrupt received while recording outcomes; stopping once they are recorded")


# While delivering, the cyclic collector runs after this many new container objects instead of
# 700: a run makes a few dozen per message, nearly all freed by reference counting at once.
DELIVERY_GC_THRESHOLD = 10_000
_collector_lock = threading.Lock()
_deliveries_in_process = 0
_collector_thresholds: tuple[int, ...] = ()


@contextlib.contextmanager
def _collector_spared() -> Iterator[None]:
    """While notifications are delivered, the cyclic garbage collector runs rarely and on new objects only.

    A full collection walks every object that imports and Dagster made (over 200,000, about
    140 ms with the GIL held, every few seconds of a long run), though none of them becomes
    garbage meanwhile: `gc.freeze()` sets them aside. Young collections every 700 new objects
    added as much again. When the last delivery of the process ends, the objects are given
    back (`gc.unfreeze()`) and the thresholds restored, so nothing is kept for good.
    """
    global _deliveries_in_process, _collector_thresholds
    with _collector_lock:
        if not _deliveries_in_process:
            _collector_thresholds = gc.get_threshold()
            gc.set_threshold(DELIVERY_GC_THRESHOLD, *_collector_thresholds[1:])
        _deliveries_in_process += 1
        gc.freeze()
    try:
        yield
    finally:
        with _collector_lock:
            _deliveries_in_process -= 1
            if not _deliveries_in_process:
                gc.unfreeze()
                gc.set_threshold(*_collector_thresholds)


class NotificationPipeline:
    def __init__(
        self,
        *,
        ledger: MongoServiceClient,
        composer: MessageComposer,
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
        self._ledger = ledger
        self._composer = composer
        self._transport = transport
        self._run = run
        self._log = log
        self._batch_size = batch_size
        self._record_interval = record_interval
        self._max_attempts = max_attempts
        self.stats = stats or DeliveryStats()
        self.journal = Journal()
        # Tokens of an earlier attempt's unanswered claims: a `duplicate` carrying one is ours.
        # Shared by the pipelines of a step; a key leaves it once a claim of it is answered.
        self.inherited_tokens: dict[str, str] = {} if inherited_tokens is None else inherited_tokens
        self._last_progress_log = time.monotonic()
        self._progress_interval = PROGRESS_LOG_INTERVAL_SECONDS
        self._last_unavailable_error: str | None = None
        self._unavailable = 0
        self._stopped_sending = 0
        # Handed over when the session was lost, before the server's answer: left `claimed`.
        self._unknown = 0
        # The first message sent, shown (masked) with the run's metadata.
        self.sample_message: OutgoingMessage | None = None
        # Digest notifications waiting for the end of the stream (opened at the first one).
        self._spill: DigestSpill | None = None
        self._stop_requested = threading.Event()
        # The sending threads turn results into outcomes one at a time.
        self._results_lock = threading.Lock()

    # -- public ----------------------------------------------------------------------

    def record_journaled(self, outcomes: Sequence[NotificationOutcome]) -> None:
        """Record outcomes an earlier attempt could not; raises, keeping them in the journal, if the ledger still cannot."""
        self.journal.outcomes.extend(outcomes)
        self._flush_journal()

    def request_stop(self) -> None:
        """From any thread: hand nothing more to the mail server, and stop as an interrupt would."""
        self._transport.stop()
        self._stop_requested.set()

    def _raise_if_stop_requested(self) -> None:
        if self._stop_requested.is_set():
            raise StopRequested("the run is being terminated")

    def deliver(self, items: Iterable[Notification | InvalidRecord], *, gate: Gate | None = None) -> None:
        """Deliver a stream of notifications batch by batch; RejectedRecords are counted, not sent.

        While one batch is being sent, the next is claimed and composed, so the ledger,
        the renderer and the mail server work at the same time.
        """
        self._deliver(items, gate, None)

    def deliver_chunk(
        self, items: Sequence[Notification | InvalidRecord], *, gate: Gate | None = None
    ) -> dict[str, ClaimResult]:
        """Deliver these notifications now; each key's claim result, for rules that depend on it."""
        claims: dict[str, ClaimResult] = {}
        self._deliver(items, gate, claims)
        return claims

    def _deliver(
        self, items: Iterable[Notification | InvalidRecord], gate: Gate | None, claims: dict[str, ClaimResult] | None
    ) -> None:
        # At most two batches are claimed and not yet recorded: the one the mail server is on, and
        # the next, claimed meanwhile and queued behind it, so the server never waits for the ledger.
        earlier: _Batch | None = None
        later: _Batch | None = None
        with _collector_spared():
            try:
                for chunk in self._chunks(items):
                    self._raise_if_stop_requested()
                    later = _Batch()
                    self._claim_and_compose(chunk, gate, later)
                    if claims is not None:
                        claims.update(later.claim_results)
                    with _interrupts_deferred(redeliver=True):
                        self._start(later)
                    if earlier is not None:
                        self._finish(earlier)
                    earlier, later = later, None
                if earlier is not None:
                    self._finish(earlier)
                    earlier = None
                self._raise_if_stop_requested()
            except BaseException as exc:
                with _interrupts_deferred(redeliver=False):
                    # An interrupt stops sending at once; after an error the batch on its way may finish.
                    interrupted = not isinstance(exc, Exception)
                    because = "the run was stopped" if interrupted else printable(f"{type(exc).__name__}: {exc}", 300)
                    self._stop([earlier, later], interrupted=interrupted, because=because)
                    if self._spill is not None and self._spill.size > self._spill.read:
                        self._log.warning(
                            "%d digest notification(s) were waiting for their digest and were never claimed: "
                            "none of them was sent, and a later run sends them",
                            self._spill.size - self._spill.read,
                        )
                raise
            finally:
                self._close_spill()
        if self._unavailable:
            raise self._server_unavailable()

    def _chunks(
        self, items: Iterable[Notification | InvalidRecord]
    ) -> Iterator[Sequence[Notification | InvalidRecord | tuple[Notification, ...]]]:
        """The stream in batches, then the digests that waited for it, packed to about `batch_size` keys.

        A digest is never split over two claims: one larger than `batch_size` (at most
        MAX_DIGEST_ITEMS, within the contract's 500) is a batch of its own.
        """
        yield from chunked(items, self._batch_size)
        if self._spill is None:
            return
        chunk: list[tuple[Notification, ...]] = []
        keys = 0
        for digest in self._spill.digests(MAX_DIGEST_ITEMS):
            if chunk and keys + len(digest) > self._batch_size:
                yield chunk
                chunk, keys = [], 0
            chunk.append(digest)
            keys += len(digest)
        if chunk:
            yield chunk

    def _close_spill(self) -> None:
        if self._spill is None:
            return
        spill, self._spill = self._spill, None
        spill.close()

    def release_inherited(self) -> None:
        """Settle the unanswered claims of an earlier attempt that this attempt did not meet again.

        The service no longer lists their notifications, so nothing was sent: each one
        this run holds is recorded `failed` (a later run sends it if it is owed again).
        """
        leftover = dict(self.inherited_tokens)
        self.inherited_tokens.clear()
        self._release(leftover, "claimed by an attempt whose answer was lost, and no longer listed by the service")

    def _release(self, tokens: Mapping[str, str], because: str) -> None:
        """Claims sent without an answer: the ones that turn out to be this run's are recorded `released`.

        Claiming the key again with the same token tells: `duplicate` still `claimed` with
        that token is ours; `claimed` is ours now. Anything else belongs to someone else.
        """
        for chunk in chunked(sorted(tokens.items()), self._batch_size):
            claims = [
                NotificationClaim(
                    idempotency_key=key,
                    kind=key.split(":", 1)[0],
                    run_id=self._run.run_id,
                    job_name=self._run.job_name,
                    partition_key=self._run.partition_key,
                    metadata={CLAIM_TOKEN: token},
                )
                for key, token in chunk
            ]
            reply = self._ledger.claim_notifications(claims)
            released = [
                NotificationOutcome(
                    idempotency_key=key,
                    status="released",
                    error=f"not sent: {because}",
                    at=format_instant(datetime.now(UTC)),
                )
                for (key, token), result in zip(chunk, reply.results, strict=True)
                if self._owns(result, None, token)
            ]
            self._record(released)
            if released:
                self._log.warning("released %d claim(s) sent without an answer", len(released))

    @property
    def batch_size(self) -> int:
        """Notifications claimed per ledger request: callers that read in chunks read this many."""
        return self._batch_size

    @property
    def left_claimed(self) -> int:
        """Notifications this run claimed whose outcome the ledger does not have (yet), or never will from it."""
        return len(self.journal) + self._unknown

    def metadata(self) -> dict[str, Any]:
        """Counts (numeric, plotted by the UI) and bounded samples of keys and reasons."""
        metadata: dict[str, Any] = {outcome: self.stats.counts.get(outcome, 0) for outcome in COUNTS}
        metadata["left_claimed"] = self.left_claimed
        if len(self.stats.counts_by_kind) > 1:
            for kind, counts in sorted(self.stats.counts_by_kind.items()):
                for outcome in COUNTS:
                    if counts.get(outcome):
                        metadata[f"{kind}.{outcome}"] = counts[outcome]
        for outcome, keys in sorted(self.stats.samples.items()):
            metadata[f"sample_{outcome}_keys"] = list(keys)
        if self.stats.skip_reasons:
            metadata["skip_reasons"] = dict(self.stats.skip_reasons.most_common(10))
        if self.stats.invalid.sample:
            metadata["invalid_records_sample"] = list(self.stats.invalid.sample)
        if self.sample_message is not None:
            metadata[SAMPLE_EMAIL] = as_markdown_block(preview_text(self.sample_message))
        return metadata

    # -- a batch's life: claim and compose, start (send), finish (record) -----------------

    def _claim_and_compose(
        self,
        items: Sequence[Notification | InvalidRecord | tuple[Notification, ...]],
        gate: Gate | None,
        batch: _Batch,
    ) -> None:
        claimable = self._claimable(items, batch)
        claimable, opted_out = self._apply_preferences(claimable, batch)
        if not claimable:
            return
        self._claim(claimable, batch)
        # If the gate's service write fails, nothing of this batch is sent: its claims are recorded
        # `failed` as the step stops, and a retry or later run claims them and writes again.
        reasons = self._skip_reasons(batch.owned, gate, opted_out)
        # A digest's keys share the Message-ID planned for them; a key owned through an earlier
        # attempt's lost claim holds that attempt's. Each planned id is its own email, so every
        # ledger record names the Message-ID of the email that carried it.
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

    def _claimable(
        self, items: Sequence[Notification | InvalidRecord | tuple[Notification, ...]], batch: _Batch
    ) -> list[tuple[Notification, NotificationClaim]]:
        """The batch's notifications with their claims, each key once; the rest counted.

        Every email gets a Message-ID planned now; a digest's notifications share theirs.
        """
        seen: set[str] = set()
        claimable = []
        for index, item in enumerate(items):
            if isinstance(item, InvalidRecord):
                self.stats.count_invalid(item)
                continue
            planned_message_id = self._composer.new_message_id()
            for notification in item if isinstance(item, tuple) else (item,):
                if notification.key in seen:
                    self.stats.count("repeated_in_source", notification.kind, notification.key)
                    continue
                seen.add(notification.key)
                try:
                    claim = NotificationClaim(
                        idempotency_key=notification.key,
                        kind=notification.kind,
                        user_id=notification.user_id,
                        recipient=notification.email,
                        run_id=self._run.run_id,
                        job_name=self._run.job_name,
                        partition_key=self._run.partition_key,
                        metadata={
                            **notification.metadata,
                            PLANNED_MESSAGE_ID: planned_message_id,
                            CLAIM_TOKEN: batch.token,
                        },
                    )
                except ValidationError as exc:
                    # Not even a ledger record can be made of it (e.g. an absurd id in the key).
                    self.stats.count_invalid(
                        InvalidRecord(printable(notification.key, 80), describe_validation_error(exc), None)
                    )
                    continue
                if isinstance(item, tuple):
                    batch.digest_of[notification.key] = index
                claimable.append((notification, claim))
        return claimable

    def _apply_preferences(
        self, claimable: list[tuple[Notification, NotificationClaim]], batch: _Batch
    ) -> tuple[list[tuple[Notification, NotificationClaim]], set[str]]:
        """One lookup for the users of the batch's optional notifications (≤ 500, never for mandatory
        kinds): the keys to record `opted_out`, and the claimable rest once digest ones are set aside."""
        asked = [
            notification
            for notification, _ in claimable
            if notification.user_id is not None
            and notification.skip_reason is None
            and is_optional(notification.kind)
            and notification.key not in batch.digest_of  # read back from the spill: already decided
        ]
        if not asked:
            return claimable, set()
        preferences = self._ledger.lookup_preferences(sorted({str(notification.user_id) for notification in asked}))
        opted_out: set[str] = set()
        waiting: list[Notification] = []
        for notification in asked:
            preference = preferences.get(str(notification.user_id))
            if preference is None:
                continue
            if notification.kind in preference.opted_out:
                opted_out.add(notification.key)
            elif preference.digest and notification.kind in DIGEST_KINDS:
                waiting.append(notification)
        if not waiting:
            return claimable, opted_out
        if self._spill is None:
            self._spill = DigestSpill()
        for repeated in self._spill.add(waiting):
            self.stats.count("repeated_in_source", repeated.kind, repeated.key)
        waiting_keys = {notification.key for notification in waiting}
        return [(notification, claim) for notification, claim in claimable if notification.key not in waiting_keys], (
            opted_out
        )

    def _claim(self, claimable: list[tuple[Notification, NotificationClaim]], batch: _Batch) -> None:
        # The server must take the sender before anything is claimed: a refused login or an
        # unreachable relay fails the step with nothing claimed, so no attempt is spent.
        self._transport.check()
        token = batch.token
        claims = [claim for _, claim in claimable]
        # Until the answer is processed these count as claimed, unknown which: a stop resolves them.
        batch.pending_claims.update((claim.idempotency_key, token) for claim in claims)
        reply = self._ledger.claim_notifications(claims)
        for (notification, _), result in zip(claimable, reply.results, strict=True):
            batch.claim_results[notification.key] = result
            inherited = self.inherited_tokens.pop(notification.key, None)
            if self._owns(result, token if reply.attempts > 1 else None, inherited):
                batch.owned.append((notification, result))
                self.stats.count("claimed", notification.kind, notification.key)
            else:
                self.stats.count("duplicate", notification.kind, notification.key)
        batch.pending_claims.clear()

    def _owns(self, result: ClaimResult, retried_token: str | None, inherited_token: str | None) -> bool:
        """`claimed`, or a `duplicate` still `claimed` by a request of ours whose answer was lost."""
        if result.outcome == "claimed":
            return True
        record = result.record
        if record.status != "claimed" or record.run_id != self._run.run_id:
            return False
        token = record.metadata.get(CLAIM_TOKEN)
        return token is not None and token in (retried_token, inherited_token)

    def _skip_reasons(
        self, owned: Sequence[tuple[Notification, ClaimResult]], gate: Gate | None, opted_out: set[str]
    ) -> list[str | None]:
        reasons: list[str | None] = []
        for notification, claim in owned:
            if notification.skip_reason is not None:
                reasons.append(notification.skip_reason)
            elif claim.record.attempts > self._max_attempts:
                reasons.append(
                    f"not sent: gave up after {claim.record.attempts - 1} failed attempts "
                    f"(MAIL_MAX_ATTEMPTS={self._max_attempts})"
                )
            elif notification.key in opted_out:
                reasons.append(OPTED_OUT)
                self.stats.count(OPTED_OUT, notification.kind, notification.key)
            else:
                reasons.append(None)
        gated = [index for index, reason in enumerate(reasons) if reason is None]
        if gate is not None and gated:
            verdicts = gate([owned[index] for index in gated])
            for index, verdict in zip(gated, verdicts, strict=True):
                reasons[index] = verdict
        return reasons

    def _skip(self, notification: Notification, reason: str, batch: _Batch) -> None:
        batch.decide(self._outcome(notification, "skipped", error=reason))
        self.stats.count_skip(notification.kind, notification.key, reason)

    def _compose(self, owned: Sequence[tuple[Notification, ClaimResult]], batch: _Batch, *, digest: bool) -> None:
        """The email for one notification, or the digest of several; a refusal decides every one of them."""
        notifications = tuple(notification for notification, _ in owned)
        planned = owned[0][1].record.metadata.get(PLANNED_MESSAGE_ID)
        message_id = planned if isinstance(planned, str) else None
        try:
            if digest:
                message = self._composer.compose_digest(notifications, message_id)
            else:
                message = self._composer.compose(notifications[0], message_id)
        except UnsendableNotification as exc:
            for notification in notifications:
                self._skip(notification, str(exc), batch)
        except Exception as exc:  # a template bug must not strand the claims: `failed`, tried again up to the cap
            error = printable(f"could not render: {type(exc).__name__}: {exc}", 500)
            for notification in notifications:
                batch.decide(self._outcome(notification, "failed", error=error))
                self.stats.count("failed", notification.kind, notification.key)
            self._log.error("%s %s", notifications[0].key, error)
        else:
            batch.messages.append((notifications, message, digest))

    def _start(self, batch: _Batch) -> None:
        """Hand the batch's messages to the transport; its sending threads record each result on the batch."""
        batch.started = True
        if not batch.messages:
            batch.finished.set()
            return

        def on_result(index: int, result: SendResult) -> None:
            notifications, message, digest = batch.messages[index]
            with self._results_lock:
                try:
                    if result.outcome == "sent" and digest:
                        self.stats.count("digest_emails", message.kind, message.key)
                    for notification in notifications:
                        outcome = self._outcome_of_sending(notification, message, result)
                        if outcome is None:
                            batch.decided.add(notification.key)
                        else:
                            batch.decide(outcome)
                except BaseException as exc:  # the batch still finishes; the main thread raises it
                    batch.reporting_error = batch.reporting_error or exc
                finally:
                    batch.reported += 1
                    if batch.reported == len(batch.messages):
                        batch.finished.set()

        self._transport.send_each([message for _, message, _ in batch.messages], on_result)

    def _await(self, batch: _Batch) -> None:
        """Wait for the batch's results, recording what has arrived every `record_interval`."""
        while not batch.finished.wait(self._record_interval):
            self._record_rest(batch)
            self._raise_if_stop_requested()
        if batch.reporting_error is not None:
            raise RuntimeError("a sending result could not be recorded") from batch.reporting_error

    def _finish(self, batch: _Batch) -> None:
        """Wait for the batch's last results and record them; a mail server that failed ends the delivery."""
        self._await(batch)
        self._record_rest(batch)
        if self._unavailable:
            raise self._server_unavailable()

    def _record_rest(self, batch: _Batch) -> None:
        outcomes = batch.outcomes[batch.recorded :]
        if outcomes:
            self._record(outcomes)
            batch.recorded += len(outcomes)
        self._log_progress()

    def _stop(self, batches: Sequence[_Batch | None], *, interrupted: bool, because: str) -> None:
        """After an interrupt or error: record what happened to every claimed notification.

        After an interrupt nothing more is handed to the mail server: what was not comes
        back `stopped` and is recorded `released`, so a later run sends it without counting
        an attempt. What the ledger cannot take now goes to the journal.
        """
        if interrupted:
            self._transport.stop()
            self._log.warning(
                "interrupted: no message is handed to the mail server from now on; "
                "recording what happened to every claimed notification"
            )
        for batch in batches:
            if batch is None:
                continue
            if batch.started:
                batch.finished.wait()
            self._abandon(batch, because)
            self.journal.outcomes.extend(batch.outcomes[batch.recorded :])
            batch.recorded = len(batch.outcomes)
        self._flush_journal(quietly=True)
        if self.journal.unanswered_claims and not self.journal.outcomes:  # the ledger answers again
            unanswered = dict(self.journal.unanswered_claims)
            with contextlib.suppress(Exception):  # still down: they stay in the journal
                self._release(unanswered, because)
                self.journal.unanswered_claims.clear()
        if self._stopped_sending:
            self._log.warning(
                "stopped: %d claimed notification(s) not handed to the mail server, recorded `released` for a later run",
                self._stopped_sending,
            )

    def _abandon(self, batch: _Batch, because: str) -> None:
        """Every notification the batch owns and has no outcome for was not sent: `released`, so a later run sends it.

        Claims whose answer never came are settled the same way, where they turn out to be ours.
        """
        for notification, _ in batch.owned:
            if notification.key not in batch.decided:
                batch.decide(self._outcome(notification, "released", error=f"not sent: {because}"))
                self.stats.count("released", notification.kind, notification.key)
                self._stopped_sending += 1
        if batch.pending_claims:
            self.journal.unanswered_claims.update(batch.pending_claims)
            batch.pending_claims.clear()

    def _server_unavailable(self) -> ChannelUnavailable:
        return ChannelUnavailable(
            f"the mail server failed, not the messages: {self._last_unavailable_error}. Every claimed notification "
            "it did not take is recorded `released`: a later run sends it without counting an attempt"
        )

    # -- outcomes ------------------------------------------------------------------

    def _outcome_of_sending(
        self, notification: Notification, message: OutgoingMessage, result: SendResult
    ) -> NotificationOutcome | None:
        """The outcome to record for one notification of a message the transport reported; None: record none."""
        if result.outcome == "sent":
            self.sample_message = self.sample_message or message
            self.stats.count("sent", notification.kind, notification.key)
            return self._outcome(notification, "sent", message_id=message.message_id)
        if result.outcome == "bounced":  # refused for good: no run tries it again
            reason = result.error or "refused by the mail server"
            self.stats.count_skip(notification.kind, notification.key, reason)
            return self._outcome(notification, "skipped", error=reason)
        if result.outcome == "unknown":  # it may have been delivered: at most once, left for an operator
            self._unknown += 1
            self.stats.count("unknown", notification.kind, notification.key)
            self._log.error("%s (Message-ID %s): %s", notification.key, message.message_id, result.error)
            return None
        if result.outcome in ("unavailable", "stopped"):  # not the message's fault: no attempt spent
            if result.outcome == "unavailable":
                self._unavailable += 1
                self._last_unavailable_error = self._last_unavailable_error or result.error
            else:
                self._stopped_sending += 1
            self.stats.count("released", notification.kind, notification.key)
            return self._outcome(notification, "released", error=result.error)
        self.stats.count("failed", notification.kind, notification.key)
        return self._outcome(notification, "failed", error=result.error)

    def _record(self, outcomes: list[NotificationOutcome]) -> None:
        if not outcomes:
            return
        results = self._ledger.record_outcomes(outcomes)
        missing = [result.idempotency_key for result in results if result.outcome == "not_found"]
        if missing:
            # Only possible if the ledger lost records between claim and outcome.
            self._log.error("ledger had no record for %d outcome(s), e.g. %s", len(missing), missing[:5])

    def _flush_journal(self, *, quietly: bool = False) -> None:
        """Record the journal's outcomes; on failure they stay in the journal (raised unless `quietly`)."""
        while self.journal.outcomes:
            batch = self.journal.outcomes[: self._batch_size]
            try:
                results = self._ledger.record_outcomes(batch)
            except Exception:
                if quietly:
                    self._log.error(
                        "the ledger cannot record %d outcome(s) now; they are kept in the run's journal "
                        "for the next attempt",
                        len(self.journal.outcomes),
                    )
                    return
                raise
            del self.journal.outcomes[: len(batch)]
            missing = [result.idempotency_key for result in results if result.outcome == "not_found"]
            if missing:
                self._log.error("ledger had no record for %d outcome(s), e.g. %s", len(missing), missing[:5])

    def _outcome(
        self,
        notification: Notification,
        status: OutcomeStatus,
        *,
        message_id: str | None = None,
        error: str | None = None,
    ) -> NotificationOutcome:
        return NotificationOutcome(
            idempotency_key=notification.key,
            status=status,
            message_id=message_id,
            error=printable(error, 500) if error is not None else None,
            at=format_instant(datetime.now(UTC)),
        )

    def _log_progress(self) -> None:
        # After 10 s, 30 s, 70 s, 150 s, ... (the interval doubles): a long run shows
        # progress, and the event log does not grow with the number of notifications.
        now = time.monotonic()
        if now - self._last_progress_log >= self._progress_interval:
            self._last_progress_log = now
            self._progress_interval *= 2
            self._log.info("progress: %s", dict(self.stats.counts))
