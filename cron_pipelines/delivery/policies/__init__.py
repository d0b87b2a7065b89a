"""What is decided about a notification before it is claimed, one policy step per concern.

Every step has one shape: the batch's notifications that are still undecided in, its
decisions out. A skip is claimed and then recorded `skipped` with its reason (the ledger
keeps the decision); a hold is not claimed at all now (a digest waits for the end of the
stream). The pipeline applies the steps in the order of its list, each to what the ones
before left undecided; mandatory kinds are left alone by the steps that only concern
optional ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cron_pipelines.models.notification import Notification


@dataclass(frozen=True)
class Skip:
    reason: str  # recorded as the `skipped` record's error
    count: str | None = None  # the count it is also reported under (`opted_out`)


@dataclass
class Decisions:
    skips: dict[str, Skip] = field(default_factory=dict)  # key → why it is recorded `skipped`
    holds: set[str] = field(default_factory=set)  # keys not claimed now

    def decided(self, key: str) -> bool:
        return key in self.skips or key in self.holds

    def update(self, other: Decisions) -> None:
        self.skips.update(other.skips)
        self.holds.update(other.holds)


class PolicyStep(Protocol):
    def decide(self, notifications: Sequence[Notification]) -> Decisions:
        """Decisions about some of `notifications` (the batch's undecided ones); the rest go on."""


def decide_all(steps: Sequence[PolicyStep], notifications: Sequence[Notification]) -> Decisions:
    """Every step, in order, on what the steps before it left undecided."""
    decisions = Decisions()
    for step in steps:
        undecided = [notification for notification in notifications if not decisions.decided(notification.key)]
        if not undecided:
            break
        decisions.update(step.decide(undecided))
    return decisions
