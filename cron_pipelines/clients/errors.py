"""Typed failures of calls to the internal services.

Every message names the service, method, path, status, error code and request id,
so an operator can find the same request in the service's own logs; none holds a
token or a secret.
"""

from __future__ import annotations

from cron_pipelines.safe_text import printable


class ServiceError(Exception):
    """Base of every failure talking to sql-service or mongo-service."""

    def __init__(
        self,
        reason: str,
        *,
        service: str,
        method: str,
        path: str,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        # The reason and code may quote the service's own answer: never print them raw.
        self.reason = printable(reason, 600)
        self.service = service
        self.method = method
        self.path = path
        self.status = status
        self.code = printable(code, 80) if code is not None else None
        self.request_id = request_id
        self.attempts = attempts
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [f"{self.service}: {self.method} {self.path}"]
        parts.append(f"status={self.status}" if self.status is not None else "status=none")
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        if self.attempts > 1:
            parts.append(f"attempts={self.attempts}")
        return f"{' '.join(parts)}: {self.reason}"


class ServiceUnavailable(ServiceError):
    """Transient failures (408/429/5xx, timeouts, dropped connections) outlasted the retries."""


class ServiceAuthError(ServiceError):
    """The service refused our token (401/403): a configuration problem, never retried."""


class ServiceRequestError(ServiceError):
    """The service refused the request as invalid (other 4xx): permanent, never retried."""


class ServiceProtocolError(ServiceError):
    """The service answered something the contract does not allow: permanent, never retried.

    Bad JSON, invalid UTF-8, a wrong content type, an oversized body, a redirect, a page
    larger than asked for, a cursor that loops, batch results that do not match."""


class ServiceBudgetExhausted(ServiceError):
    """The step spent its whole budget of time on failing service calls (SERVICE_STEP_DEADLINE_SECONDS).

    Permanent for the step: its retries would only wait on the same service again."""
