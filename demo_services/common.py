"""What both stand-in services share (docs/services.md, “Talking to a service”).

Errors in the contract's shape (also for validation failures, unknown routes and
crashes), bearer-token auth, opaque keyset cursors, the list and batch envelopes,
and the app skeleton with its fault/request-log middleware. Each service module
then only declares its routes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from cron_pipelines.clients.tokens import TokenError
from cron_pipelines.models.payloads import ErrorBody
from demo_services.auth import TokenVerifier
from demo_services.faults import FaultInjector, InstrumentationMiddleware, RequestLog
from demo_services.store import DemoStore, KeysetPage, SortKey

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_BATCH_ITEMS = 500

T = TypeVar("T")


class ApiError(Exception):
    """A refusal answered with the contract's error body."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


# Shown in the OpenAPI document of every /v1 operation.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid parameter, cursor, body or batch size"},
    401: {"model": ErrorBody, "description": "Missing, expired, badly signed or wrongly addressed token"},
}


# -- errors -----------------------------------------------------------------------


def _describe_validation(errors: Sequence[Any], limit: int = 3) -> str:
    # Where and why, in pydantic's words; the request body itself is not echoed back.
    parts = [
        f"{'.'.join(str(part) for part in error['loc'][1:]) or error['loc'][0]}: {error['msg']}"
        for error in errors[:limit]
    ]
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    for error in errors:
        if error["type"] == "too_long" and tuple(error["loc"]) == ("body", "items"):
            actual = error.get("ctx", {}).get("actual_length")
            return error_response(
                400, "batch_too_large", f"a batch holds at most {MAX_BATCH_ITEMS} items, got {actual}"
            )
    in_parameters = all(error["loc"][0] in ("query", "path", "header") for error in errors)
    code = "invalid_parameter" if in_parameters else "invalid_request"
    return error_response(400, code, _describe_validation(errors))


async def _on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, _HTTP_ERROR_CODES.get(exc.status_code, "http_error"), message, exc.headers)


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the service log (Starlette re-raises after answering), never to the client.
    request_id = request.headers.get("x-request-id", "none")
    return error_response(500, "internal_error", f"internal error (request id {request_id})")


# -- auth -----------------------------------------------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT minted by cron_pipelines for this service: docs/services.md, “Talking to a service”.",
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> dict[str, Any]:
    """The verified claims of the request's bearer token, or 401."""
    if credentials is None:
        raise ApiError(401, "unauthorized", "missing bearer token", _CHALLENGE)
    verifier: TokenVerifier = request.app.state.verifier
    try:
        return verifier.verify(credentials.credentials)
    except TokenError as exc:
        # TokenError messages name the failed check, never the token.
        raise ApiError(401, "unauthorized", str(exc), _CHALLENGE) from None


# -- lists ----------------------------------------------------------------------------


def encode_cursor(key: SortKey) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _is_scalar(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def decode_cursor(cursor: str | None) -> SortKey | None:
    """The sort key a cursor resumes after; 400 `invalid_cursor` for anything this service did not issue."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        key = None
    if not (isinstance(key, list) and len(key) == 2 and _is_scalar(key[0]) and isinstance(key[1], str)):
        raise ApiError(400, "invalid_cursor", "cursor is not one this endpoint issued")
    return key[0], key[1]


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


def page_response(page: KeysetPage) -> JSONResponse:
    # Items are built as plain dicts: re-validating a 1000-item page would cost more than the query.
    next_cursor = None if page.next_after is None else encode_cursor(page.next_after)
    return JSONResponse({"items": page.items, "next_cursor": next_cursor})


# -- batches ----------------------------------------------------------------------------


class BatchRequest(BaseModel, Generic[T]):
    """A batch write: the items, in the order their results come back."""

    items: list[T] = Field(max_length=MAX_BATCH_ITEMS)


class BatchResponse(BaseModel, Generic[T]):
    results: list[T]


def batch_response(results: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"results": results})


# -- the app ----------------------------------------------------------------------------


async def get_store(request: Request) -> DemoStore:
    return request.app.state.store


Store = Annotated[DemoStore, Depends(get_store)]

_admin = APIRouter(prefix="/_admin", tags=["admin"])


@_admin.get("/request-counts", summary="Requests served per endpoint (for benchmarks in another process)")
async def request_counts(request: Request) -> dict[str, int]:
    return request.app.state.request_log.counts()


def create_service_app(
    *,
    service: str,
    description: str,
    routes: APIRouter,
    store: DemoStore,
    verifier: TokenVerifier,
    faults: FaultInjector | None,
    request_log: RequestLog | None,
) -> FastAPI:
    """A stand-in service: `routes` under auth, the contract's errors, faults and request log."""
    if verifier.audience != service:
        # A verifier for the other service would accept that service's tokens here.
        raise ValueError(f"{service} needs a verifier for audience {service!r}, got {verifier.audience!r}")
    app = FastAPI(title=f"{service} (stand-in)", version="1.0.0", description=description)
    app.state.store = store
    app.state.verifier = verifier
    app.state.faults = faults if faults is not None else FaultInjector()
    app.state.request_log = request_log if request_log is not None else RequestLog()
    app.add_middleware(InstrumentationMiddleware, faults=app.state.faults, request_log=app.state.request_log)
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, _on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected_error)
    authenticated = [Depends(authenticate)]
    app.include_router(routes, dependencies=authenticated, responses=ERROR_RESPONSES)
    app.include_router(_admin, dependencies=authenticated, responses={401: ERROR_RESPONSES[401]})
    return app
