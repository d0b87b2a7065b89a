"""Shards: one day's delivery split over S steps, each owning the users a stable hash gives it.

A user's notifications all fall in one shard, so a reader's digest is built in one
place, and the ledger keeps each key exactly once across shards whatever happens.
Records that name no user (malformed ones) are counted by shard 0 only, so the sums
over shards equal what one step would report. The mail server's limits are totals
for the run: the shards share MAIL_MAX_CONNECTIONS and MAIL_RATE_LIMIT_PER_SECOND.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

MAX_SHARDS = 64  # as MAIL_MAX_CONNECTIONS: every shard needs an SMTP session of its own
_MAPPING_KEY = re.compile(r"(\d{1,2})_of_(\d{1,2})")

Item = TypeVar("Item")


def shard_index(user_id: str, count: int) -> int:
    """The shard of a user: a hash that every process and machine computes alike (unlike `hash`)."""
    digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based); `Shard(0, 1)` is the whole day, as one step."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 0 <= self.index < self.count:
            raise ValueError(f"no shard {self.index} of {self.count} (1 to {MAX_SHARDS} shards)")

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    @property
    def mapping_key(self) -> str:
        """Its name in a step key, e.g. `deliver_payment_reminders[2_of_4]`."""
        return f"{self.index}_of_{self.count}"

    @classmethod
    def from_mapping_key(cls, mapping_key: str | None) -> Shard:
        if mapping_key is None:
            return cls()
        match = _MAPPING_KEY.fullmatch(mapping_key)
        if match is None:
            raise ValueError(f"not a shard's mapping key: {mapping_key!r}")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def all_of(cls, count: int) -> list[Shard]:
        return [cls(index, count) for index in range(count)]

    def select(self, records: Iterable[Item]) -> Iterator[Item]:
        """This shard's share of a stream: records with a `user_id` by its hash, the rest on shard 0."""
        if self.is_whole:  # the stream as it is: one step costs nothing more than before sharding
            return iter(records)
        return (record for record in records if self._owns(getattr(record, "user_id", None)))

    def _owns(self, user_id: object) -> bool:
        return (shard_index(user_id, self.count) if isinstance(user_id, str) else 0) == self.index

    def connections(self, total: int) -> int:
        """This shard's share of `total` SMTP sessions; the shares add up to `total`."""
        share = total // self.count + (1 if self.index < total % self.count else 0)
        if share < 1:
            raise ValueError(f"{self.count} shards need at least {self.count} mail connections, not {total}")
        return share

    def rate(self, total: float | None) -> float | None:
        """This shard's share of a messages-per-second limit (None: no limit)."""
        return None if total is None else total / self.count
