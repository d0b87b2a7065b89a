"""The reader's language and time zone (docs/services.md, "Recipients").

Both are optional on user records (contract v1.1). A value a service sends that is
unknown or malformed is not an error: the reader gets `en` and CRON_TIMEZONE, as
from a v1.0 service, so one odd field never costs anyone their email.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated
from zoneinfo import ZoneInfo

from babel import Locale
from pydantic import BeforeValidator

# BCP 47 as services write it (`de-DE`), or Babel's own form (`de_DE`); bounded, so a
# hostile string never reaches the parser.
_LOCALE_TAG = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8}){0,4}")
_TIMEZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]{0,31}(?:/[A-Za-z0-9_+\-]{1,32}){0,2}")


@lru_cache(maxsize=1024)
def known_locale(tag: str) -> str | None:
    """Babel's identifier for a locale it knows (`de-DE` → `de_DE`), else None."""
    if not _LOCALE_TAG.fullmatch(tag):
        return None
    try:
        return str(Locale.parse(tag.replace("_", "-"), sep="-"))
    except Exception:  # UnknownLocaleError, ValueError: Babel's verdict on an unknown tag
        return None


@lru_cache(maxsize=1024)
def known_timezone(name: str) -> str | None:
    """`name` if it is an IANA time zone this machine knows, else None."""
    if not _TIMEZONE_NAME.fullmatch(name):
        return None
    try:
        ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError
        return None
    return name


def _known_locale_or_none(value: object) -> str | None:
    return known_locale(value) if isinstance(value, str) else None


def _known_timezone_or_none(value: object) -> str | None:
    return known_timezone(value) if isinstance(value, str) else None


# Field types for service payloads: the known value, or None for anything else.
LocaleTag = Annotated[str | None, BeforeValidator(_known_locale_or_none)]
TimezoneName = Annotated[str | None, BeforeValidator(_known_timezone_or_none)]
