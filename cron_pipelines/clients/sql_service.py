"""Typed calls to sql-service (docs/services.md, "sql-service"): dues and employee verifications."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from typing import Any

from cron_pipelines.clients.http import ServiceClient
from cron_pipelines.models.payloads import (
    Due,
    DueStatus,
    OverdueMark,
    OverdueMarkResult,
    Verification,
    VerificationDecision,
    VerificationDecisionResult,
    VerificationStatus,
)
from cron_pipelines.models.records import InvalidRecord

SQL_SERVICE = "sql-service"


class SqlServiceClient(ServiceClient):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(service=SQL_SERVICE, **kwargs)

    def iter_dues(
        self,
        *,
        statuses: Sequence[DueStatus],
        due_from: date | None = None,
        due_to: date | None = None,
    ) -> Iterator[Due | InvalidRecord]:
        params: dict[str, Any] = {"status": list(statuses)}
        if due_from is not None:
            params["due_from"] = due_from.isoformat()
        if due_to is not None:
            params["due_to"] = due_to.isoformat()
        return self.paginate("/v1/dues", Due, params)

    def mark_overdue(self, due_ids: Iterable[str]) -> Iterator[tuple[OverdueMark, OverdueMarkResult]]:
        marks = (OverdueMark(due_id=due_id) for due_id in due_ids)
        return self.write_all("/v1/dues/overdue-marks", marks, OverdueMarkResult)

    def iter_verifications(self, *, statuses: Sequence[VerificationStatus]) -> Iterator[Verification | InvalidRecord]:
        return self.paginate("/v1/verifications", Verification, {"status": list(statuses)})

    def decide_verifications(
        self, decisions: Iterable[VerificationDecision]
    ) -> Iterator[tuple[VerificationDecision, VerificationDecisionResult]]:
        return self.write_all("/v1/verifications/decisions", decisions, VerificationDecisionResult)
