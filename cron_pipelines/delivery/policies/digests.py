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
from collections.abc import Iterator, Sequence
from pathlib import Path

from cron_pipelines.models.notification import Notification

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
                    notification.email or "",
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
