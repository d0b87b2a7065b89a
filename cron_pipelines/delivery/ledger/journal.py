"""What a delivery owes the ledger and could not give it (the ledger was down): the step's journal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cron_pipelines.models.payloads import NotificationOutcome


@dataclass
class Journal:
    """What an attempt owes the ledger and could not deliver to it (the ledger was down).

    `outcomes`: results not yet recorded (a `sent`, or a `released` for a notification
    never handed over). `unanswered_claims`: key → token of claims sent
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
