"""The MIME of the project's emails, written directly (docs/services.md, "The mail").

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
from dataclasses import dataclass
from email.utils import formataddr, quote
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from cron_pipelines.delivery.channels.base import OutgoingMessage, UnsendableNotification
from cron_pipelines.log_format import mask_emails
from cron_pipelines.models.payloads import MAX_NAME_CHARACTERS
from cron_pipelines.safe_text import without_bidi_controls


@dataclass(frozen=True)
class MailMessage(OutgoingMessage):
    """An email: its envelope sender, and whether its recipient needs SMTPUTF8."""

    sender: str = ""
    # The recipient's local part is not ASCII: only an SMTPUTF8 server may take it (RFC 6531).
    smtputf8: bool = False


@dataclass(frozen=True)
class Recipient:
    address: str  # the domain in IDNA A-labels
    name: str | None
    smtputf8: bool


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


def address_header(recipient: Recipient) -> str:
    """`name <address>`: the name quoted (ASCII) or as encoded words, never re-encoded with the address."""
    if not recipient.name:
        return f"<{recipient.address}>" if recipient.smtputf8 else recipient.address
    if recipient.name.isascii() and not recipient.smtputf8:
        return formataddr((recipient.name, recipient.address))  # quotes the name only where needed
    phrase = f'"{quote(recipient.name)}"' if recipient.name.isascii() else _encoded_words(recipient.name)
    # RFC 6532: with SMTPUTF8 the address itself is written as UTF-8.
    return f"{phrase}\r\n <{recipient.address}>" if len(phrase) > 60 else f"{phrase} <{recipient.address}>"


def header_text(value: str) -> str:
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
