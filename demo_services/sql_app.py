"""The sql-service stand-in (docs/services.md, “sql-service”): dues and employee verifications."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import JSONResponse

from cron_pipelines.models.payloads import (
    Due,
    DueStatus,
    OverdueMark,
    OverdueMarkResult,
    Page,
    Verification,
    VerificationDecision,
    VerificationDecisionResult,
    VerificationStatus,
)
from demo_services.auth import TokenVerifier
from demo_services.common import (
    DEFAULT_PAGE_SIZE,
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

SERVICE = "sql-service"

routes = APIRouter(prefix="/v1")


@routes.get("/dues", response_model=Page[Due], tags=["dues"], summary="Dues in (due_date, id) order")
def list_dues(
    store: Store,
    status: Annotated[list[DueStatus] | None, Query(description="Repeatable; all statuses when absent.")] = None,
    due_from: Annotated[date | None, Query(description="Inclusive.")] = None,
    due_to: Annotated[date | None, Query(description="Inclusive.")] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> JSONResponse:
    return page_response(
        store.page_dues(statuses=status, due_from=due_from, due_to=due_to, after=decode_cursor(cursor), limit=limit)
    )


@routes.post(
    "/dues/overdue-marks",
    response_model=BatchResponse[OverdueMarkResult],
    tags=["dues"],
    summary="Mark pending dues overdue",
)
def mark_overdue(store: Store, body: BatchRequest[OverdueMark]) -> JSONResponse:
    return batch_response(store.mark_overdue([item.due_id for item in body.items]))


@routes.get(
    "/verifications",
    response_model=Page[Verification],
    tags=["verifications"],
    summary="Verifications in (requested_at, id) order",
)
def list_verifications(
    store: Store,
    status: Annotated[
        list[VerificationStatus] | None, Query(description="Repeatable; all statuses when absent.")
    ] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> JSONResponse:
    return page_response(store.page_verifications(statuses=status, after=decode_cursor(cursor), limit=limit))


@routes.post(
    "/verifications/decisions",
    response_model=BatchResponse[VerificationDecisionResult],
    tags=["verifications"],
    summary="Decide pending verifications",
)
def decide_verifications(store: Store, body: BatchRequest[VerificationDecision]) -> JSONResponse:
    return batch_response(store.decide_verifications(body.items))


def create_sql_app(
    store: DemoStore,
    verifier: TokenVerifier,
    *,
    faults: FaultInjector | None = None,
    request_log: RequestLog | None = None,
) -> FastAPI:
    return create_service_app(
        service=SERVICE,
        description="Stand-in for sql-service: dues and employee verifications (docs/services.md, “sql-service”).",
        routes=routes,
        store=store,
        verifier=verifier,
        faults=faults,
        request_log=request_log,
    )
