"""The business day `D` of a run and the instants the rules measure from (docs/services.md, "The business rules").

`D` is a date in CRON_TIMEZONE; "N days before start(D)" means midnight of the
local date D−N, so a rule keeps its meaning across a DST change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class BusinessDay:
    day: date
    timezone: ZoneInfo

    @classmethod
    def from_partition_key(cls, partition_key: str, timezone: str) -> BusinessDay:
        return cls(date.fromisoformat(partition_key), ZoneInfo(timezone))

    @classmethod
    def today(cls, timezone: str, now: datetime | None = None) -> BusinessDay:
        zone = ZoneInfo(timezone)
        return cls((now or datetime.now(zone)).astimezone(zone).date(), zone)

    def start_of(self, day: date) -> datetime:
        """00:00 of `day` in the business time zone, as an aware datetime."""
        return datetime.combine(day, time(0), tzinfo=self.timezone)

    @property
    def start(self) -> datetime:
        return self.start_of(self.day)

    def days_before_start(self, days: int) -> datetime:
        """start(D) − `days` days, counted in local calendar days."""
        return self.start_of(self.day - timedelta(days=days))

    def as_of(self, now: datetime) -> datetime:
        """min(now, start(D+1)): a run for a past day sees that day's end, today's run sees now."""
        return min(now, self.start_of(self.day + timedelta(days=1)))

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.timezone).date()

    def readers_date(self, instant: datetime, timezone: str | None) -> date:
        """The date of `instant` where the reader lives (their `timezone`, else the business one)."""
        return instant.astimezone(ZoneInfo(timezone) if timezone else self.timezone).date()

    def plus_days(self, days: int) -> date:
        return self.day + timedelta(days=days)
