"""Text from outside (service answers, SMTP replies, record fields), made safe to print.

A service or mail server may be buggy or hostile: a newline in an error message forges
a log line, an ESC sequence rewrites the operator's terminal. Everything that comes
from outside passes through `printable` before it is logged, put in run metadata,
shown by `cron-pipelines audit` or mailed in an ops alert.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the
# bidirectional overrides and isolates that reorder what a reader sees.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
BIDI_CONTROLS = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
DEFAULT_LIMIT = 500


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """`value` as one line of visible text: control characters escaped (`\\x1b`), at most `limit` characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + f"… ({len(text) - limit} more characters)"
    return _UNPRINTABLE.sub(_escape, text)


def without_bidi_controls(text: str) -> str:
    """`text` without the bidirectional overrides and isolates that can disguise a name."""
    return BIDI_CONTROLS.sub("", text)


def as_markdown_block(text: str) -> str:
    """`text` in a fenced block longer than any run of backticks in it: shown, never interpreted."""
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"
