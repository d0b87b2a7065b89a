"""How a notification becomes an email: its templates, in the reader's language (docs/services.md, "The mail")."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, MutableMapping, Sequence
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from cron_pipelines.delivery.channels.base import OutgoingMessage, UnsendableNotification
from cron_pipelines.delivery.channels.email.formatting import DEFAULT_LOCALE, JINJA_FILTERS, TEMPLATE_LANGUAGES
from cron_pipelines.delivery.channels.email.mime import (
    MailMessage,
    address_header,
    check_recipient,
    header_text,
    preview_text,
    serialize_message,
)
from cron_pipelines.delivery.channels.email.unsubscribe import UnsubscribeLinks
from cron_pipelines.models.notification import Notification, NotificationKind, is_optional
from cron_pipelines.safe_text import without_bidi_controls

_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,900}")  # printable ASCII, no spaces: safe as a header value
MAX_SUBJECT_CHARACTERS = 200
_SUBJECT_BREAKS = re.compile(r"[\x00-\x20\x7f\x85\u2028\u2029]+")


class _TemplateEnvironment(Environment):
    """Jinja2's Environment with each template's globals as one plain dict.

    Every render copies and iterates its template's globals; Jinja keeps them as a ChainMap
    over the environment's, which made that a third of a short template's cost. Jinja asks
    that globals not change once templates are loaded, and the composer never changes them.
    """

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}


class MessageComposer:
    """The email channel's composer: notifications into complete MIME messages, in the reader's language.

    Templates live under `templates/<language>/<kind>/`; a reader's locale picks the most
    specific one there is (`de_DE` → `de` → `en`), and Babel formats their figures.
    """

    name = "email"

    def __init__(self, mail_from: str, unsubscribe: UnsubscribeLinks | None = None) -> None:
        self._unsubscribe = unsubscribe
        sender_name, sender_address = parseaddr(mail_from)
        self.sender = sender_address
        self._from_header = header_text(formataddr((sender_name, sender_address), charset="utf-8"))
        self._msgid_domain = sender_address.rpartition("@")[2] or "localhost"
        self._templates = _TemplateEnvironment(
            loader=PackageLoader("cron_pipelines.delivery.channels.email", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self._templates.filters.update(JINJA_FILTERS)
        # (locale, kind, part) → template: the fallback is resolved once per locale, not per message.
        self._resolved: dict[tuple[str, str, str], Template] = {}

    def new_message_id(self) -> str:
        """A fresh Message-ID, planned before the claim so the ledger holds it even if the run dies."""
        return make_msgid(domain=self._msgid_domain)

    def message(self, notifications: Sequence[Notification], message_id: str | None, *, digest: bool) -> MailMessage:
        """One notification's email, or the digest of several (one reader, one kind)."""
        return self.compose_digest(notifications, message_id) if digest else self.compose(notifications[0], message_id)

    def preview(self, message: OutgoingMessage) -> str:
        return preview_text(message)

    def compose(self, notification: Notification, message_id: str | None = None) -> MailMessage:
        context = {**_reader_values(notification.context), "notification_id": notification.key}
        return self._compose([notification], context, "", message_id)

    def compose_digest(self, notifications: Sequence[Notification], message_id: str | None = None) -> MailMessage:
        """One email listing `notifications` (one user, one kind), in due-date order, with a total per currency.

        It carries one `X-Notification-Id` header per notification (docs/services.md, "Recipients").
        """
        ordered = sorted(notifications, key=lambda notification: (notification.context["due_date"], notification.key))
        items = [
            {**_reader_values(notification.context), "notification_id": notification.key} for notification in ordered
        ]
        totals: dict[str, int] = {}
        for item in items:
            totals[item["currency"]] = totals.get(item["currency"], 0) + item["amount_cents"]
        context = {
            "items": items,
            "totals": [{"currency": currency, "amount_cents": totals[currency]} for currency in sorted(totals)],
        }
        return self._compose(ordered, context, "digest_", message_id)

    def _compose(
        self,
        notifications: Sequence[Notification],
        values: Mapping[str, Any],
        template_prefix: str,
        message_id: str | None,
    ) -> MailMessage:
        first = notifications[0]
        for notification in notifications:
            if not _KEY_PATTERN.fullmatch(notification.key):
                raise UnsendableNotification("idempotency key is not printable ASCII without spaces")
        recipient = check_recipient(first.address, first.name)
        unsubscribe_url = (
            self._unsubscribe.url(first.user_id, first.kind)
            if self._unsubscribe is not None and first.user_id is not None and is_optional(first.kind)
            else None
        )
        locale = _writing_locale(first.locale)
        context = {**values, "name": recipient.name, "unsubscribe_url": unsubscribe_url, "locale": locale}
        kind = NotificationKind(first.kind)
        # Data can end up in the subject: every run of line breaks, controls and spaces becomes one
        # space (no-break spaces stay: Babel puts them between an amount and its currency sign).
        subject = _SUBJECT_BREAKS.sub(" ", self._render(locale, kind, f"{template_prefix}subject.txt", context)).strip()
        message_id = message_id or self.new_message_id()
        headers = [
            ("From", self._from_header),
            ("To", address_header(recipient)),
            ("Subject", header_text(subject[:MAX_SUBJECT_CHARACTERS])),
            ("Date", _date_header(int(time.time()))),
            ("Message-ID", message_id),
            ("X-Notification-Kind", kind.value),
            *(("X-Notification-Id", notification.key) for notification in notifications),
        ]
        if unsubscribe_url is not None:
            # RFC 8058: the URL takes a POST with this body and unsubscribes at once.
            headers.append(("List-Unsubscribe", f"<{unsubscribe_url}>"))
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        data = serialize_message(
            headers,
            self._render(locale, kind, f"{template_prefix}body.txt", context),
            self._render(locale, kind, f"{template_prefix}body.html", context),
            smtputf8=recipient.smtputf8,
        )
        return MailMessage(
            key=first.key,
            kind=kind.value,
            sender=self.sender,
            recipient=recipient.address,
            message_id=message_id,
            data=data,
            smtputf8=recipient.smtputf8,
        )

    def _render(self, locale: str, kind: NotificationKind, part: str, context: Mapping[str, Any]) -> str:
        template = self._resolved.get((locale, kind.value, part))
        if template is None:
            language = locale.partition("_")[0]
            template = self._templates.select_template(
                [f"{name}/{kind.value}/{part}" for name in dict.fromkeys((locale, language, DEFAULT_LOCALE))]
            )
            self._resolved[(locale, kind.value, part)] = template
        return template.render(context)


@lru_cache(maxsize=2)
def _date_header(second: int) -> str:
    """The Date header of every message composed in this second (formatdate costs about 10 µs)."""
    return formatdate(second, usegmt=True)


def _writing_locale(reader_locale: str | None) -> str:
    """The reader's locale where its language has templates (`en_IN`, `de_AT`); else `en`, so the
    words and the figures of one email are in one language."""
    if reader_locale is None or reader_locale.partition("_")[0] not in TEMPLATE_LANGUAGES:
        return DEFAULT_LOCALE
    return reader_locale


def _reader_values(context: Mapping[str, Any]) -> dict[str, Any]:
    # Bidirectional overrides in service text could make a line read as something else.
    return {name: without_bidi_controls(value) if isinstance(value, str) else value for name, value in context.items()}
