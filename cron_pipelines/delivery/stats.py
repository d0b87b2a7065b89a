"""What a delivery counts and samples, and the metadata every notification asset reports from it."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cron_pipelines.models.records import InvalidRecord, InvalidTally
from cron_pipelines.safe_text import as_markdown_block, printable

# The counts every notification asset reports (docs/operating.md, "Auditing"): claim outcomes, then ledger statuses.
COUNTS = (
    "claimed", "duplicate", "sent", "failed", "released", "skipped", "opted_out", "invalid", "repeated_in_source",
    "digest_emails", "unknown",
)  # fmt: skip
# Markdown of one email the run sent, as its reader saw it (addresses masked).
SAMPLE_EMAIL = "sample_email"


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


def delivery_metadata(stats: DeliveryStats, *, left_claimed: int, sample: str | None) -> dict[str, Any]:
    """Counts (numeric, plotted by the UI) and bounded samples of keys and reasons; `sample` the reader's view of one message."""
    metadata: dict[str, Any] = {outcome: stats.counts.get(outcome, 0) for outcome in COUNTS}
    metadata["left_claimed"] = left_claimed
    if len(stats.counts_by_kind) > 1:
        for kind, counts in sorted(stats.counts_by_kind.items()):
            for outcome in COUNTS:
                if counts.get(outcome):
                    metadata[f"{kind}.{outcome}"] = counts[outcome]
    for outcome, keys in sorted(stats.samples.items()):
        metadata[f"sample_{outcome}_keys"] = list(keys)
    if stats.skip_reasons:
        metadata["skip_reasons"] = dict(stats.skip_reasons.most_common(10))
    if stats.invalid.sample:
        metadata["invalid_records_sample"] = list(stats.invalid.sample)
    if sample is not None:
        metadata[SAMPLE_EMAIL] = as_markdown_block(sample)
    return metadata


class Progress:
    """A progress line after 10 s, 30 s, 70 s, 150 s, ... (the interval doubles): a long run shows
    progress, and the event log does not grow with the number of notifications."""

    def __init__(self, stats: DeliveryStats, log: logging.Logger | logging.LoggerAdapter) -> None:
        self._stats = stats
        self._log = log
        self._last = time.monotonic()
        self._interval = 10.0

    def log(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._interval *= 2
            self._log.info("progress: %s", dict(self._stats.counts))
