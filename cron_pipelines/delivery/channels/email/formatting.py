"""Numbers, amounts, dates and day counts in the reader's locale, all by Babel (CLDR data).

Templates use them as Jinja filters; the locale comes from the render context, so a
template never formats anything by hand: `{{ amount_cents | money(currency) }}`,
`{{ due_date | long_date }}`, `{{ days_before | days }}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

from babel.dates import format_date
from babel.lists import format_list
from babel.numbers import format_currency, get_currency_precision
from babel.units import format_unit
from jinja2 import pass_context
from jinja2.runtime import Context

# The locale every template falls back to, and the languages with their own templates.
DEFAULT_LOCALE = "en"
TEMPLATE_LANGUAGES = ("en", "de")


# Babel takes tens of microseconds per figure, and a run repeats few of them (fee amounts, a
# handful of due dates and day counts): each is formatted once per locale and then looked up.
@lru_cache(maxsize=65_536)
def money(amount_cents: int, currency: str, locale: str) -> str:
    """An amount in minor units as the reader writes it: `₹1,25,000.00` (en_IN), `1.250,00 €` (de_DE)."""
    return format_currency(Decimal(amount_cents).scaleb(-get_currency_precision(currency)), currency, locale=locale)


def long_date(day: date | str, locale: str) -> str:
    """`5 December 2026` (en_IN), `December 5, 2026` (en), `5. Dezember 2026` (de).

    Takes the ISO form too: a confirmation resent from its ledger record has its dates as JSON.
    """
    return _long_date(date.fromisoformat(day) if isinstance(day, str) else day, locale)


@lru_cache(maxsize=4096)
def _long_date(day: date, locale: str) -> str:
    return format_date(day, format="long", locale=locale)


@lru_cache(maxsize=4096)
def days(count: int, locale: str) -> str:
    """A number of days with its unit: `1 day`, `3 days`, `3 Tage`."""
    return format_unit(count, "duration-day", locale=locale)


def money_list(totals: Sequence[Mapping[str, Any]], locale: str) -> str:
    """Totals per currency as one phrase: `₹1,250.00 and $40.00`, `1.250,00 € und 40,00 $`."""
    return format_list([money(total["amount_cents"], total["currency"], locale) for total in totals], locale=locale)


def _with_reader_locale(format_value: Callable[..., str]) -> Callable[..., str]:
    @pass_context
    def jinja_filter(context: Context, value: Any, *args: Any) -> str:
        # Positional: the cached formatters build their cache keys faster without keywords.
        return format_value(value, *args, context["locale"])

    return jinja_filter


JINJA_FILTERS: Mapping[str, Callable[..., str]] = {
    "money": _with_reader_locale(money),
    "long_date": _with_reader_locale(long_date),
    "days": _with_reader_locale(days),
    "money_list": _with_reader_locale(money_list),
}
