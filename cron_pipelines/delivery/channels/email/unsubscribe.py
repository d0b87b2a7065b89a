"""One-click unsubscribe (RFC 8058; docs/services.md, "Recipients"): the signed token in each
optional email's `List-Unsubscribe` link, and the small ASGI app that honours it.

The token is a compact JWS (HS256) naming the user and the kind, for audience `unsubscribe`,
valid at most 90 days. Whoever serves UNSUBSCRIBE_BASE_URL verifies it and records the opt-out
with mongo-service; `unsubscribe_app` does exactly that and can be mounted by the platform's
own web server, or served alone (`cron-pipelines unsubscribe-server`).
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import anyio.to_thread
import jwt

from cron_pipelines.models.notification import is_optional
from cron_pipelines.models.payloads import OptOut, OptOutResult, format_instant
from cron_pipelines.safe_text import printable

AUDIENCE = "unsubscribe"
MAX_LIFETIME = timedelta(days=90)
MAX_TOKEN_CHARACTERS = 2048
MAX_FORM_BYTES = 8192


class InvalidUnsubscribeToken(ValueError):
    """Expired, tampered, for another audience or issuer, or not a token at all."""


@dataclass(frozen=True)
class UnsubscribeTokens:
    signing_key: str
    issuer: str
    lifetime: timedelta = MAX_LIFETIME

    def __post_init__(self) -> None:
        if not timedelta(0) < self.lifetime <= MAX_LIFETIME:
            raise ValueError("an unsubscribe token lives at most 90 days")

    def mint(self, user_id: str, kind: str, now: datetime | None = None) -> str:
        issued = now or datetime.now(UTC)
        claims = {
            "sub": user_id,
            "kind": kind,
            "iss": self.issuer,
            "aud": AUDIENCE,
            "iat": int(issued.timestamp()),
            "exp": int((issued + self.lifetime).timestamp()),
        }
        return jwt.encode(claims, self.signing_key, algorithm="HS256")

    def verify(self, token: str) -> tuple[str, str]:
        """The (user_id, kind) the token was minted for, or InvalidUnsubscribeToken."""
        if not token or len(token) > MAX_TOKEN_CHARACTERS:
            raise InvalidUnsubscribeToken("no token, or an oversized one")
        try:
            claims = jwt.decode(
                token,
                self.signing_key,
                algorithms=["HS256"],
                audience=AUDIENCE,
                issuer=self.issuer,
                options={"require": ["sub", "kind", "iss", "aud", "iat", "exp"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidUnsubscribeToken(printable(str(exc), 120)) from None
        if claims["exp"] - claims["iat"] > MAX_LIFETIME.total_seconds():
            raise InvalidUnsubscribeToken("token lives longer than 90 days")
        user_id, kind = claims["sub"], claims["kind"]
        if not isinstance(user_id, str) or not isinstance(kind, str) or not is_optional(kind):
            raise InvalidUnsubscribeToken("token names no optional kind of mail")
        return user_id, kind


@dataclass(frozen=True)
class UnsubscribeLinks:
    """The `List-Unsubscribe` URL of an optional email: the base URL with a fresh token."""

    base_url: str
    tokens: UnsubscribeTokens

    def url(self, user_id: str, kind: str) -> str:
        parts = urlsplit(self.base_url)
        query = "&".join(part for part in (parts.query, urlencode({"token": self.tokens.mint(user_id, kind)})) if part)
        return urlunsplit(parts._replace(query=query))


# -- the endpoint ------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RecordOptOut = Callable[[OptOut], OptOutResult]

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>{title}</title></head>
<body style="font-family: Arial, Helvetica, sans-serif; max-width: 480px; margin: 48px auto;">
<h1 style="font-size: 20px;">{title}</h1>{body}</body></html>"""


def unsubscribe_app(tokens: UnsubscribeTokens, record_opt_out: RecordOptOut) -> Callable[..., Awaitable[None]]:
    """An ASGI app: `POST ?token=…` (RFC 8058 one-click, or the confirmation form) records the
    opt-out; `GET ?token=…` shows a page whose button posts. Mail clients and link scanners
    fetch links with GET, so GET never changes anything."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method not in ("GET", "POST"):
            await _respond(send, 405, "Not allowed", "<p>Use the link in the email.</p>", allow="GET, POST")
            return
        token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        if method == "POST" and not token:
            token = parse_qs((await _read_body(receive)).decode("latin-1")).get("token", [""])[0]
        try:
            user_id, kind = tokens.verify(token)
        except InvalidUnsubscribeToken:
            await _respond(send, 400, "This link is not valid", "<p>It may have expired. Use a newer email.</p>")
            return
        label = html.escape(kind.replace("_", " "))
        if method == "GET":
            form = (
                f"<p>Stop receiving {label} emails?</p>"
                f'<form method="post"><input type="hidden" name="token" value="{html.escape(token)}">'
                '<button type="submit">Unsubscribe</button></form>'
            )
            await _respond(send, 200, "Unsubscribe", form)
            return
        opt_out = OptOut(user_id=user_id, kind=kind, source="list-unsubscribe", at=format_instant(datetime.now(UTC)))
        try:
            result = await anyio.to_thread.run_sync(record_opt_out, opt_out)
        except Exception:  # the service is down: say so, so the user (or mail client) tries later
            await _respond(send, 503, "Please try again later", "<p>We could not record your choice.</p>")
            return
        if result.outcome == "not_found":
            await _respond(send, 404, "Unknown recipient", "<p>We do not know this address any more.</p>")
            return
        await _respond(send, 200, "You are unsubscribed", f"<p>You will receive no more {label} emails.</p>")

    return app


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if len(body) > MAX_FORM_BYTES:
            return b""
        if not message.get("more_body"):
            return body


async def _respond(send: Send, status: int, title: str, body: str, **headers: str) -> None:
    page = _PAGE.format(title=html.escape(title), body=body).encode()
    raw_headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(page)).encode()),
        (b"cache-control", b"no-store"),
        (b"referrer-policy", b"no-referrer"),
        *((name.encode(), value.encode()) for name, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": page})
