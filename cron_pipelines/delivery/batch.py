"""One batch of a delivery on its way: what it claimed, owns, decided, sends and has recorded."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

from cron_pipelines.delivery.channels.base import OutgoingMessage
from cron_pipelines.models.notification import Notification
from cron_pipelines.models.payloads import ClaimResult, NotificationOutcome


@dataclass
class Batch:
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
    # Each message with the notifications it carries (several for a digest).
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
