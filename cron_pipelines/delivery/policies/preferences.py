"""Recipients' choices (docs/services.md, "Recipients"): an optional kind a user opted out of is not sent.

One lookup per batch asks for the preferences of its optional notifications' users (never
for mandatory kinds, never one request per record); the digest step reads the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from cron_pipelines.clients.mongo_service import MongoServiceClient
from cron_pipelines.delivery.policies import Decisions, Skip
from cron_pipelines.models.notification import Notification, is_optional
from cron_pipelines.models.payloads import Preference

# The skip reason, and the count, of an optional notification whose user opted out of its kind.
OPTED_OUT = "opted_out"


class PreferenceBook:
    """The preferences of one batch's readers, asked once for every step that needs them."""

    def __init__(self, client: MongoServiceClient) -> None:
        self._client = client
        self._known: dict[str, Preference] = {}
        self._asked: frozenset[str] = frozenset()

    def of(self, notifications: Sequence[Notification]) -> dict[str, Preference]:
        """By user id, for these notifications' readers of optional kinds (a v1.0 service: none)."""
        users = frozenset(
            str(notification.user_id)
            for notification in notifications
            if notification.user_id is not None and notification.skip_reason is None and is_optional(notification.kind)
        )
        if users and not users <= self._asked:  # a new batch: the last one's answers are not needed again
            self._known = self._client.lookup_preferences(sorted(users))
            self._asked = users
        return self._known


class OptOuts:
    """An optional notification whose user opted out of its kind is claimed and recorded `skipped` (`opted_out`)."""

    def __init__(self, book: PreferenceBook) -> None:
        self._book = book

    def decide(self, notifications: Sequence[Notification]) -> Decisions:
        preferences = self._book.of(notifications)
        decisions = Decisions()
        for notification in notifications:
            preference = preferences.get(str(notification.user_id))
            if (
                preference is not None
                and notification.skip_reason is None
                and is_optional(notification.kind)
                and notification.kind in preference.opted_out
            ):
                decisions.skips[notification.key] = Skip(OPTED_OUT, count=OPTED_OUT)
        return decisions
