"""What a notification is: one message a business rule decided to send, on some channel, and its kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class NotificationKind(StrEnum):
    PAYMENT_REMINDER = "payment_reminder"
    OVERDUE_NOTICE = "overdue_notice"
    INACTIVITY_WARNING = "inactivity_warning"
    ACCOUNT_DEACTIVATED = "account_deactivated"
    VERIFICATION_RESULT = "verification_result"
    VERIFICATION_REMINDER = "verification_reminder"
    OPS_ALERT = "ops_alert"


# Sent whatever the user's preferences, and without an unsubscribe header
# (docs/services.md, "Recipients"); every other kind is optional.
MANDATORY_KINDS = frozenset(
    {NotificationKind.ACCOUNT_DEACTIVATED, NotificationKind.VERIFICATION_RESULT, NotificationKind.OPS_ALERT}
)


def is_optional(kind: str) -> bool:
    return kind not in MANDATORY_KINDS


@dataclass(frozen=True)
class Notification:
    """One message a business rule decided to send; `key` is its idempotency key (docs/services.md, "The business rules").

    Channel-neutral: the channel it goes out on composes it for `address` (an email's recipient,
    a webhook's URL), and its ledger record names the channel.
    """

    key: str
    kind: NotificationKind
    user_id: str | None
    address: str | None  # where it goes: an e-mail address, a webhook URL (the channel decides)
    name: str | None
    # What the template shows: typed values (dates, amounts in minor units), formatted
    # for the reader's `locale` when the message is composed.
    context: Mapping[str, Any] = field(default_factory=dict)
    # Why it is sent (ids, dates, offsets): stored with the ledger record for auditors.
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Set when the source record is unusable: the notification is claimed and recorded
    # `skipped` with this reason, and never composed or sent.
    skip_reason: str | None = None
    # The reader's language (Babel identifier, e.g. `de_DE`); None: `en`.
    locale: str | None = None
    # Rebuilt from its own ledger record (a confirmation sent again): an earlier claim of it exists.
    resent: bool = False


# Kinds a user may take as one email per run listing all of that day's notifications.
DIGEST_KINDS = frozenset({NotificationKind.PAYMENT_REMINDER, NotificationKind.OVERDUE_NOTICE})
