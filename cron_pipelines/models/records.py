"""Records a service sent that fail validation: kept, counted and described, never a crash."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cron_pipelines.safe_text import printable


@dataclass(frozen=True)
class InvalidRecord:
    """A listed record that failed validation: the caller records a skip instead of crashing."""

    record_id: str | None
    reason: str
    raw: Any = field(repr=False)


@dataclass
class InvalidTally:
    """How many records were invalid, with a bounded sample of which and why."""

    sample_size: int = 10
    count: int = 0
    sample: list[str] = field(default_factory=list)

    def add(self, record: InvalidRecord) -> None:
        self.count += 1
        if len(self.sample) < self.sample_size:
            self.sample.append(f"{printable(record.record_id or '<no id>', 80)}: {printable(record.reason, 200)}")


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """A short reason naming the failing fields, e.g. `amount_cents: Input should be a valid integer`."""
    parts = []
    for error in exc.errors()[:limit]:
        location = ".".join(printable(part, 40) for part in error["loc"]) or "record"
        parts.append(f"{location}: {error['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
