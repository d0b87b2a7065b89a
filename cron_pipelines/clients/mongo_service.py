"""Typed calls to mongo-service (docs/services.md, "mongo-service"): user activity, verification attempts and the notification ledger."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from cron_pipelines.clients.http import BatchReply, ServiceClient, chunked
from cron_pipelines.models.payloads import (
    ClaimResult,
    Deactivation,
    DeactivationResult,
    InactiveUser,
    NotificationClaim,
    NotificationOutcome,
    NotificationRecord,
    NotificationStatus,
    OutcomeResult,
    VerificationAttempt,
    format_instant,
)
from cron_pipelines.models.records import InvalidRecord

MONGO_SERVICE = "mongo-service"
MAX_VERIFICATION_IDS_PER_QUERY = 100


class MongoServiceClient(ServiceClient):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(service=MONGO_SERVICE, **kwargs)

    def iter_inactive_users(self, *, last_active_before: datetime) -> Iterator[InactiveUser | InvalidRecord]:
        return self.paginate(
            "/v1/users/inactive", InactiveUser, {"last_active_before": format_instant(last_active_before)}
        )

    def deactivate_users(
        self, deactivations: Iterable[Deactivation]
    ) -> Iterator[tuple[Deactivation, DeactivationResult]]:
        return self.write_all("/v1/users/deactivations", deactivations, DeactivationResult)

    def iter_verification_attempts(
        self, *, verification_ids: Sequence[str] | None = None, since: datetime | None = None
    ) -> Iterator[VerificationAttempt | InvalidRecord]:
        """Attempts in (attempted_at, id) order; more than 100 ids are queried 100 at a time."""
        since_param = {"since": format_instant(since)} if since is not None else {}
        if verification_ids is None:
            yield from self.paginate("/v1/verification-attempts", VerificationAttempt, since_param)
            return
        for ids in chunked(verification_ids, MAX_VERIFICATION_IDS_PER_QUERY):
            yield from self.paginate(
                "/v1/verification-attempts", VerificationAttempt, {**since_param, "verification_id": ids}
            )

    def claim_notifications(self, claims: Sequence[NotificationClaim]) -> BatchReply:
        """ClaimResults in order; `attempts > 1` tells the caller an earlier answer may have been lost."""
        return self.write_batch("/v1/notifications/claims", claims, ClaimResult)

    def record_outcomes(self, outcomes: Sequence[NotificationOutcome]) -> list[OutcomeResult]:
        return self.write_batch("/v1/notifications/outcomes", outcomes, OutcomeResult).results

    def iter_notifications(
        self,
        *,
        user_id: str | None = None,
        kind: str | None = None,
        status: NotificationStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[NotificationRecord | InvalidRecord]:
        params: dict[str, Any] = {"user_id": user_id, "kind": kind, "status": status}
        if since is not None:
            params["since"] = format_instant(since)
        if until is not None:
            params["until"] = format_instant(until)
        return self.paginate(
            "/v1/notifications",
            NotificationRecord,
            {name: value for name, value in params.items() if value is not None},
            id_field="idempotency_key",
        )
