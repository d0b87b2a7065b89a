"""Programmable failures and a request log for the stand-in services.

Tests make a service answer 503 twice, 429 with Retry-After, or stall past the
client's read timeout, and then count exactly which requests the client sent.
Both sit in one pure ASGI middleware in front of routing and auth, so an injected
503 is answered whatever the token, as a real overloaded proxy would.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter, deque
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class InjectedFault:
    """What the middleware does to one request."""

    status: int | None
    retry_after: float | None
    delay: float
    code: str
    # The request is handled first and only its answer replaced: the work is done but the
    # client sees a failure, as when a proxy loses a response.
    after_handling: bool = False


@dataclass
class _Rule:
    method: str
    path: str
    remaining: int
    fault: InjectedFault


class FaultInjector:
    """Faults for the next matching requests, consumed in the order they were added. Thread-safe."""

    def __init__(self) -> None:
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()

    def add(
        self,
        *,
        method: str,
        path: str,
        status: int | None = None,
        times: int = 1,
        retry_after: float | None = None,
        delay: float = 0.0,
        code: str = "injected_fault",
        after_handling: bool = False,
    ) -> None:
        """The next `times` requests to `method path` get `status` with a contract error body
        (after sleeping `delay`), or, with no status, are served normally after `delay` seconds.
        With `after_handling`, the service does the work and the answer is then lost."""
        if times < 1:
            raise ValueError("times must be at least 1")
        if status is None and delay <= 0:
            raise ValueError("a fault needs a status, a delay or both")
        if status is not None and not 400 <= status <= 599:
            raise ValueError("an injected status must be an error status (4xx or 5xx)")
        if after_handling and status is None:
            raise ValueError("a lost answer needs the status the client sees instead")
        with self._lock:
            self._rules.append(
                _Rule(method.upper(), path, times, InjectedFault(status, retry_after, delay, code, after_handling))
            )

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def remaining(self) -> int:
        """How many injected answers have not been used yet."""
        with self._lock:
            return sum(rule.remaining for rule in self._rules)

    def take(self, method: str, path: str) -> InjectedFault | None:
        """Use up one answer of the first fault matching this request, if any."""
        with self._lock:
            for rule in self._rules:
                if rule.method == method and rule.path == path:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return rule.fault
        return None


@dataclass(frozen=True)
class RequestRecord:
    """One request served. Whether it carried credentials is kept, never the credentials."""

    method: str
    path: str
    status: int
    request_id: str | None
    has_authorization: bool


class RequestLog:
    """Every request a service answered. Thread-safe.

    Counts are kept for the life of the log; individual records only for the last
    `max_entries`, so a long-running demo service does not grow without bound.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: deque[RequestRecord] = deque(maxlen=max_entries)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, entry: RequestRecord) -> None:
        with self._lock:
            self._entries.append(entry)
            self._counts[f"{entry.method} {entry.path}"] += 1

    @property
    def entries(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._entries)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """Requests served to `method` and/or `path` (all of them when neither is given)."""
        with self._lock:
            return sum(
                total
                for endpoint, total in self._counts.items()
                if (method is None or endpoint.split(" ", 1)[0] == method.upper())
                and (path is None or endpoint.split(" ", 1)[1] == path)
            )

    def counts(self) -> dict[str, int]:
        """Requests per endpoint, e.g. {"GET /v1/dues": 12}."""
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._counts.clear()


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def _discard(message: Message) -> None:
    """Swallows an answer that is to be lost."""


def _retry_after_value(seconds: float) -> str:
    # Whole seconds as HTTP defines Retry-After; fractions kept so tests can retry fast.
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


class InstrumentationMiddleware:
    """Applies injected faults, echoes X-Request-ID and logs every HTTP request (pure ASGI)."""

    def __init__(self, app: ASGIApp, *, faults: FaultInjector, request_log: RequestLog) -> None:
        self.app = app
        self.faults = faults
        self.request_log = request_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        raw_request_id = _header(scope, b"x-request-id")
        request_id = raw_request_id.decode("latin-1") if raw_request_id is not None else None
        status = 500  # what the client gets if the app raises before answering

        async def send_tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if raw_request_id is not None:
                    message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", raw_request_id)]}
            await send(message)

        try:
            fault = self.faults.take(method, path)
            if fault is not None and fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault is not None and fault.status is not None:
                if fault.after_handling:
                    await self.app(scope, receive, _discard)
                await self._send_fault(fault, send_tagged)
            else:
                await self.app(scope, receive, send_tagged)
        finally:
            self.request_log.record(
                RequestRecord(method, path, status, request_id, _header(scope, b"authorization") is not None)
            )

    @staticmethod
    async def _send_fault(fault: InjectedFault, send: Send) -> None:
        body = json.dumps({"error": {"code": fault.code, "message": f"injected fault: status {fault.status}"}}).encode()
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if fault.retry_after is not None:
            headers.append((b"retry-after", _retry_after_value(fault.retry_after).encode()))
        await send({"type": "http.response.start", "status": fault.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
