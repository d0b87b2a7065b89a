"""Typed calls to mongo-service (docs/services.md, "mongo-service"): user activity, verification attempts and the notification ledger."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from cron_pipelines.batching import chunked
from cron_pipelines.clients.errors import ServiceRequestError
from cron_pipelines.clients.http import MAX_BATCH_ITEMS, BatchReply, ServiceClient
from cron_pipelines.models.payloads import (
    ClaimResult,
    Deactivation,
    DeactivationResult,
    InactiveUser,
    NotificationClaim,
    NotificationOutcome,
    NotificationRecord,
    NotificationStatus,
    OptOut,
    OptOutResult,
    OutcomeResult,
    Preference,
    PreferenceQuery,
    VerificationAttempt,
    format_instant,
)
from cron_pipelines.models.records import InvalidRecord

logger = logging.getLogger("cron_pipelines.clients")

MONGO_SERVICE = "mongo-service"
MAX_VERIFICATION_IDS_PER_QUERY = 100


class MongoServiceClient(ServiceClient):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(service=MONGO_SERVICE, **kwargs)
        # False once the service answered 404 to the preferences endpoint: a v1.0 service.
        self.has_preferences = True
        # False once the service refused a `released` outcome (400): a v1.1 ledger.
        self.takes_released = True

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
        """The outcomes' results; a ledger without `released` (v1.1, 400) gets `failed` instead from then on."""
        if not self.takes_released:
            outcomes = [_without_released(outcome) for outcome in outcomes]
        try:
            return self.write_batch("/v1/notifications/outcomes", outcomes, OutcomeResult).results
        except ServiceRequestError as exc:
            if exc.status != 400 or not any(outcome.status == "released" for outcome in outcomes):
                raise
        self.takes_released = False
        logger.warning(
            "%s does not take `released` outcomes (contract v1.1): notifications the mail server did not take "
            "are recorded `failed`, and each such failure counts as one of their attempts (MAIL_MAX_ATTEMPTS)",
            self.service,
        )
        return self.record_outcomes(outcomes)

    def lookup_preferences(self, user_ids: Sequence[str]) -> dict[str, Preference]:
        """Each user's preferences, in one request per 500 users; none from a v1.0 service (404),
        which is then not asked again: every kind allowed, no digest."""
        if not self.has_preferences or not user_ids:
            return {}
        preferences: dict[str, Preference] = {}
        try:
            for chunk in chunked(user_ids, MAX_BATCH_ITEMS):
                queries = [PreferenceQuery(user_id=user_id) for user_id in chunk]
                reply = self.write_batch("/v1/notification-preferences/lookup", queries, Preference)
                preferences.update((preference.user_id, preference) for preference in reply.results)
        except ServiceRequestError as exc:
            if exc.status != 404:
                raise
            self.has_preferences = False
            return {}
        return preferences

    def record_opt_outs(self, opt_outs: Sequence[OptOut]) -> list[OptOutResult]:
        return self.write_batch("/v1/notification-preferences/opt-outs", opt_outs, OptOutResult).results

    def iter_retryable(self, *, kind: str) -> Iterator[NotificationRecord | InvalidRecord]:
        """Records of `kind` a later run claims again: `failed`, and `released` where the ledger knows it (v1.2)."""
        if self.takes_released:
            try:
                records = self.iter_notifications(kind=kind, status=("failed", "released"))
                first = next(records, None)
            except ServiceRequestError as exc:
                if exc.status != 400:
                    raise
                self.takes_released = False  # a v1.1 ledger refuses the status it does not know
            else:
                if first is not None:
                    yield first
                    yield from records
                return
        yield from self.iter_notifications(kind=kind, status="failed")

    def iter_notifications(
        self,
        *,
        user_id: str | None = None,
        kind: str | None = None,
        status: NotificationStatus | Sequence[NotificationStatus] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[NotificationRecord | InvalidRecord]:
        """Ledger records in (claimed_at, key) order; `status` one or several (repeated in the query)."""
        statuses = [status] if isinstance(status, str) else list(status) if status is not None else None
        params: dict[str, Any] = {"user_id": user_id, "kind": kind, "status": statuses}
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


def _without_released(outcome: NotificationOutcome) -> NotificationOutcome:
    if outcome.status != "released":
        return outcome
    return outcome.model_copy(update={"status": "failed", "error": f"released: {outcome.error or 'not sent'}"})
