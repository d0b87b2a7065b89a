"""A real HTTP server on loopback that takes webhook posts, as Slack's incoming webhooks do, or misbehaves.

It keeps each post's headers and body, answers with a status of the test's choosing, and
can be slow, trickle its answer, or answer with a body far larger than anyone should read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def signed_with(self, secret: str) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-signature-256", ""), expected)


@dataclass
class WebhookReceiver:
    status: int = 200
    answer: bytes = b"ok"
    delay: float = 0.0  # before answering
    trickle: bool = False  # the answer one byte a second
    posts: list[Post] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/services/T000/B000/secret-token") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self) -> list[Post]:
        with self._lock:
            return list(self.posts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    receiver: WebhookReceiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        receiver = self.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with receiver._lock:
            receiver.posts.append(Post(self.path, {name.lower(): value for name, value in self.headers.items()}, body))
        time.sleep(receiver.delay)
        self.send_response(receiver.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(receiver.answer)))
        self.end_headers()
        try:
            if receiver.trickle:
                for index in range(len(receiver.answer)):
                    self.wfile.write(receiver.answer[index : index + 1])
                    self.wfile.flush()
                    time.sleep(1.0)
            else:
                self.wfile.write(receiver.answer)
        except OSError:  # the client gave up, as it should
            pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@contextmanager
def receiving(receiver: WebhookReceiver) -> Iterator[WebhookReceiver]:
    server = _QuietServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"receiver": receiver}))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
