"""Messages per docs/services.md, The mail: headers, both parts, escaping, and refusal of unsafe recipients."""

from __future__ import annotations

import base64
import email
from datetime import date
from email import policy

import pytest
from email_validator import EmailNotValidError, validate_email

from cron_pipelines.delivery.channels.base import UnsendableNotification
from cron_pipelines.delivery.channels.email.composer import MessageComposer
from cron_pipelines.delivery.channels.email.mime import Recipient, check_recipient
from cron_pipelines.models.notification import Notification, NotificationKind

KIND_CONTEXTS = {
    NotificationKind.PAYMENT_REMINDER: {
        "amount_cents": 125000,
        "currency": "INR",
        "description": "Membership fee",
        "due_date": date(2026, 12, 5),
        "days_before": 7,
    },
    NotificationKind.OVERDUE_NOTICE: {
        "amount_cents": 125000,
        "currency": "INR",
        "description": "Membership fee",
        "due_date": date(2026, 11, 21),
        "days_past_due": 7,
    },
    NotificationKind.INACTIVITY_WARNING: {
        "last_active_date": date(2026, 10, 29),
        "deactivation_date": date(2027, 1, 27),
    },
    NotificationKind.ACCOUNT_DEACTIVATED: {"last_active_date": date(2026, 8, 30)},
    NotificationKind.VERIFICATION_RESULT: {"status": "verified", "requested_date": date(2026, 11, 20)},
    NotificationKind.VERIFICATION_REMINDER: {
        "days_since_request": 3,
        "requested_date": date(2026, 11, 25),
        "expiry_date": date(2026, 12, 9),
    },
    NotificationKind.OPS_ALERT: {
        "headline": "run failed",
        "summary": "A run failed.",
        "job_name": "send_payment_reminders",
        "partition_key": "2026-11-28",
        "run_id": "abc",
        "run_url": "http://localhost:3000/runs/abc",
        "error": "boom",
    },
}


@pytest.fixture(scope="module")
def composer() -> MessageComposer:
    return MessageComposer("Cron Pipelines <no-reply@example.com>")


def _notification(
    kind: NotificationKind,
    *,
    email_address: str | None = "asha@example.com",
    name: str | None = "Asha Rao",
    key: str | None = None,
    **context,
) -> Notification:
    return Notification(
        key=key or f"{kind.value}:x_1:2026-12-05:7",
        kind=kind,
        user_id="usr_1",
        address=email_address,
        name=name,
        context={**KIND_CONTEXTS[kind], **context},
    )


def _parse(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert not message.defects
    return message  # type: ignore[return-value]


@pytest.mark.parametrize("kind", list(NotificationKind))
def test_every_kind_renders_a_complete_message(composer: MessageComposer, kind: NotificationKind) -> None:
    notification = _notification(kind)
    outgoing = composer.compose(notification)
    message = _parse(outgoing.data)

    assert message["From"] == "Cron Pipelines <no-reply@example.com>"
    assert message["To"].addresses[0].addr_spec == "asha@example.com"
    assert message["To"].addresses[0].display_name == "Asha Rao"
    assert message["Subject"].strip()
    assert message["Date"].datetime is not None
    assert message["Message-ID"] == outgoing.message_id
    assert outgoing.message_id.endswith("@example.com>")
    assert message["X-Notification-Kind"] == kind.value
    assert message["X-Notification-Id"] == notification.key
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert notification.key in text and notification.key in html
    assert outgoing.recipient == "asha@example.com" and outgoing.sender == "no-reply@example.com"
    assert b"\r\n" in outgoing.data and b"\n" not in outgoing.data.replace(b"\r\n", b"")


def test_payment_reminder_wording_depends_on_days_before(composer: MessageComposer) -> None:
    today = _parse(composer.compose(_notification(NotificationKind.PAYMENT_REMINDER, days_before=0)).data)
    week = _parse(composer.compose(_notification(NotificationKind.PAYMENT_REMINDER, days_before=7)).data)
    one = _parse(composer.compose(_notification(NotificationKind.PAYMENT_REMINDER, days_before=1)).data)
    assert today["Subject"] == "Payment due today, December 5, 2026: ₹1,250.00"
    assert week["Subject"] == "Payment due in 7 days, December 5, 2026: ₹1,250.00"
    assert one["Subject"] == "Payment due in 1 day, December 5, 2026: ₹1,250.00"
    assert "is due today, December 5, 2026." in today.get_body(("plain",)).get_content()


def test_html_part_escapes_data_and_text_part_keeps_it(composer: MessageComposer) -> None:
    hostile = "<script>alert(1)</script> & Co"
    message = _parse(
        composer.compose(_notification(NotificationKind.PAYMENT_REMINDER, name=hostile, description="<b>fee</b>")).data
    )
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in html
    assert "&lt;b&gt;fee&lt;/b&gt;" in html
    assert f"Hello {hostile}," in text
    assert message["To"].addresses[0].display_name == hostile


def test_non_ascii_names_and_subjects_are_encoded(composer: MessageComposer) -> None:
    outgoing = composer.compose(
        _notification(NotificationKind.PAYMENT_REMINDER, name="Åsa Öberg, Jr.", amount_cents=1200, currency="EUR")
    )
    assert outgoing.data.isascii()
    message = _parse(outgoing.data)
    assert message["To"].addresses[0].display_name == "Åsa Öberg, Jr."
    assert message["Subject"] == "Payment due in 7 days, December 5, 2026: €12.00"
    assert "Hello Åsa Öberg, Jr.," in message.get_body(("plain",)).get_content()


def test_data_in_subject_cannot_inject_headers(composer: MessageComposer) -> None:
    outgoing = composer.compose(_notification(NotificationKind.OPS_ALERT, headline="failed\r\nBcc: victim@example.com"))
    message = _parse(outgoing.data)
    assert message["Bcc"] is None
    assert message["Subject"] == "[cron_pipelines] failed Bcc: victim@example.com: send_payment_reminders (2026-11-28)"


@pytest.mark.parametrize(
    ("email_address", "name", "reason"),
    [
        (None, "Asha", "missing e-mail address"),
        ("   ", "Asha", "missing e-mail address"),
        ("not-an-email", "Asha", "invalid e-mail address"),
        ("a@example.com\r\nBcc: victim@example.com", "Asha", "header injection"),
        ("a@example.com", "Eve\r\nBcc: victim@example.com", "header injection"),
        ("a@example.com", "Eve\nX-Evil: 1", "header injection"),
        ("a@example.com", "Eve\x00", "header injection"),
        ("two@example.com, three@example.com", "Asha", "invalid e-mail address"),
        ("Asha <a@example.com>", None, "invalid e-mail address"),
    ],
)
def test_unsafe_or_invalid_recipients_are_refused_with_a_reason(
    composer: MessageComposer, email_address: str | None, name: str | None, reason: str
) -> None:
    with pytest.raises(UnsendableNotification, match=reason):
        composer.compose(_notification(NotificationKind.PAYMENT_REMINDER, email_address=email_address, name=name))


def test_unsafe_idempotency_key_is_refused(composer: MessageComposer) -> None:
    with pytest.raises(UnsendableNotification, match="idempotency key"):
        composer.compose(_notification(NotificationKind.PAYMENT_REMINDER, key="payment_reminder:a\r\nBcc: x"))


def test_check_recipient_normalises_the_address() -> None:
    assert check_recipient(" asha@EXAMPLE.com ", "  Asha  ") == Recipient("asha@example.com", "Asha", smtputf8=False)
    assert check_recipient("asha@example.com", "") == Recipient("asha@example.com", None, smtputf8=False)


def test_an_internationalised_domain_is_written_as_idna_a_labels(composer: MessageComposer) -> None:
    outgoing = composer.compose(_notification(NotificationKind.PAYMENT_REMINDER, email_address="jose@ex\u00e4mple.com"))
    assert outgoing.recipient == "jose@xn--exmple-cua.com" and not outgoing.smtputf8
    assert _parse(outgoing.data)["To"].addresses[0].addr_spec == "jose@xn--exmple-cua.com"


def test_a_non_ascii_local_part_makes_an_smtputf8_message(composer: MessageComposer) -> None:
    outgoing = composer.compose(
        _notification(
            NotificationKind.PAYMENT_REMINDER, email_address="jos\u00e9@ex\u00e4mple.com", name="Jos\u00e9 P\u00e9rez"
        )
    )
    assert outgoing.smtputf8 and outgoing.recipient == "jos\u00e9@xn--exmple-cua.com"
    message = email.message_from_string(outgoing.data.decode("utf-8"), policy=policy.SMTPUTF8)
    assert not message.defects
    assert message["To"].addresses[0].addr_spec == "jos\u00e9@xn--exmple-cua.com"
    assert message["To"].addresses[0].display_name == "Jos\u00e9 P\u00e9rez"


def test_bidirectional_overrides_are_dropped_from_names_and_data(composer: MessageComposer) -> None:
    outgoing = composer.compose(
        _notification(NotificationKind.PAYMENT_REMINDER, name="Asha\u202egnp.exe", description="Fee\u2066 x\u2069")
    )
    message = _parse(outgoing.data)
    assert message["To"].addresses[0].display_name == "Ashagnp.exe"
    text = message.get_body(("plain",)).get_content()
    assert "Fee x" in text and not any(mark in text for mark in "\u202e\u2066\u2069")


def test_a_display_name_over_the_cap_is_refused(composer: MessageComposer) -> None:
    with pytest.raises(UnsendableNotification, match="longer than 200"):
        composer.compose(_notification(NotificationKind.PAYMENT_REMINDER, name="A" * 1_000_000))


def test_message_ids_are_unique(composer: MessageComposer) -> None:
    ids = {composer.compose(_notification(NotificationKind.PAYMENT_REMINDER)).message_id for _ in range(200)}
    assert len(ids) == 200


def test_bodies_are_base64_lines_of_76_and_each_message_has_its_own_boundary(composer: MessageComposer) -> None:
    notification = _notification(NotificationKind.PAYMENT_REMINDER, description="Membership fee, ₹ " * 20)
    messages = [composer.compose(notification).data for _ in range(100)]

    assert len({_parse(data).get_boundary() for data in messages}) == 100
    for data in messages:
        parsed = _parse(data)
        text = parsed.get_body(("plain",)).get_content()
        assert "Membership fee, ₹ " * 20 in text
        body_lines = data.split(b"\r\n\r\n", 1)[1].split(b"\r\n")
        encoded = [line for line in body_lines if line and not line.startswith((b"--", b"Content-"))]
        assert max(len(line) for line in encoded) == 76  # RFC 2045: at most 76, and full lines but the last
        assert base64.encodebytes(text.encode()).replace(b"\n", b"\r\n") in data


ADDRESS_CORPUS = [
    "asha@example.com", "Asha.Rao+dues@Example.COM", "a!#$%&'*+/=?^_`{|}~-@example.com", "x@sub.domain.example.org",
    ".asha@example.com", "asha.@example.com", "as..ha@example.com", "asha@", "@example.com", "asha@@example.com",
    "asha@localhost", "asha@example", "asha@example.local", "asha@example.test", "asha@invalid", "asha@-example.com",
    "asha@example-.com", "asha@exa_mple.com", "asha@123.123.123.123", "asha@[127.0.0.1]", '"asha rao"@example.com',
    "asha rao@example.com", "a" * 64 + "@example.com", "a" * 65 + "@example.com",
    "a@" + ".".join(["b" * 60] * 4) + ".com", "a" * 64 + "@" + ".".join(["b" * 61] * 3) + ".com",
    "josé@example.com", "asha@exämple.com", "asha@xn--exmple-cua.com", "asha@EXAMPLE.com", "ASHA@example.com",
    "asha@example.com.", "asha@.example.com", "asha@ex ample.com", "asha@example.c", "asha@example.123",
    # Short as `xn--` labels, too long in UTF-8: email_validator refuses both spellings.
    "a" * 7 + "@" + ".".join(["例" * 20] * 4) + ".com",
    "a" * 7 + "@" + ".".join([("例" * 20).encode("idna").decode()] * 4) + ".com",
]  # fmt: skip


@pytest.mark.parametrize("address", ADDRESS_CORPUS)
def test_the_recipient_check_gives_email_validators_verdict_and_normal_form(address: str) -> None:
    """The fast path for plain addresses is exactly as strict as email_validator, and normalises alike."""
    try:
        validated = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        with pytest.raises(UnsendableNotification, match="invalid e-mail address"):
            check_recipient(address, None)
    else:
        assert check_recipient(address, None).address == f"{validated.local_part}@{validated.ascii_domain}"


@pytest.mark.parametrize("address", ["asha@example.com", "jösé@example.com"])
def test_a_long_non_ascii_display_name_keeps_the_address_and_folds_the_header(
    composer: MessageComposer, address: str
) -> None:
    name = "\U0001d49c" * 190  # 4 bytes each in UTF-8: over 900 characters once encoded
    outgoing = composer.compose(_notification(NotificationKind.PAYMENT_REMINDER, email_address=address, name=name))

    message = email.message_from_string(outgoing.data.decode("utf-8"), policy=policy.strict)  # UTF-8: RFC 6532
    assert not message.defects
    assert message["To"].addresses[0].addr_spec == address
    # The stdlib's address parser keeps the folding space between encoded words, which RFC 2047
    # says to drop (it does the same with email.header's own output): compare without spaces.
    assert message["To"].addresses[0].display_name.replace(" ", "") == name
    head = outgoing.data.split(b"\r\n\r\n", 1)[0]
    assert b"\n" not in head.replace(b"\r\n", b"")  # no bare LF
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
