"""The one HTTP client core behind both internal services.

A pooled keep-alive httpx client that signs each request with the service's JWT,
tags it with a fresh X-Request-ID, retries transient failures with exponential
backoff and jitter (honouring Retry-After), streams paginated lists page by page
and writes batches in chunks the contract allows.

Nothing a service sends is trusted (docs/services.md, "Untrusted answers"): every
request has one deadline for connect, headers and body; a body is read as a stream
with a cap on its decompressed size; only UTF-8 JSON of bounded depth is decoded;
a page larger than asked for, or a cursor already followed, is a protocol error.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import itertools
import json
import logging
import random
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import httpcore
import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from cron_pipelines.batching import chunked
from cron_pipelines.clients.errors import (
    ServiceAuthError,
    ServiceBudgetExhausted,
    ServiceError,
    ServiceProtocolError,
    ServiceRequestError,
    ServiceUnavailable,
)
from cron_pipelines.clients.tokens import TokenIssuer
from cron_pipelines.clients.transport import DeadlineTransport, current_deadline
from cron_pipelines.log_format import request_log
from cron_pipelines.models.payloads import KeyedModel
from cron_pipelines.models.records import InvalidRecord, describe_validation_error
from cron_pipelines.safe_text import printable

logger = logging.getLogger("cron_pipelines.clients")

TRANSIENT_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
MAX_BATCH_ITEMS = 500
MAX_PAGE_SIZE = 1000
# The largest legitimate answer is a page of 1,000 records or 500 claim results, each
# record a few kilobytes at most (ids, names and metadata are capped): 16 MiB is
# several times that, and small next to a run worker's memory.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# An error body is only read for its message.
MAX_ERROR_BODY_BYTES = 16 * 1024
# A cursor is opaque but not unbounded; a longer one is a protocol violation.
MAX_CURSOR_CHARACTERS = 2048
# The most pages one listing may take (SERVICE_MAX_PAGES): a day of 1,000,000 records at the
# contract's default page size of 100, ten times the largest day this project is built for.
DEFAULT_MAX_PAGES = 10_000
# Pages in a row that add no item the last few pages did not have: a service handing out fresh
# cursors over the same items would otherwise be followed forever.
MAX_STALLED_PAGES = 3

M = TypeVar("M", bound=BaseModel)
Item = TypeVar("Item", bound=KeyedModel)
Result = TypeVar("Result", bound=KeyedModel)


@functools.lru_cache(maxsize=64)
@functools.cache
def _list_of(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    """One pydantic-core call for a whole batch, each way: the per-item Python calls cost more.

    Built once per model: building an adapter costs as much as validating 100 results."""
    return TypeAdapter(list[model])  # type: ignore[valid-type]


@dataclass(frozen=True)
class Backoff:
    """How transient failures are retried: `max_attempts` tries in all, delays growing
    exponentially from `base_delay` up to `max_delay`, with jitter so that many
    clients do not retry in step; a server's Retry-After wins, up to `max_retry_after`."""

    max_attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 10.0
    max_retry_after: float = 60.0

    def delay(self, retry_number: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * 2**retry_number)
        # "Equal jitter": never less than half the exponential step, never in lockstep.
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


@dataclass
class ClientStats:
    """What a client did, for run metadata and the benchmark."""

    requests: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    invalid_records: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def count_invalid(self) -> None:
        with self._lock:
            self.invalid_records += 1


class ServiceBudget:
    """The time one step may lose to failing service calls, shared by its clients (SERVICE_STEP_DEADLINE_SECONDS).

    Failed tries (timeouts, 408/429/5xx, dropped connections) and the waits between them are
    charged; answered requests are not, so a large day over a slow network is never cut short.
    Once it is spent, the next try or wait raises ServiceBudgetExhausted instead.
    """

    def __init__(self, seconds: float, *, spent: float = 0.0) -> None:
        self.seconds = seconds
        self._spent = spent
        self._lock = threading.Lock()

    @property
    def spent(self) -> float:
        return self._spent

    def remaining(self) -> float:
        return self.seconds - self._spent

    def charge(self, seconds: float) -> None:
        with self._lock:
            self._spent += seconds


@dataclass(frozen=True)
class Reply:
    """A 2xx answer's decoded body, and how many times the request was sent to get it.

    `attempts > 1` means an earlier try may have been handled with its answer lost."""

    body: Any
    attempts: int


@dataclass(frozen=True)
class BatchReply(Generic[Result]):
    """One result per item of a batch write, in order."""

    results: list[Result]
    attempts: int


class RequestObserver(Protocol):
    """Receives every request's result (metrics); see cron_pipelines.resources.metrics."""

    def request_finished(self, *, service: str, endpoint: str, status: str, seconds: float) -> None: ...

    def request_retried(self, *, service: str, endpoint: str) -> None: ...


# -- reading an answer ---------------------------------------------------------------


class _TooLarge(Exception):
    pass


def _read_body(response: httpx.Response, cap: int) -> bytes:
    """The decoded body, read as a stream; _TooLarge as soon as it (decompressed) passes `cap` bytes."""
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _TooLarge()
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding == "gzip":
        decompressor: Any = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decompressor = zlib.decompressobj()
    elif encoding in ("identity", ""):
        decompressor = None
    else:
        raise ValueError(f"unsupported Content-Encoding {printable(encoding, 40)!r}")
    body = bytearray()
    for chunk in response.iter_raw():
        data = chunk
        while data:
            if decompressor is None:
                out, data = data, b""
            else:
                # Never inflate more than the cap allows: a small bomb cannot grow past it.
                out = decompressor.decompress(data, cap + 1 - len(body))
                data = decompressor.unconsumed_tail
            body += out
            if len(body) > cap:
                raise _TooLarge()
    return bytes(body)


def _decode_json(body: bytes) -> Any:
    """JSON from UTF-8 bytes; ValueError naming what is wrong (encoding, syntax, depth)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"answer is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("answer nests JSON too deeply") from None
    except ValueError as exc:
        raise ValueError(f"answer is not JSON ({printable(exc, 120)})") from None


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_code_and_message(response: httpx.Response) -> tuple[str | None, str]:
    """The contract's error code and message, made printable; or a snippet of whatever came."""
    try:
        body = _read_body(response, MAX_ERROR_BODY_BYTES)
    except (
        _TooLarge,
        ValueError,
        httpx.HTTPError,
        httpcore.TimeoutException,
        httpcore.NetworkError,
        httpcore.ProtocolError,
    ):
        return None, response.reason_phrase or "unreadable error body"
    try:
        error = _decode_json(body)["error"]
        return printable(error["code"], 80), printable(error["message"], 300)
    except (ValueError, KeyError, TypeError):
        return None, printable(body[:200].decode("utf-8", "replace") or response.reason_phrase or "no body", 200)


@dataclass
class _Attempt:
    """What one try of a request came to."""

    status_label: str  # the HTTP status, or `timeout` / `connection_error`
    body: Any = None  # the decoded JSON of a 2xx answer
    failure: str = ""
    status: int | None = None
    code: str | None = None
    retry_after: float | None = None


class ServiceClient:
    """HTTP access to one internal service (`service` is also the JWT audience)."""

    def __init__(
        self,
        *,
        service: str,
        base_url: str,
        issuer: TokenIssuer,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        request_deadline: float = 60.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        backoff: Backoff = Backoff(),
        page_size: int = MAX_PAGE_SIZE,
        max_connections: int = 8,
        max_pages: int = DEFAULT_MAX_PAGES,
        budget: ServiceBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
        self.service = service
        self.page_size = page_size
        self.max_pages = max_pages
        # Shared with the step's other clients; a new step sets its own (cron_pipelines.defs.delivery).
        self.budget = budget or ServiceBudget(float("inf"))
        self.stats = ClientStats()
        self.observer: RequestObserver | None = None
        # The run using this client (run_id, job, partition), on every request-log line.
        self.log_context: dict[str, str] = {}
        self._request_log = request_log()
        self._issuer = issuer
        self._backoff = backoff
        self._sleep = sleep
        self._request_deadline = request_deadline
        self._max_response_bytes = max_response_bytes
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=DeadlineTransport(max_connections),
            # gzip only: it is the one encoding whose inflated size is capped while reading.
            headers={"User-Agent": "cron-pipelines", "Accept": "application/json", "Accept-Encoding": "gzip"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- single requests ---------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        json_bytes: bytes | None = None,
    ) -> Reply:
        """Send one request, retrying transient failures; the decoded JSON body of its 2xx answer.

        The body is `json_body` as JSON, or `json_bytes` already serialized (a batch of models).
        """
        endpoint = f"{method} {path}"
        content = json_bytes
        if content is None and json_body is not None:
            content = json.dumps(json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        attempt = _Attempt("none", failure="no attempt made")
        request_id = ""
        for number in range(1, self._backoff.max_attempts + 1):
            # A try is never cut short by the budget (an answer may still come): it may overrun it by one deadline.
            if self.budget.remaining() <= 0:
                raise self._budget_exhausted(method, path, attempt, request_id, number - 1)
            request_id = uuid.uuid4().hex
            self.stats.count_request(endpoint)
            started = time.perf_counter()
            try:
                attempt = self._try(method, path, params, content, request_id)
            except ServiceProtocolError as exc:
                self._log_request(
                    self._context(method, path, str(exc.status), request_id, number, started), "protocol_error"
                )
                raise
            context = self._context(method, path, attempt.status_label, request_id, number, started)
            elapsed = context["elapsed_ms"] / 1000
            if self.observer is not None:
                self.observer.request_finished(
                    service=self.service, endpoint=endpoint, status=attempt.status_label, seconds=elapsed
                )
            if attempt.status is not None and 200 <= attempt.status < 300:
                self._log_request(context, "ok")
                return Reply(attempt.body, number)
            if attempt.status is not None and attempt.status not in TRANSIENT_STATUSES:
                raise self._refusal(attempt, context, number)
            self.budget.charge(elapsed)
            if number == self._backoff.max_attempts:
                self._log_request(context, "gave_up")
                logger.error(
                    "%s %s gave up after %d attempts (status=%s, %s) request_id=%s",
                    self.service,
                    endpoint,
                    number,
                    attempt.status,
                    attempt.failure,
                    request_id,
                    extra={**context, "outcome": "gave_up"},
                )
                break
            delay = self._backoff.delay(number - 1, attempt.retry_after)
            if delay >= self.budget.remaining():  # waiting would spend the rest: fail now
                raise self._budget_exhausted(method, path, attempt, request_id, number)
            self._wait_before_retry(attempt, context, number, delay)
        raise ServiceUnavailable(
            f"gave up after {self._backoff.max_attempts} attempts: {attempt.failure}",
            service=self.service,
            method=method,
            path=path,
            status=attempt.status,
            code=attempt.code,
            request_id=request_id,
            attempts=self._backoff.max_attempts,
        )

    def _budget_exhausted(
        self, method: str, path: str, attempt: _Attempt, request_id: str, attempts: int
    ) -> ServiceBudgetExhausted:
        budget = self.budget
        return ServiceBudgetExhausted(
            f"this step lost {budget.spent:.1f} s to failing service calls, its whole budget "
            f"(SERVICE_STEP_DEADLINE_SECONDS={budget.seconds:g}); last failure: {attempt.failure}",
            service=self.service,
            method=method,
            path=path,
            status=attempt.status,
            code=attempt.code,
            request_id=request_id or None,
            attempts=max(attempts, 1),
        )

    def _try(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        content: bytes | None,
        request_id: str,
    ) -> _Attempt:
        """One try within the request deadline; a 2xx body that breaks the contract raises ServiceProtocolError."""
        headers = {"Authorization": f"Bearer {self._issuer.token_for(self.service)}", "X-Request-ID": request_id}
        if content is not None:
            headers["Content-Type"] = "application/json"
        token = current_deadline.set(time.monotonic() + self._request_deadline)
        try:
            with self._http.stream(method, path, params=params, content=content, headers=headers) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return _Attempt(str(status), body=self._decode(response, method, path, request_id), status=status)
                code, message = _error_code_and_message(response)
                return _Attempt(
                    str(status), failure=message, status=status, code=code, retry_after=_retry_after_seconds(response)
                )
        except (httpx.TimeoutException, httpcore.TimeoutException) as exc:
            return _Attempt("timeout", failure=f"timed out ({type(exc).__name__})")
        except (httpx.TransportError, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            return _Attempt("connection_error", failure=f"connection failed ({type(exc).__name__})")
        finally:
            current_deadline.reset(token)

    def _decode(self, response: httpx.Response, method: str, path: str, request_id: str) -> Any:
        def violation(reason: str) -> ServiceProtocolError:
            return ServiceProtocolError(
                reason,
                service=self.service,
                method=method,
                path=path,
                status=response.status_code,
                request_id=request_id,
            )

        content_type = response.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise violation(f"answer is {printable(content_type or 'untyped', 60)!r}, not application/json")
        try:
            return _decode_json(_read_body(response, self._max_response_bytes))
        except _TooLarge:
            raise violation(
                f"answer is larger than {self._max_response_bytes} bytes (SERVICE_MAX_RESPONSE_BYTES)"
            ) from None
        except ValueError as exc:
            raise violation(str(exc)) from None

    def _refusal(self, attempt: _Attempt, context: dict[str, Any], number: int) -> ServiceError:
        """The permanent error for a non-transient status: logged once, never retried."""
        status = attempt.status
        assert status is not None
        if status in (401, 403):
            error_class: type[ServiceError] = ServiceAuthError
            outcome = "auth_refused"
        elif 300 <= status < 400:
            error_class, outcome = ServiceProtocolError, "refused"
            attempt.failure = f"redirects are not part of the contract ({attempt.failure})"
        else:
            error_class, outcome = ServiceRequestError, "refused"
        self._log_request(context, outcome)
        logger.error(
            "%s %s %s -> %s request_id=%s: %s",
            self.service,
            context["method"],
            context["endpoint"],
            status,
            context["request_id"],
            attempt.failure,
            extra={**context, "outcome": outcome},
        )
        return error_class(
            attempt.failure,
            service=self.service,
            method=context["method"],
            path=context["endpoint"],
            status=status,
            code=attempt.code,
            request_id=context["request_id"],
            attempts=number,
        )

    def _wait_before_retry(self, attempt: _Attempt, context: dict[str, Any], number: int, delay: float) -> None:
        self._log_request(context, "retry")
        self.stats.count_retry()
        endpoint = f"{context['method']} {context['endpoint']}"
        if self.observer is not None:
            self.observer.request_retried(service=self.service, endpoint=endpoint)
        logger.warning(
            "%s %s failed (status=%s, %s) request_id=%s; retry %d/%d in %.2f s",
            self.service,
            endpoint,
            attempt.status,
            attempt.failure,
            context["request_id"],
            number,
            self._backoff.max_attempts - 1,
            delay,
            extra={**context, "outcome": "retry"},
        )
        self._sleep(delay)
        self.budget.charge(delay)

    def _context(
        self, method: str, path: str, status: str, request_id: str, number: int, started: float
    ) -> dict[str, Any]:
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        return {
            "service": self.service,
            "method": method,
            "endpoint": path,
            "status": status,
            "request_id": request_id,
            "attempt": number,
            "elapsed_ms": elapsed_ms,
        }

    def _log_request(self, context: dict[str, Any], outcome: str) -> None:
        self._request_log.info(
            "%s %s %s -> %s in %s ms",
            self.service,
            context["method"],
            context["endpoint"],
            context["status"],
            context["elapsed_ms"],
            extra={**self.log_context, **context, "outcome": outcome},
        )

    def _protocol_error(self, method: str, path: str, reason: str) -> ServiceProtocolError:
        return ServiceProtocolError(reason, service=self.service, method=method, path=path)

    # -- lists ---------------------------------------------------------------

    def paginate(
        self,
        path: str,
        model: type[M],
        params: Mapping[str, Any] | None = None,
        *,
        id_field: str = "id",
    ) -> Iterator[M | InvalidRecord]:
        """Every item of a list endpoint, fetched page by page as the caller consumes them.

        An item that does not validate against `model` is yielded as a InvalidRecord.
        The stream must end, so each of these is a ServiceProtocolError naming the service,
        path and cursor: a page with more items than asked for; a `next_cursor` this
        pagination has already followed (a loop); MAX_STALLED_PAGES pages in a row that add
        no item the pages before them did not have (fresh cursors over the same items); and
        more than `max_pages` pages (SERVICE_MAX_PAGES).
        """
        query = dict(params or {})
        query["limit"] = self.page_size
        followed: set[bytes] = set()  # digests: memory stays small however long the cursors
        recent: deque[set[Any]] = deque(maxlen=MAX_STALLED_PAGES)  # the ids of the last pages
        stalled = 0
        cursor: str | None = None
        for page_number in itertools.count(1):
            if page_number > self.max_pages:
                raise self._protocol_error(
                    "GET", path, f"more than {self.max_pages} pages (SERVICE_MAX_PAGES), cursor {self._shown(cursor)}"
                )
            if cursor is not None:
                query["cursor"] = cursor
            body = self.request("GET", path, params=query).body
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise self._protocol_error("GET", path, "page has no `items` list")
            items = body["items"]
            if len(items) > self.page_size:
                raise self._protocol_error(
                    "GET", path, f"page holds {len(items)} items, more than limit={self.page_size}"
                )
            ids = {raw.get(id_field) if isinstance(raw, dict) else None for raw in items}
            new = not ids or None in ids or any(all(item_id not in page for page in recent) for item_id in ids)
            for raw in items:
                yield self._validate_item(model, raw, id_field)
            cursor = body.get("next_cursor")
            if cursor is None:
                return
            if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_CHARACTERS:
                raise self._protocol_error("GET", path, "page has an invalid `next_cursor`")
            stalled = 0 if new and items else stalled + 1
            if stalled >= MAX_STALLED_PAGES:
                raise self._protocol_error(
                    "GET",
                    path,
                    f"{stalled} pages in a row added no new item, the last with next_cursor {self._shown(cursor)}: "
                    "the pages do not advance",
                )
            recent.append(ids)
            digest = hashlib.blake2b(cursor.encode(), digest_size=16).digest()
            if digest in followed:
                raise self._protocol_error(
                    "GET", path, f"next_cursor {self._shown(cursor)} was already followed: the pages loop"
                )
            followed.add(digest)
        raise AssertionError("unreachable")

    @staticmethod
    def _shown(cursor: str | None) -> str:
        return "none" if cursor is None else repr(printable(cursor, 80))

    def _validate_item(self, model: type[M], raw: Any, id_field: str) -> M | InvalidRecord:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            self.stats.count_invalid()
            record_id = raw.get(id_field) if isinstance(raw, dict) else None
            return InvalidRecord(
                record_id=printable(record_id, 120) if record_id is not None else None,
                reason=describe_validation_error(exc),
                raw=raw,
            )

    # -- batch writes ----------------------------------------------------------

    def write_batch(self, path: str, items: Sequence[Item], result_model: type[Result]) -> BatchReply[Result]:
        """POST one batch (≤ 500 items); its results, checked to match the items one to one."""
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}")
        if not items:
            return BatchReply([], 0)
        body = b'{"items":' + _list_of(type(items[0])).dump_json(list(items)) + b"}"
        reply = self.request("POST", path, json_bytes=body)
        raw_results = reply.body.get("results") if isinstance(reply.body, dict) else None
        if not isinstance(raw_results, list) or len(raw_results) != len(items):
            raise self._protocol_error("POST", path, f"expected {len(items)} results in order")
        try:
            results: list[Result] = _list_of(result_model).validate_python(raw_results)
        except ValidationError as exc:
            raise self._protocol_error("POST", path, f"invalid result: {describe_validation_error(exc)}") from exc
        for item, result in zip(items, results, strict=True):
            if item.key != result.key:
                raise self._protocol_error(
                    "POST",
                    path,
                    f"result for {printable(result.key, 80)!r} answers item {printable(item.key, 80)!r}",
                )
        return BatchReply(results, reply.attempts)

    def write_all(
        self, path: str, items: Iterable[Item], result_model: type[Result], *, chunk_size: int = MAX_BATCH_ITEMS
    ) -> Iterator[tuple[Item, Result]]:
        """Each item with its result, written in chunks of at most `chunk_size` as the caller consumes them."""
        for chunk in chunked(items, min(chunk_size, MAX_BATCH_ITEMS)):
            yield from zip(chunk, self.write_batch(path, chunk, result_model).results, strict=True)
