"""The mongo-service stand-in (docs/services.md, “mongo-service”): user activity, verification attempts, the notification ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from cron_pipelines.delivery.channels.email.unsubscribe import UnsubscribeTokens, unsubscribe_app
from cron_pipelines.models.payloads import (
    ClaimResult,
    Deactivation,
    DeactivationResult,
    InactiveUser,
    InstantStr,
    NotificationClaim,
    NotificationOutcome,
    NotificationRecord,
    NotificationStatus,
    OptOut,
    OptOutResult,
    OutcomeResult,
    Page,
    Preference,
    PreferenceQuery,
    VerificationAttempt,
    parse_instant,
)
from demo_services.auth import TokenVerifier
from demo_services.common import (
    DEFAULT_PAGE_SIZE,
    ApiError,
    BatchRequest,
    BatchResponse,
    Cursor,
    Limit,
    Store,
    batch_response,
    create_service_app,
    decode_cursor,
    page_response,
)
from demo_services.faults import FaultInjector, RequestLog
from demo_services.store import DemoStore

SERVICE = "mongo-service"
MAX_VERIFICATION_IDS = 100

# The contract versions the stand-in can speak: 1.2 by default; 1.1 for tests of an older service
# (no §9 endpoints, no `released` outcome).
CONTRACT_VERSIONS = ("1.1", "1.2")

routes = APIRouter(prefix="/v1")


async def _contract_version(request: Request) -> str:
    return str(request.app.state.contract_version)


ContractVersion = Annotated[str, Depends(_contract_version)]


def _instant(value: str | None) -> datetime | None:
    return None if value is None else parse_instant(value)


@routes.get(
    "/users/inactive",
    response_model=Page[InactiveUser],
    tags=["users"],
    summary="Active users whose last activity is before an instant",
)
def list_inactive_users(
    store: Store,
    last_active_before: Annotated[
        InstantStr, Query(description="RFC 3339 instant with offset; last activity strictly before it.")
    ],
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> JSONResponse:
    return page_response(
        store.page_inactive_users(
            last_active_before=parse_instant(last_active_before), after=decode_cursor(cursor), limit=limit
        )
    )


@routes.post(
    "/users/deactivations",
    response_model=BatchResponse[DeactivationResult],
    tags=["users"],
    summary="Deactivate users still inactive since the instant the decision was based on",
)
def deactivate_users(store: Store, body: BatchRequest[Deactivation]) -> JSONResponse:
    return batch_response(store.deactivate_users(body.items))


@routes.get(
    "/verification-attempts",
    response_model=Page[VerificationAttempt],
    tags=["verifications"],
    summary="Verification attempts in (attempted_at, id) order",
)
def list_verification_attempts(
    store: Store,
    verification_id: Annotated[
        list[str] | None, Query(max_length=MAX_VERIFICATION_IDS, description="Repeatable, at most 100.")
    ] = None,
    since: Annotated[InstantStr | None, Query(description="Inclusive.")] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> JSONResponse:
    return page_response(
        store.page_attempts(
            verification_ids=verification_id, since=_instant(since), after=decode_cursor(cursor), limit=limit
        )
    )


@routes.post(
    "/notifications/claims",
    response_model=BatchResponse[ClaimResult],
    tags=["notifications"],
    summary="Claim notifications before sending them (one transaction a batch)",
)
def claim_notifications(store: Store, body: BatchRequest[NotificationClaim]) -> JSONResponse:
    return batch_response(store.claim_notifications(body.items))


@routes.post(
    "/notifications/outcomes",
    response_model=BatchResponse[OutcomeResult],
    tags=["notifications"],
    summary="Record what happened to claimed notifications",
)
def record_outcomes(store: Store, version: ContractVersion, body: BatchRequest[NotificationOutcome]) -> JSONResponse:
    if version == "1.1":
        for index, item in enumerate(body.items):
            if item.status == "released":  # as a v1.1 service's validation answers it
                raise ApiError(
                    400, "invalid_request", f"items.{index}.status: Input should be 'sent', 'failed' or 'skipped'"
                )
    return batch_response(store.record_outcomes(body.items))


@routes.get(
    "/notifications",
    response_model=Page[NotificationRecord],
    tags=["notifications"],
    summary="Ledger records in (claimed_at, idempotency_key) order",
)
def list_notifications(
    store: Store,
    version: ContractVersion,
    user_id: str | None = None,
    kind: str | None = None,
    status: Annotated[
        list[NotificationStatus] | None, Query(description="Repeatable; all statuses when absent.")
    ] = None,
    since: Annotated[InstantStr | None, Query(description="claimed_at at or after (inclusive).")] = None,
    until: Annotated[InstantStr | None, Query(description="claimed_at before (exclusive).")] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> JSONResponse:
    if version == "1.1" and status is not None and "released" in status:
        raise ApiError(400, "invalid_parameter", "status: Input should be 'claimed', 'sent', 'failed' or 'skipped'")
    return page_response(
        store.page_notifications(
            user_id=user_id,
            kind=kind,
            statuses=status,
            since=_instant(since),
            until=_instant(until),
            after=decode_cursor(cursor),
            limit=limit,
        )
    )


@routes.post(
    "/notification-preferences/lookup",
    response_model=BatchResponse[Preference],
    tags=["preferences"],
    summary="Each user's opted-out kinds and digest choice (v1.1)",
)
def lookup_preferences(store: Store, body: BatchRequest[PreferenceQuery]) -> JSONResponse:
    return batch_response(store.lookup_preferences(body.items))


@routes.post(
    "/notification-preferences/opt-outs",
    response_model=BatchResponse[OptOutResult],
    tags=["preferences"],
    summary="Record that users opted out of a kind (v1.1)",
)
def record_opt_outs(store: Store, body: BatchRequest[OptOut]) -> JSONResponse:
    return batch_response(store.add_opt_outs(body.items))


def create_mongo_app(
    store: DemoStore,
    verifier: TokenVerifier,
    *,
    faults: FaultInjector | None = None,
    request_log: RequestLog | None = None,
    unsubscribe: UnsubscribeTokens | None = None,
    contract_version: str = "1.2",
) -> FastAPI:
    """The stand-in; with `unsubscribe`, it also serves the platform's one-click unsubscribe
    endpoint at /unsubscribe (what UNSUBSCRIBE_BASE_URL points at in the demo)."""
    if contract_version not in CONTRACT_VERSIONS:
        raise ValueError(f"contract_version must be one of {CONTRACT_VERSIONS}")
    app = create_service_app(
        service=SERVICE,
        description="Stand-in for mongo-service: user activity, verification attempts and the "
        "notification ledger (docs/services.md, “mongo-service”).",
        routes=routes,
        store=store,
        verifier=verifier,
        faults=faults,
        request_log=request_log,
    )
    app.state.contract_version = contract_version
    if unsubscribe is not None:

        def record(opt_out: OptOut) -> OptOutResult:
            (result,) = store.add_opt_outs([opt_out])
            return OptOutResult.model_validate(result)

        app.mount("/unsubscribe", unsubscribe_app(unsubscribe, record))
    return app
