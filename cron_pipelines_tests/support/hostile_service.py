"""A buggy or hostile sql-service on loopback: `GET /v1/dues` answers in one chosen bad way.

It serves a list of dues like the stand-in does (pages of `limit`, an opaque cursor),
but a `mode` makes it misbehave the way a broken or compromised upstream would. It
does not check tokens: what is tested is what the client does with the answers.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

MODES = (
    "honest",
    "repeated_item",  # the first item appears twice on the first page
    "overlapping_pages",  # every page starts with the last item of the page before
    "cursor_to_start",  # the last page points back to the first
    "cursor_cycle",  # two cursors that point at each other
    "oversized_page",  # every item on one page, however many
    "gzip_bomb",  # 1 MB of gzip that inflates to 1 GiB
    "trickle",  # one byte a second
    "deep_json",  # 200,000 nested arrays
    "invalid_utf8",
    "wrong_content_type",
    "redirect",
    "hostile_error",  # a 400 whose error message carries a newline, a fake log line and ANSI codes
    "fresh_cursor_same_items",  # every page the first page again, each with a cursor never seen before
    "throttle",  # 429 with Retry-After: 999999 to every request, forever
)
HOSTILE_TEXT = "bad\n2026-11-30 12:00:00 INFO all good, nothing to see\x1b[2J\x1b[31m"


@cache
def gzip_bomb() -> bytes:
    """About 1 MB of gzip that inflates to 1 GiB of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(1024)]
    parts.append(compressor.flush())
    return b"".join(parts)


def due_item(due_id: str, *, user_id: str | None = None, due_date: str = "2026-12-01", **user: Any) -> dict[str, Any]:
    user_id = user_id or f"usr_{due_id}"
    return {
        "id": due_id,
        "user_id": user_id,
        "amount_cents": 125000,
        "currency": "INR",
        "due_date": due_date,
        "status": "pending",
        "description": "Membership fee",
        "user": {"id": user_id, "email": f"{user_id}@example.com", "full_name": "Asha Rao", **user},
    }


@dataclass
class HostileService:
    mode: str = "honest"
    items: list[dict[str, Any]] = field(default_factory=list)
    # A server may serve smaller pages than asked for (the contract allows it).
    page_size: int = 1000
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def page(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """The items of one page and its next cursor, as this mode would answer."""
        items = self.items
        if self.mode == "oversized_page":
            return items, None
        limit = min(limit, self.page_size)
        if self.mode == "fresh_cursor_same_items":
            return items[:limit], str(offset + 1)
        page = items[offset : offset + limit]
        if self.mode == "repeated_item" and offset == 0 and page:
            page = [page[0], *page]
        following = offset + limit
        if self.mode == "overlapping_pages":
            following -= 1
        if following >= len(items):
            following_cursor = {"cursor_to_start": "0", "cursor_cycle": str(max(offset - limit, 0))}.get(self.mode)
            return page, following_cursor
        if self.mode == "cursor_cycle" and offset > 0:
            return page, str(offset - limit)
        return page, str(following)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service: HostileService

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        service = self.service
        url = urlparse(self.path)
        service.requests.append(self.path)
        if url.path != "/v1/dues":
            self._send(404, b'{"error": {"code": "not_found", "message": "no such route"}}')
            return
        query = parse_qs(url.query)
        limit = int(query.get("limit", ["100"])[0])
        offset = int(query.get("cursor", ["0"])[0])
        mode = service.mode
        if mode == "gzip_bomb":
            self._send(200, gzip_bomb(), {"Content-Encoding": "gzip"})
        elif mode == "trickle":
            self._trickle(b'{"items": [], "next_cursor": null}' + b" " * 100)
        elif mode == "deep_json":
            self._send(200, b"[" * 200_000 + b"]" * 200_000)
        elif mode == "invalid_utf8":
            self._send(200, b'{"items": [], "next_cursor": "\xff\xfe"}')
        elif mode == "wrong_content_type":
            self._send(200, b"<html>maintenance</html>", {"Content-Type": "text/html"})
        elif mode == "hostile_error":
            body = {"error": {"code": "bad\x1b[0m", "message": HOSTILE_TEXT}}
            self._send(400, json.dumps(body).encode())
        elif mode == "redirect":
            self._send(302, b"", {"Location": "http://evil.example/v1/dues"})
        elif mode == "throttle":
            body = b'{"error": {"code": "rate_limited", "message": "slow down"}}'
            self._send(429, body, {"Retry-After": "999999"})
        else:
            items, cursor = service.page(offset, limit)
            self._send(200, json.dumps({"items": items, "next_cursor": cursor}).encode())

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for index in range(len(body)):
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:  # the client gave up: what is being tested
            pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-answer is what these tests provoke


@contextmanager
def serving(service: HostileService) -> Iterator[HostileService]:
    handler = type("Handler", (_Handler,), {"service": service})
    server = _QuietServer((service.host, service.port), handler)
    server.daemon_threads = True
    service.port = server.server_address[1]
    service._server = server
    thread = threading.Thread(target=server.serve_forever, name="hostile-service", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
