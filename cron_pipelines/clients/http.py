"""The one HTTP client core behind both internal services.

A pooled keep-alive httpx client that signs each request with the service's JWT,
tags it with a fresh X-Request-ID, retries transient failures with exponential
backoff and jitter (honouring Retry-After), streams paginated lists page by page
and writes batches in chunks the contract allows.
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from cron_pipelines.clients.errors import (
    ServiceAuthError,
    ServiceProtocolError,
    ServiceRequestError,
    ServiceUnavailable,
)
from cron_pipelines.clients.tokens import TokenIssuer
from cron_pipelines.observability.logs import request_log

logger = logging.getLogger("cron_pipelines.clients")

TRANSIENT_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
MAX_BATCH_ITEMS = 500
MAX_PAGE_SIZE = 1000

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


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
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class RejectedRecord:
    """A listed record that failed validation: the caller records a skip instead of crashing."""

    record_id: str | None
    reason: str
    raw: Any = field(repr=False)


@dataclass
class RejectedTally:
    """How many records were rejected, with a bounded sample of which and why."""

    sample_size: int = 10
    count: int = 0
    sample: list[str] = field(default_factory=list)

    def add(self, record: RejectedRecord) -> None:
        self.count += 1
        if len(self.sample) < self.sample_size:
            self.sample.append(f"{record.record_id or '<no id>'}: {record.reason}")


@dataclass
class ClientStats:
    """What a client did, for run metadata and the benchmark."""

    requests: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    rejected_records: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def count_rejected(self) -> None:
        with self._lock:
            self.rejected_records += 1


class RequestObserver(Protocol):
    """Receives every request's result (metrics); see cron_pipelines.observability.metrics."""

    def request_finished(self, *, service: str, endpoint: str, status: str, seconds: float) -> None: ...

    def request_retried(self, *, service: str, endpoint: str) -> None: ...


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """A short reason naming the failing fields, e.g. `amount_cents: Input should be a valid integer`."""
    parts = []
    for error in exc.errors()[:limit]:
        location = ".".join(str(part) for part in error["loc"]) or "record"
        parts.append(f"{location}: {error['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


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
    try:
        body = response.json()
        error = body["error"]
        return str(error["code"]), str(error["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return None, (response.text[:200] or response.reason_phrase or "no body")


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most `size` items, without materialising the input."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


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
        backoff: Backoff = Backoff(),
        page_size: int = MAX_PAGE_SIZE,
        max_connections: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
        self.service = service
        self.page_size = page_size
        self.stats = ClientStats()
        self.observer: RequestObserver | None = None
        # The run using this client (run_id, job, partition), on every request-log line.
        self.log_context: dict[str, str] = {}
        self._request_log = request_log()
        self._issuer = issuer
        self._backoff = backoff
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": "cron-pipelines", "Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ServiceClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _log_request(self, context: dict[str, Any], outcome: str) -> None:
        self._request_log.info(
            "%s %s %s -> %s in %s ms", self.service, context["method"], context["endpoint"], context["status"],
            context["elapsed_ms"], extra={**self.log_context, **context, "outcome": outcome},
        )

    # -- single requests ---------------------------------------------------

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> Any:
        """Send one request, retrying transient failures; the decoded JSON body of a 2xx answer."""
        endpoint = f"{method} {path}"
        failure = "no attempt made"
        last_status: int | None = None
        last_code: str | None = None
        request_id = ""
        for attempt in range(1, self._backoff.max_attempts + 1):
            request_id = uuid.uuid4().hex
            headers = {
                "Authorization": f"Bearer {self._issuer.token_for(self.service)}",
                "X-Request-ID": request_id,
            }
            self.stats.count_request(endpoint)
            started = time.perf_counter()
            retry_after: float | None = None
            try:
                response = self._http.request(method, path, params=params, json=json_body, headers=headers)
            except httpx.TimeoutException as exc:
                failure, last_status, last_code = f"timed out ({type(exc).__name__})", None, None
                status_label = "timeout"
            except httpx.TransportError as exc:
                failure, last_status, last_code = f"connection failed ({type(exc).__name__})", None, None
                status_label = "connection_error"
            else:
                status_label = str(response.status_code)
            elapsed = time.perf_counter() - started
            context = {"service": self.service, "method": method, "endpoint": path, "status": status_label,
                       "request_id": request_id, "attempt": attempt, "elapsed_ms": round(elapsed * 1000, 1)}
            if self.observer is not None:
                self.observer.request_finished(service=self.service, endpoint=endpoint, status=status_label, seconds=elapsed)
            if status_label.isdigit():
                status = response.status_code
                if 200 <= status < 300:
                    self._log_request(context, "ok")
                    return self._decode(response, method, path, request_id)
                code, message = _error_code_and_message(response)
                error_args = dict(
                    service=self.service, method=method, path=path, status=status, code=code,
                    request_id=request_id, attempts=attempt,
                )
                if status in (401, 403):
                    self._log_request(context, "auth_refused")
                    logger.error("%s %s -> %s request_id=%s: %s", self.service, endpoint, status, request_id,
                                 message, extra={**context, "outcome": "auth_refused"})
                    raise ServiceAuthError(message, **error_args)
                if status not in TRANSIENT_STATUSES:
                    self._log_request(context, "refused")
                    logger.error("%s %s -> %s request_id=%s: %s", self.service, endpoint, status, request_id,
                                 message, extra={**context, "outcome": "refused"})
                    raise ServiceRequestError(message, **error_args)
                failure, last_status, last_code = message, status, code
                retry_after = _retry_after_seconds(response)
            if attempt == self._backoff.max_attempts:
                self._log_request(context, "gave_up")
                logger.error("%s %s gave up after %d attempts (status=%s, %s) request_id=%s", self.service,
                             endpoint, attempt, last_status, failure, request_id,
                             extra={**context, "outcome": "gave_up"})
                break
            self._log_request(context, "retry")
            delay = self._backoff.delay(attempt - 1, retry_after)
            self.stats.count_retry()
            if self.observer is not None:
                self.observer.request_retried(service=self.service, endpoint=endpoint)
            logger.warning(
                "%s %s failed (status=%s, %s) request_id=%s; retry %d/%d in %.2f s",
                self.service, endpoint, last_status, failure, request_id,
                attempt, self._backoff.max_attempts - 1, delay, extra={**context, "outcome": "retry"},
            )
            self._sleep(delay)
        raise ServiceUnavailable(
            f"gave up after {self._backoff.max_attempts} attempts: {failure}",
            service=self.service, method=method, path=path, status=last_status, code=last_code,
            request_id=request_id, attempts=self._backoff.max_attempts,
        )

    def _decode(self, response: httpx.Response, method: str, path: str, request_id: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise ServiceProtocolError(
                "answer is not JSON", service=self.service, method=method, path=path,
                status=response.status_code, request_id=request_id,
            ) from exc

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
    ) -> Iterator[M | RejectedRecord]:
        """Every item of a list endpoint, fetched page by page as the caller consumes them.

        An item that does not validate against `model` is yielded as a RejectedRecord.
        """
        query = dict(params or {})
        query["limit"] = self.page_size
        cursor: str | None = None
        while True:
            if cursor is not None:
                query["cursor"] = cursor
            body = self.request_json("GET", path, params=query)
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise self._protocol_error("GET", path, "page has no `items` list")
            for raw in body["items"]:
                yield self._validate_item(model, raw, id_field)
            cursor = body.get("next_cursor")
            if cursor is None:
                return
            if not isinstance(cursor, str) or not cursor:
                raise self._protocol_error("GET", path, "page has an invalid `next_cursor`")

    def _validate_item(self, model: type[M], raw: Any, id_field: str) -> M | RejectedRecord:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            self.stats.count_rejected()
            record_id = raw.get(id_field) if isinstance(raw, dict) else None
            return RejectedRecord(
                record_id=str(record_id) if record_id is not None else None,
                reason=describe_validation_error(exc),
                raw=raw,
            )

    # -- batch writes ----------------------------------------------------------

    def write_batch(self, path: str, items: Sequence[M], result_model: type[R]) -> list[R]:
        """POST one batch (≤ 500 items); its results, checked to match the items one to one."""
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}")
        if not items:
            return []
        body = self.request_json(
            "POST", path, json_body={"items": [item.model_dump(mode="json") for item in items]}
        )
        raw_results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(raw_results, list) or len(raw_results) != len(items):
            raise self._protocol_error("POST", path, f"expected {len(items)} results in order")
        try:
            results = [result_model.model_validate(raw) for raw in raw_results]
        except ValidationError as exc:
            raise self._protocol_error("POST", path, f"invalid result: {describe_validation_error(exc)}") from exc
        for item, result in zip(items, results):
            if item.key != result.key:  # type: ignore[attr-defined]
                raise self._protocol_error(
                    "POST", path, f"result for {result.key!r} answers item {item.key!r}"  # type: ignore[attr-defined]
                )
        return results

    def write_all(
        self, path: str, items: Iterable[M], result_model: type[R], *, chunk_size: int = MAX_BATCH_ITEMS
    ) -> Iterator[tuple[M, R]]:
        """Each item with its result, written in chunks of at most `chunk_size` as the caller consumes them."""
        for chunk in chunked(items, min(chunk_size, MAX_BATCH_ITEMS)):
            yield from zip(chunk, self.write_batch(path, chunk, result_model))
