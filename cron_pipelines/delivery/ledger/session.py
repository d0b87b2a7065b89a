"""One delivery's side of the ledger protocol (docs/services.md, "The ledger").

Every notification is claimed before it is sent, and its outcome recorded after: `sent`,
`skipped` (never again), `failed` (the message refused for now: a later run tries again,
one attempt more) or `released` (never handed over, through no fault of its own: a later
run tries again, no attempt spent). A claim is ours when it came back `claimed`, or
`duplicate` but still `claimed` by this run with the token of a request of ours whose
answer was lost. What the ledger cannot take now waits in the journal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from cron_pipelines.batching import chunked
from cron_pipelines.clients.mongo_service import MongoServiceClient
from cron_pipelines.delivery.batch import Batch
from cron_pipelines.delivery.channels.base import SendOutcome
from cron_pipelines.delivery.ledger.journal import Journal
from cron_pipelines.delivery.stats import DeliveryStats
from cron_pipelines.models.notification import Notification
from cron_pipelines.models.payloads import (
    CHANNEL,
    CLAIM_TOKEN,
    PLANNED_MESSAGE_ID,
    ClaimResult,
    NotificationClaim,
    NotificationOutcome,
    OutcomeResult,
    OutcomeStatus,
    format_instant,
)
from cron_pipelines.models.records import InvalidRecord, describe_validation_error
from cron_pipelines.safe_text import printable

DEFAULT_MAX_ATTEMPTS = 5

# What the ledger is told of each way a hand-over ended; None: nothing (it may have arrived).
STATUS_OF_SENDING: dict[SendOutcome, OutcomeStatus | None] = {
    "sent": "sent",
    "bounced": "skipped",  # refused for good: no run tries it again
    "failed": "failed",  # the message refused for now: one attempt spent
    "unavailable": "released",  # the server failed, not the message: no attempt spent
    "stopped": "released",
    "unknown": None,  # at most once: left `claimed` for an operator, as after a crash
}


@dataclass(frozen=True)
class RunInfo:
    """Where notifications come from, written into every ledger record for the audit trail."""

    run_id: str
    job_name: str
    partition_key: str | None


def gave_up(claim: ClaimResult, max_attempts: int) -> str | None:
    """Why a notification claimed once too often is recorded `skipped` instead of sent; None to send it."""
    if claim.record.attempts <= max_attempts:
        return None
    return f"not sent: gave up after {claim.record.attempts - 1} failed attempts (MAIL_MAX_ATTEMPTS={max_attempts})"


class LedgerSession:
    def __init__(
        self,
        client: MongoServiceClient,
        run: RunInfo,
        stats: DeliveryStats,
        *,
        channel: str,
        batch_size: int,
        log: logging.Logger | logging.LoggerAdapter,
        inherited_tokens: dict[str, str],
    ) -> None:
        self._client = client
        self._run = run
        self._stats = stats
        self._channel = channel
        self._batch_size = batch_size
        self._log = log
        self.journal = Journal()
        # Tokens of an earlier attempt's unanswered claims: a `duplicate` carrying one is ours.
        # Shared by the sessions of a step; a key leaves it once a claim of it is answered.
        self.inherited_tokens = inherited_tokens
        # Handed over when the answer was lost: left `claimed`, never recorded by this run.
        self.unknown = 0

    @property
    def left_claimed(self) -> int:
        """Notifications claimed here whose outcome the ledger does not have (yet), or never will from this run."""
        return len(self.journal) + self.unknown

    # -- claims -------------------------------------------------------------------------

    def claims_for(
        self,
        items: Sequence[Notification | InvalidRecord | tuple[Notification, ...]],
        batch: Batch,
        message_id: Callable[[], str],
    ) -> list[tuple[Notification, NotificationClaim]]:
        """The batch's notifications with their claims, each key once; the rest counted.

        Every message gets an id planned now (`message_id()`), kept in the claim so the ledger
        holds it even if the run dies; a digest's notifications (a tuple) share theirs.
        """
        seen: set[str] = set()
        claimable = []
        for index, item in enumerate(items):
            if isinstance(item, InvalidRecord):
                self._stats.count_invalid(item)
                continue
            planned_message_id = message_id()
            for notification in item if isinstance(item, tuple) else (item,):
                if notification.key in seen:
                    self._stats.count("repeated_in_source", notification.kind, notification.key)
                    continue
                seen.add(notification.key)
                try:
                    claim = NotificationClaim(
                        idempotency_key=notification.key,
                        kind=notification.kind,
                        user_id=notification.user_id,
                        recipient=notification.address,
                        run_id=self._run.run_id,
                        job_name=self._run.job_name,
                        partition_key=self._run.partition_key,
                        metadata={
                            **notification.metadata,
                            PLANNED_MESSAGE_ID: planned_message_id,
                            CLAIM_TOKEN: batch.token,
                            CHANNEL: self._channel,
                        },
                    )
                except ValidationError as exc:
                    # Not even a ledger record can be made of it (e.g. an absurd id in the key).
                    self._stats.count_invalid(
                        InvalidRecord(printable(notification.key, 80), describe_validation_error(exc), None)
                    )
                    continue
                if isinstance(item, tuple):
                    batch.digest_of[notification.key] = index
                claimable.append((notification, claim))
        return claimable

    def claim(self, claimable: Sequence[tuple[Notification, NotificationClaim]], batch: Batch) -> None:
        """Claim these, one request; what this run owns goes to `batch.owned`."""
        token = batch.token
        claims = [claim for _, claim in claimable]
        # Until the answer is processed these count as claimed, unknown which: a stop resolves them.
        batch.pending_claims.update((claim.idempotency_key, token) for claim in claims)
        reply = self._client.claim_notifications(claims)
        for (notification, _), result in zip(claimable, reply.results, strict=True):
            batch.claim_results[notification.key] = result
            inherited = self.inherited_tokens.pop(notification.key, None)
            if self._owns(result, token if reply.attempts > 1 else None, inherited):
                batch.owned.append((notification, result))
                self._stats.count("claimed", notification.kind, notification.key)
            else:
                self._stats.count("duplicate", notification.kind, notification.key)
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

    def release_inherited(self) -> None:
        """Settle the unanswered claims of an earlier attempt that this attempt did not meet again.

        The service no longer lists their notifications, so nothing was sent: each one this
        run holds is recorded `released` (a later run sends it if it is owed again).
        """
        leftover = dict(self.inherited_tokens)
        self.inherited_tokens.clear()
        self.release(leftover, "claimed by an attempt whose answer was lost, and no longer listed by the service")

    def release(self, tokens: Mapping[str, str], because: str) -> None:
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
                    metadata={CLAIM_TOKEN: token, CHANNEL: self._channel},
                )
                for key, token in chunk
            ]
            reply = self._client.claim_notifications(claims)
            released = [
                self.outcome(key, "released", error=f"not sent: {because}")
                for (key, token), result in zip(chunk, reply.results, strict=True)
                if self._owns(result, None, token)
            ]
            self.record(released)
            if released:
                self._log.warning("released %d claim(s) sent without an answer", len(released))

    # -- outcomes ----------------------------------------------------------------------

    def outcome(
        self, key: str, status: OutcomeStatus, *, message_id: str | None = None, error: str | None = None
    ) -> NotificationOutcome:
        return NotificationOutcome(
            idempotency_key=key,
            status=status,
            message_id=message_id,
            error=printable(error, 500) if error is not None else None,
            at=format_instant(datetime.now(UTC)),
        )

    def record(self, outcomes: Sequence[NotificationOutcome]) -> None:
        if not outcomes:
            return
        self._report_missing(self._client.record_outcomes(outcomes))

    def record_journaled(self, outcomes: Sequence[NotificationOutcome]) -> None:
        """Record outcomes an earlier attempt could not; raises, keeping them in the journal, if the ledger still cannot."""
        self.journal.outcomes.extend(outcomes)
        self.flush_journal()

    def flush_journal(self, *, quietly: bool = False) -> None:
        """Record the journal's outcomes; on failure they stay in the journal (raised unless `quietly`)."""
        while self.journal.outcomes:
            batch = self.journal.outcomes[: self._batch_size]
            try:
                results = self._client.record_outcomes(batch)
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
            self._report_missing(results)

    def abandon(self, batch: Batch, because: str) -> int:
        """After a stop or an error: what the batch owns and has no outcome for was never handed over.

        Each is recorded `released` (a later run sends it without counting an attempt), its claims
        whose answer never came wait in the journal, and what the ledger has not taken yet too.
        How many were released.
        """
        released = 0
        for notification, _ in batch.owned:
            if notification.key not in batch.decided:
                batch.decide(self.outcome(notification.key, "released", error=f"not sent: {because}"))
                self._stats.count("released", notification.kind, notification.key)
                released += 1
        self.journal.unanswered_claims.update(batch.pending_claims)
        batch.pending_claims.clear()
        self.journal.outcomes.extend(batch.outcomes[batch.recorded :])
        batch.recorded = len(batch.outcomes)
        return released

    def settle_unanswered(self, because: str) -> None:
        """Once the ledger answers again after a stop: the journal's unanswered claims that are ours are released."""
        if self.journal.unanswered_claims and not self.journal.outcomes:
            unanswered = dict(self.journal.unanswered_claims)
            try:
                self.release(unanswered, because)
            except Exception:  # still down: they stay in the journal
                return
            self.journal.unanswered_claims.clear()

    def _report_missing(self, results: Sequence[OutcomeResult]) -> None:
        missing = [result.idempotency_key for result in results if result.outcome == "not_found"]
        if missing:
            # Only possible if the ledger lost records between claim and outcome.
            self._log.error("ledger had no record for %d outcome(s), e.g. %s", len(missing), missing[:5])
