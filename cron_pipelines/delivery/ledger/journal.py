"""What a delivery owes the ledger and could not give it (the ledger was down): the step's journal.

It lives in the run's event log, as an observation of the step's asset, so the step's next
attempt (in any process) records it first and owns those claims. The latest journal of a
step is the whole debt: an attempt that settles it writes an empty one. A shard's step
writes and reads its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from cron_pipelines.models.payloads import NotificationOutcome

JOURNAL_METADATA_KEY = "delivery_journal"
# Which shard's journal it is (`2_of_4`): each shard's step settles its own.
JOURNAL_SHARD_KEY = "delivery_shard"
WHOLE = "0_of_1"


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


def latest_journal(
    instance: dg.DagsterInstance, run_id: str, asset_key: dg.AssetKey, shard: str = WHOLE
) -> Journal | None:
    """The latest delivery journal the step of this run delivering `shard` of `asset_key` wrote, if any."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION, ascending=False
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        observation = event.asset_observation_data.asset_observation if event is not None else None
        if observation is not None and observation.asset_key == asset_key:
            written_by = observation.metadata.get(JOURNAL_SHARD_KEY)
            if (written_by.value if written_by is not None else WHOLE) != shard:
                continue
            entry = observation.metadata.get(JOURNAL_METADATA_KEY)
            if isinstance(entry, dg.JsonMetadataValue) and isinstance(entry.data, Mapping):
                return Journal.from_json(entry.data)
    return None


def write_journal(
    context: dg.AssetExecutionContext | dg.OpExecutionContext, asset_key: dg.AssetKey, journal: Journal, shard: str
) -> None:
    context.log_event(
        dg.AssetObservation(
            asset_key=asset_key,
            partition=context.partition_key if context.has_partition_key else None,
            description="Deliveries the ledger has not recorded yet; the step's next attempt records them first.",
            metadata={
                JOURNAL_METADATA_KEY: dg.MetadataValue.json(journal.to_json()),
                "unrecorded_outcomes": len(journal.outcomes),
                "unanswered_claims": len(journal.unanswered_claims),
                **({} if shard == WHOLE else {JOURNAL_SHARD_KEY: shard}),
            },
        )
    )
