"""How a notification becomes an email (docs/services.md, "The mail").

Rendering is the hot path of a large run: the stdlib generator spends most of a
message's ~0.7 ms folding headers and compiling a regex per boundary. The messages
here always have one shape (multipart/alternative, a UTF-8 text and HTML part), so
they are serialised directly: every header value is either checked printable ASCII
or an RFC 2047 encoded word, bodies are base64, lines end in CRLF. Tests parse the
result with the stdlib's strict `policy.default` parser.
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import random
import re
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from email.utils import formataddr, formatdate, make_msgid, parseaddr, quote
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from cron_pipelines.log_format import mask_emails
from cron_pipelines.models.notification import Notification, NotificationKind, is_optional
from cron_pipelines.models.payloads import MAX_NAME_CHARACTERS
from cron_pipelines.notifications.formatting import DEFAULT_LOCALE, JINJA_FILTERS, TEMPLATE_LANGUAGES
from cron_pipelines.notifications.unsubscribe import UnsubscribeLinks
from cron_pipelines.safe_text import without_bidi_controls


@dataclass(frozen=True)
class OutgoingMessage:
    key: str  # the (first) notification it carries
    kind: str
    sender: str
    recipient: str
    message_id: str
    data: bytes
    # The recipient's local part is not ASCII: only an SMTPUTF8 server may take it (RFC 6531).
    smtputf8: bool = False


@dataclass(frozen=True)
class Recipient:
    address: str  # the domain in IDNA A-labels
    name: str | None
    smtputf8: bool


class UnsendableNotification(ValueError):
    """The notification must not be sent (bad recipient, unsafe header value); the message is the reason."""


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")
_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,900}")  # printable ASCII, no spaces: safe as a header value
MAX_SUBJECT_CHARACTERS = 200
_SUBJECT_BREAKS = re.compile(r"[\x00-\x20\x7f\x85\u2028\u2029]+")


def check_recipient(email: str | None, name: str | None) -> Recipient:
    """The normalised address and display name, or UnsendableNotification saying why not."""
    if email is None or not email.strip():
        raise UnsendableNotification("missing e-mail address")
    if _CONTROL_CHARACTERS.search(email):
        raise UnsendableNotification("e-mail address contains control characters (header injection)")
    if name is not None and _CONTROL_CHARACTERS.search(name):
        raise UnsendableNotification("display name contains control characters (header injection)")
    if name is not None and len(name) > MAX_NAME_CHARACTERS:
        raise UnsendableNotification(f"display name is longer than {MAX_NAME_CHARACTERS} characters")
    try:
        local_part, ascii_domain = _validated_address(email.strip())
    except EmailNotValidError as exc:
        raise UnsendableNotification(f"invalid e-mail address: {exc}") from None
    # Bidirectional overrides can make a name read as something else: they are dropped.
    clean_name = without_bidi_controls(name).strip() if name else ""
    return Recipient(
        address=f"{local_part}@{ascii_domain}",
        name=clean_name or None,
        smtputf8=not local_part.isascii(),
    )


# RFC 5322 dot-atom of ASCII `atext`: exactly the local parts email_validator takes unchanged.
_DOT_ATOM_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
MAX_LOCAL_PART_LENGTH = 64
MAX_ADDRESS_LENGTH = 254


def _validated_address(address: str) -> tuple[str, str]:
    """The local part and ASCII domain of `address`, or EmailNotValidError: email_validator's verdict.

    Its checks cost ~50 µs per address, most of them on the domain (IDNA, special-use names),
    which a run's addresses share. So the common shape, a plain ASCII local part, is checked
    here by the same rule email_validator applies to it, and each domain once by email_validator
    itself; anything else (Unicode, quoting, odd lengths, IDNA `xn--` labels, whose Unicode form
    has length limits of its own) goes to email_validator whole.
    """
    local_part, at, domain = address.rpartition("@")
    if (
        at
        and len(local_part) <= MAX_LOCAL_PART_LENGTH
        and _DOT_ATOM_LOCAL_PART.fullmatch(local_part)
        and domain.isascii()
        and "xn--" not in domain.lower()
    ):
        ascii_domain = _validated_domain(domain)
        if len(local_part) + 1 + len(ascii_domain) <= MAX_ADDRESS_LENGTH:
            return local_part, ascii_domain
    validated = validate_email(address, check_deliverability=False)
    return validated.local_part, validated.ascii_domain


@lru_cache(maxsize=4096)
def _validated_domain(domain: str) -> str:
    # The shortest valid local part: the verdict is the domain's alone (errors are not cached), and an
    # address over the length limit with it is over the limit with any local part.
    return validate_email(f"a@{domain}", check_deliverability=False).ascii_domain


def _address_header(recipient: Recipient) -> str:
    """`name <address>`: the name quoted (ASCII) or as encoded words, never re-encoded with the address."""
    if not recipient.name:
        return f"<{recipient.address}>" if recipient.smtputf8 else recipient.address
    if recipient.name.isascii() and not recipient.smtputf8:
        return formataddr((recipient.name, recipient.address))  # quotes the name only where needed
    phrase = f'"{quote(recipient.name)}"' if recipient.name.isascii() else _encoded_words(recipient.name)
    # RFC 6532: with SMTPUTF8 the address itself is written as UTF-8.
    return f"{phrase}\r\n <{recipient.address}>" if len(phrase) > 60 else f"{phrase} <{recipient.address}>"


def _header_text(value: str) -> str:
    """A header value safe on the wire: short ASCII as is, anything else as folded RFC 2047 words."""
    if value.isascii() and len(value) <= 900:
        return value
    return _encoded_words(value)


# UTF-8 bytes per encoded word: 45 bytes are 60 base64 characters, 72 with `=?utf-8?b?…?=`,
# so each folded line stays within RFC 5322's 78.
_ENCODED_WORD_BYTES = 45


def _encoded_words(value: str) -> str:
    """`value` as base64 RFC 2047 encoded words, one per folded line, never splitting a character.

    The stdlib's `Header.encode` measures every candidate split in quoted-printable, about
    half a millisecond per subject: this is the same result's shape at a fraction of it.
    """
    words = []
    data = value.encode("utf-8")
    start = 0
    while start < len(data):
        end = min(start + _ENCODED_WORD_BYTES, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # a continuation byte: back to the character's start
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode('ascii')}?=")
        start = end
    return "\r\n ".join(words)


_BASE64_LINE_LENGTH = 76  # RFC 2045's longest encoded line


def _base64_lines(text: str) -> str:
    # One b64encode and slices: `base64.encodebytes` loops in Python over 57-byte pieces.
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    lines = [encoded[start : start + _BASE64_LINE_LENGTH] for start in range(0, len(encoded), _BASE64_LINE_LENGTH)]
    return "\r\n".join(lines) + "\r\n"


def serialize_message(headers: list[tuple[str, str]], text: str, html: str, *, smtputf8: bool = False) -> bytes:
    """A multipart/alternative message; header values must already be wire-safe (UTF-8 only with SMTPUTF8)."""
    # "=_" cannot occur in base64 output, so the boundary never collides with a body line; the
    # random part only keeps boundaries distinct. Not `secrets`: os.urandom releases the GIL, and
    # in a busy run getting it back cost the composing thread ~50 µs per message.
    boundary = f"=_{random.getrandbits(128):032x}"
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (
        f"{head}MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
        f"\r\n--{boundary}\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{_base64_lines(text)}--{boundary}\r\n"
        'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{_base64_lines(html)}--{boundary}--\r\n"
    ).encode("utf-8" if smtputf8 else "ascii")


def preview_text(message: OutgoingMessage) -> str:
    """What the reader sees of `message` (headers that matter and the text part), addresses masked:
    for the UI and for operators, never the raw message."""
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    body = parsed.get_body(("plain",))
    text = body.get_content() if isinstance(body, email.message.EmailMessage) else ""
    headers = "\n".join(
        f"{name}: {mask_emails(str(value))}"
        for name in ("From", "To", "Subject", "Date", "X-Notification-Id", "List-Unsubscribe")
        for value in parsed.get_all(name, [])
    )
    return f"{headers}\n\n{mask_emails(text)}"


def as_markdown_block(text: str) -> str:
    """`text` in a fenced block longer than any run of backticks in it: shown, never interpreted."""
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"


class _TemplateEnvironment(Environment):
    """Jinja2's Environment with each template's globals as one plain dict.

    Every render copies and iterates its template's globals; Jinja keeps them as a ChainMap
    over the environment's, which made that a third of a short template's cost. Jinja asks
    that globals not change once templates are loaded, and the composer never changes them.
    """

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}


class MessageComposer:
    """Renders notifications into complete MIME messages from the Jinja2 templates, in the reader's language.

    Templates live under `templates/<language>/<kind>/`; a reader's locale picks the most
    specific one there is (`de_DE` → `de` → `en`), and Babel formats their figures.
    """

    def __init__(self, mail_from: str, unsubscribe: UnsubscribeLinks | None = None) -> None:
        self._unsubscribe = unsubscribe
        sender_name, sender_address = parseaddr(mail_from)
        self.sender = sender_address
        self._from_header = _header_text(formataddr((sender_name, sender_address), charset="utf-8"))
        self._msgid_domain = sender_address.rpartition("@")[2] or "localhost"
        self._templates = _TemplateEnvironment(
            loader=PackageLoader("cron_pipelines.notifications", "templates"),
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

    def compose(self, notification: Notification, message_id: str | None = None) -> OutgoingMessage:
        context = {**_reader_values(notification.context), "notification_id": notification.key}
        return self._compose([notification], context, "", message_id)

    def compose_digest(self, notifications: Sequence[Notification], message_id: str | None = None) -> OutgoingMessage:
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
    ) -> OutgoingMessage:
        first = notifications[0]
        for notification in notifications:
            if not _KEY_PATTERN.fullmatch(notification.key):
                raise UnsendableNotification("idempotency key is not printable ASCII without spaces")
        recipient = check_recipient(first.email, first.name)
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
            ("To", _address_header(recipient)),
            ("Subject", _header_text(subject[:MAX_SUBJECT_CHARACTERS])),
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
        return OutgoingMessage(
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
