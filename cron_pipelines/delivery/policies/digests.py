"""Grouping a run's digest notifications by reader without holding the run in memory.

Dues arrive ordered by due date, not by user, so one reader's dues can be anywhere in
the stream. Notifications bound for a digest are therefore not claimed when they pass:
they are written to a scratch SQLite file (mode 0600 in the temp directory, deleted
when the delivery ends) and read back once the stream is done, sorted by reader and
kind, one group at a time. Memory holds one group (at most `max_items` notifications)
and SQLite's sort buffer; disk holds every digest notification of the run, about 1 KB
each. Nothing is claimed before it is read back, so a crash before then leaves nothing
`claimed`: the next attempt streams the day again and finds them unsent.
"""

from __future__ import annotations

import pickle
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cron_pipelines.delivery.policies import Decisions
from cron_pipelines.delivery.policies.preferences import PreferenceBook
from cron_pipelines.models.notification import DIGEST_KINDS, Notification, is_optional

# A reader with more than this many dues in one run gets several digests of this size.
MAX_DIGEST_ITEMS = 50


class DigestSpill:
    """Notifications waiting for their digest, on disk until the stream has passed."""

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="cron-pipelines-digest-")
        self._database = sqlite3.connect(Path(self._directory.name) / "spill.sqlite3", isolation_level=None)
        # A scratch file: no journal, no fsync; a crash loses it and nothing else.
        self._database.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE waiting (
                key TEXT PRIMARY KEY, user_id TEXT NOT NULL, kind TEXT NOT NULL,
                email TEXT NOT NULL, notification BLOB NOT NULL
            );
            """
        )
        self.size = 0  # notifications kept
        self.read = 0  # notifications handed out by `digests`

    def add(self, notifications: Sequence[Notification]) -> list[Notification]:
        """Keep `notifications` for their digests; those whose key was already kept (repeats) come back."""
        repeated = []
        self._database.execute("BEGIN")
        for notification in notifications:
            inserted = self._database.execute(
                "INSERT OR IGNORE INTO waiting VALUES (?, ?, ?, ?, ?)",
                (
                    notification.key,
                    notification.user_id,
                    notification.kind,
                    notification.address or "",
                    pickle.dumps(notification, protocol=pickle.HIGHEST_PROTOCOL),
                ),
            ).rowcount
            if inserted:
                self.size += 1
            else:
                repeated.append(notification)
        self._database.execute("COMMIT")
        return repeated

    def digests(self, max_items: int = MAX_DIGEST_ITEMS) -> Iterator[tuple[Notification, ...]]:
        """The kept notifications, one tuple per reader, kind and address (split past `max_items`)."""
        group: list[Notification] = []
        group_of: tuple[str, str, str] | None = None
        rows = self._database.execute("SELECT user_id, kind, email, notification FROM waiting ORDER BY 1, 2, 3, key")
        for user_id, kind, email, data in rows:
            if group and ((user_id, kind, email) != group_of or len(group) >= max_items):
                self.read += len(group)
                yield tuple(group)
                group = []
            group_of = (user_id, kind, email)
            # Only this process wrote the file, into its own 0700 directory.
            group.append(pickle.loads(data))
        if group:
            self.read += len(group)
            yield tuple(group)

    def close(self) -> None:
        self._database.close()
        self._directory.cleanup()


class DigestReaders:
    """A notification of a digest kind whose reader reads digests is held back: it waits in the spill.

    When the stream is done, `digests` hands each reader's waiting notifications of a kind out
    together; they are claimed together and sent as one email (docs/services.md, "Recipients").
    The spill is opened at the first such notification and closed by `close`.
    """

    def __init__(self, book: PreferenceBook, on_repeat: Callable[[Notification], None]) -> None:
        self._book = book
        self._on_repeat = on_repeat  # a key the spill already holds: counted `repeated_in_source`
        self._spill: DigestSpill | None = None

    def decide(self, notifications: Sequence[Notification]) -> Decisions:
        preferences = self._book.of(notifications)
        waiting = [
            notification
            for notification in notifications
            if notification.kind in DIGEST_KINDS
            and is_optional(notification.kind)
            and notification.skip_reason is None
            and (preference := preferences.get(str(notification.user_id))) is not None
            and preference.digest
        ]
        if not waiting:
            return Decisions()
        if self._spill is None:
            self._spill = DigestSpill()
        for repeated in self._spill.add(waiting):
            self._on_repeat(repeated)
        return Decisions(holds={notification.key for notification in waiting})

    def digests(self, max_items: int = MAX_DIGEST_ITEMS) -> Iterator[tuple[Notification, ...]]:
        """The held notifications, one tuple per reader, kind and address (nothing if none was held)."""
        if self._spill is not None:
            yield from self._spill.digests(max_items)

    @property
    def unread(self) -> int:
        """Held and never handed out (the delivery stopped first): none of them was claimed."""
        return 0 if self._spill is None else self._spill.size - self._spill.read

    def close(self) -> None:
        if self._spill is not None:
            spill, self._spill = self._spill, None
            spill.close()
