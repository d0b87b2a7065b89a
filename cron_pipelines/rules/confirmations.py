"""Emails that confirm a service write (an account deactivated, a verification decided).

Such an email is claimed in the ledger before the write, so a crash between the
write and the send can never lose it silently: the claim stays `claimed` and the
maintenance job reports it. After the write, this decides whether to send it.

Once the write is done its subject leaves the service's lists (a deactivated user is
no longer `active`, a decided verification no longer `pending`), so a confirmation
whose send failed can only be found again in the ledger. Its record therefore carries
everything needed to send it again: the name, the template context and the locale.
"""

from __future__ import annotations

from dataclasses import replace

from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import DELIVERY_METADATA, ClaimResult, NotificationRecord
from cron_pipelines.models.reader import known_locale

# What the write of each confirmation kind is repeated from, besides the template context.
WRITE_FIELDS = {
    NotificationKind.ACCOUNT_DEACTIVATED: ("last_active_at",),
    NotificationKind.VERIFICATION_RESULT: ("verification_id", "status", "reason"),
}


def confirmation_skip_reason(write_outcome: str, *, applied: str, already: str, claimed_before: bool) -> str | None:
    """None to send the confirmation, else why it is recorded `skipped`.

    `applied` is the outcome of a write that changed state now (e.g. `deactivated`).
    `already` (e.g. `already_inactive`) still gets the email when an earlier claim of it
    exists (`claimed_before`: a `failed` or `released` one): the earlier attempt made the
    change (its send, or the answer to its write, was lost), and the email is still owed.
    """
    if write_outcome == applied:
        return None
    if write_outcome == already and claimed_before:
        return None
    return f"not sent: the service answered `{write_outcome}`"


def claimed_before(notification: Notification, claim: ClaimResult) -> bool:
    """Whether this claim takes up an earlier one: rebuilt from the ledger, or a failed record claimed again.

    A `released` record claimed again keeps its attempts (contract v1.2), so the count alone cannot tell.
    """
    return notification.resent or claim.record.attempts > 1


def resendable(notification: Notification) -> Notification:
    """The confirmation with its name and template context in the ledger metadata."""
    return replace(
        notification,
        metadata={
            **notification.metadata,
            "name": notification.name,
            "context": dict(notification.context),
            "locale": notification.locale,
        },
    )


def confirmation_from_record(record: NotificationRecord) -> Notification:
    """A `failed` or `released` confirmation rebuilt from its ledger record alone, to be claimed and sent again.

    A record that lacks what the email or the write needs gets a skip reason, so the
    claim records it `skipped` (visible in the audit) instead of failing run after run.
    """
    kind = NotificationKind(record.kind)
    metadata = {name: value for name, value in record.metadata.items() if name not in DELIVERY_METADATA}
    name, context, locale = metadata.get("name"), metadata.get("context"), metadata.get("locale")
    missing = [field for field in WRITE_FIELDS.get(kind, ()) if not isinstance(metadata.get(field), str)]
    if not isinstance(context, dict):
        missing.append("context")
    if not record.user_id:
        missing.append("user_id")
    return Notification(
        resent=True,
        key=record.idempotency_key,
        kind=kind,
        user_id=record.user_id,
        address=record.recipient,
        name=name if isinstance(name, str) else None,
        context=context if isinstance(context, dict) else {},
        metadata=metadata,
        skip_reason=f"ledger record lacks {', '.join(missing)}: cannot resend" if missing else None,
        locale=known_locale(locale) if isinstance(locale, str) else None,
    )
