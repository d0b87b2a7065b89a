"""The reader's language: every template in every shipped language, Babel's figures, the fallback
chain, and what a service's odd locale or time zone turns into."""

from __future__ import annotations

import dataclasses
import email
from datetime import date
from email import policy
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from cron_pipelines.delivery.channels.email.composer import MessageComposer
from cron_pipelines.delivery.channels.email.formatting import TEMPLATE_LANGUAGES, days, long_date, money, money_list
from cron_pipelines.delivery.channels.email.unsubscribe import UnsubscribeLinks, UnsubscribeTokens
from cron_pipelines.models.notification import DIGEST_KINDS, NotificationKind
from cron_pipelines.models.payloads import DueUser
from cron_pipelines.models.reader import LocaleTag, TimezoneName
from cron_pipelines.rules.samples import sample_notifications

TEMPLATES = Path(__file__).resolve().parents[4] / "cron_pipelines" / "delivery" / "channels" / "email" / "templates"
LOCALES = ("en", "en_IN", "en_US", "de", "de_DE", "de_AT")
DAY = date(2026, 11, 28)


@pytest.fixture(scope="module")
def composer() -> MessageComposer:
    tokens = UnsubscribeTokens(signing_key="k" * 40, issuer="cron-pipelines")
    return MessageComposer("Cron Pipelines <no-reply@example.com>", UnsubscribeLinks("https://example.com/u", tokens))


def _strictly_parsed(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=policy.strict)
    assert not message.defects
    return message  # type: ignore[return-value]


def test_every_language_ships_every_template_the_english_one_has() -> None:
    english = sorted(path.relative_to(TEMPLATES / "en") for path in (TEMPLATES / "en").rglob("*") if path.is_file())
    for language in TEMPLATE_LANGUAGES:
        shipped = sorted(
            path.relative_to(TEMPLATES / language) for path in (TEMPLATES / language).rglob("*") if path.is_file()
        )
        assert shipped == english, language


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", list(NotificationKind))
def test_every_template_renders_in_every_locale_strictly(
    composer: MessageComposer, kind: NotificationKind, locale: str
) -> None:
    # StrictUndefined (the composer's setting): a variable missing from the context raises.
    notification = dataclasses.replace(sample_notifications(DAY)[kind], locale=locale)
    message = _strictly_parsed(composer.compose(notification).data)

    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert notification.key in text and notification.key in html
    assert str(message["Subject"]).strip()
    language = locale.partition("_")[0]
    assert f'<html lang="{language}">' in html
    if kind in DIGEST_KINDS:
        digest = [
            dataclasses.replace(notification, key=f"{notification.key}:{n}", context={**notification.context})
            for n in range(3)
        ]
        digest_message = _strictly_parsed(composer.compose_digest(digest).data)
        assert digest_message.get_all("X-Notification-Id") == [item.key for item in digest]
        assert digest_message["List-Unsubscribe"] is not None


def test_en_in_and_de_de_get_their_own_figures(composer: MessageComposer) -> None:
    reminder = sample_notifications(DAY)[NotificationKind.PAYMENT_REMINDER]  # ₹1,25,000.00, due 2026-12-01

    indian = _strictly_parsed(composer.compose(dataclasses.replace(reminder, locale="en_IN")).data)
    german = _strictly_parsed(
        composer.compose(
            dataclasses.replace(reminder, locale="de_DE", context={**reminder.context, "currency": "EUR"})
        ).data
    )

    assert indian["Subject"] == "Payment due in 3 days, 1 December 2026: ₹1,25,000.00"
    assert german["Subject"] == "Zahlung fällig am 1. Dezember 2026 (noch 3 Tage): 125.000,00\u00a0€"
    assert "Ihre Zahlung über 125.000,00\u00a0€ für Annual membership fee ist am 1. Dezember 2026 fällig" in (
        german.get_body(("plain",)).get_content()
    )


@pytest.mark.parametrize(
    ("locale", "expected_language"),
    [("de_AT", "de"), ("de", "de"), ("fr_FR", "en"), ("en_IN", "en"), (None, "en")],
)
def test_a_locale_without_templates_falls_back_to_its_language_then_english(
    composer: MessageComposer, locale: str | None, expected_language: str
) -> None:
    warning = dataclasses.replace(sample_notifications(DAY)[NotificationKind.INACTIVITY_WARNING], locale=locale)

    html = _strictly_parsed(composer.compose(warning).data).get_body(("html",)).get_content()

    assert f'<html lang="{expected_language}">' in html


def test_a_language_without_templates_gets_english_words_and_english_figures(composer: MessageComposer) -> None:
    reminder = sample_notifications(DAY)[NotificationKind.PAYMENT_REMINDER]

    message = _strictly_parsed(composer.compose(dataclasses.replace(reminder, locale="fr_FR")).data)

    # Not "in 3 jours, 1 décembre": one email speaks one language.
    assert message["Subject"] == "Payment due in 3 days, December 1, 2026: ₹125,000.00"


@pytest.mark.parametrize(
    ("amount_cents", "currency", "locale", "expected"),
    [
        (125_000_00, "INR", "en_IN", "₹1,25,000.00"),
        (1_250_00, "EUR", "de_DE", "1.250,00\u00a0€"),
        (1_250_00, "USD", "en", "$1,250.00"),
        (1500, "JPY", "en", "¥1,500"),  # no minor unit: 1500 yen
        (-125050, "INR", "en", "-₹1,250.50"),
        (5, "KWD", "en", "KWD0.005"),  # three decimals
    ],
)
def test_money_is_babels_currency_format(amount_cents: int, currency: str, locale: str, expected: str) -> None:
    assert money(amount_cents, currency, locale) == expected


def test_dates_day_counts_and_totals_follow_the_locale() -> None:
    assert long_date(date(2026, 12, 5), "en_IN") == "5 December 2026"
    assert long_date("2026-12-05", "de_DE") == "5. Dezember 2026"  # the ISO form a ledger record holds
    assert (days(1, "en"), days(3, "en"), days(1, "de"), days(3, "de")) == ("1 day", "3 days", "1 Tag", "3 Tage")
    totals = [{"currency": "EUR", "amount_cents": 4000}, {"currency": "INR", "amount_cents": 375000}]
    assert money_list(totals, "de_DE") == "40,00\u00a0€ und 3.750,00\u00a0₹"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("de-DE", "de_DE"),
        ("en-IN", "en_IN"),
        ("de_DE", "de_DE"),
        ("xx-QQ", None),  # well formed, unknown
        ("../../etc/passwd", None),
        ("de-DE\r\nBcc: x", None),
        ("a" * 10_000, None),
        ("", None),
        (42, None),
        (None, None),
    ],
)
def test_an_unknown_or_malformed_locale_is_none_so_the_reader_gets_english(value: object, expected: str) -> None:
    assert TypeAdapter(LocaleTag).validate_python(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
        ("Mars/Olympus_Mons", None),
        ("../../etc/passwd", None),
        ("/etc/localtime", None),
        ("Europe/" + "B" * 5000, None),
        (["Europe/Berlin"], None),
    ],
)
def test_an_unknown_or_malformed_time_zone_is_none_so_the_business_one_applies(value: object, expected: str) -> None:
    assert TypeAdapter(TimezoneName).validate_python(value) == expected


def test_a_v1_0_user_without_the_fields_validates_with_none() -> None:
    reader = DueUser.model_validate({"id": "usr_1", "email": "a@example.com"})

    assert (reader.locale, reader.timezone) == (None, None)
