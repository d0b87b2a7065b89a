"""Payloads of the sql-service and mongo-service contract, as pydantic models.

One definition serves the client (which validates what it reads), the stand-in
services (which serialise what they answer) and the tests.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from typing_extensions import Annotated


def _parse_instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"instant {value!r} has no UTC offset")
    return parsed


def _check_instant(value: str) -> str:
    _parse_instant(value)
    return value


# An RFC 3339 instant kept exactly as the service wrote it: idempotency keys
# embed it unchanged (contract §5), so it must not be re-formatted.
InstantStr = Annotated[str, AfterValidator(_check_instant)]


def parse_instant(value: str) -> datetime:
    """An RFC 3339 instant with an offset as an aware datetime."""
    return _parse_instant(value)


def format_instant(value: datetime) -> str:
    """An aware datetime as RFC 3339 (UTC, `Z`), the way this project writes instants."""
    if value.tzinfo is None:
        raise ValueError("naive datetime cannot be written as an instant")
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class ServiceModel(BaseModel):
    """Base of every payload: unknown fields are ignored, values are immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True)


T = TypeVar("T")


class Page(ServiceModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class ErrorDetail(ServiceModel):
    code: str
    message: str


class ErrorBody(ServiceModel):
    error: ErrorDetail


# --- sql-service -------------------------------------------------------------

DueStatus = Literal["pending", "overdue", "paid", "cancelled"]


class DueUser(ServiceModel):
    id: str
    # Recipients are validated when the mail is built, so a bad address becomes
    # a recorded skip of that notification rather than an unreadable record.
    email: str | None = None
    full_name: str | None = None


class Due(ServiceModel):
    id: str
    user_id: str
    amount_cents: int
    currency: str = Field(min_length=3, max_length=3)
    due_date: date
    status: DueStatus
    description: str | None = None
    user: DueUser


class OverdueMark(ServiceModel):
    due_id: str

    @property
    def key(self) -> str:
        return self.due_id


class OverdueMarkResult(ServiceModel):
    due_id: str
    outcome: Literal["marked", "already_overdue", "invalid_state", "not_found"]

    @property
    def key(self) -> str:
        return self.due_id


VerificationStatus = Literal["pending", "verified", "rejected", "expired"]


class Verification(ServiceModel):
    id: str
    employee_id: str
    email: str | None = None
    full_name: str | None = None
    status: VerificationStatus
    requested_at: InstantStr

    @property
    def requested_at_dt(self) -> datetime:
        return parse_instant(self.requested_at)


class VerificationDecision(ServiceModel):
    verification_id: str
    status: Literal["verified", "rejected", "expired"]
    reason: str

    @property
    def key(self) -> str:
        return self.verification_id


class VerificationDecisionResult(ServiceModel):
    verification_id: str
    outcome: Literal["updated", "unchanged", "invalid_state", "not_found"]

    @property
    def key(self) -> str:
        return self.verification_id


# --- mongo-service -----------------------------------------------------------

UserStatus = Literal["active", "inactive"]


class InactiveUser(ServiceModel):
    id: str
    email: str | None = None
    full_name: str | None = None
    status: UserStatus
    last_login_at: InstantStr | None = None
    created_at: InstantStr

    @property
    def last_active_at(self) -> str:
        """The instant the inactivity is measured from, as the service wrote it."""
        return self.last_login_at if self.last_login_at is not None else self.created_at

    @property
    def last_active_at_dt(self) -> datetime:
        return parse_instant(self.last_active_at)


class Deactivation(ServiceModel):
    user_id: str
    reason: str = "inactivity"
    last_active_at: InstantStr

    @property
    def key(self) -> str:
        return self.user_id


class DeactivationResult(ServiceModel):
    user_id: str
    outcome: Literal["deactivated", "already_inactive", "active_again", "not_found"]

    @property
    def key(self) -> str:
        return self.user_id


class VerificationAttempt(ServiceModel):
    id: str
    verification_id: str
    employee_id: str
    outcome: Literal["success", "failure"]
    method: str
    attempted_at: InstantStr

    @property
    def attempted_at_dt(self) -> datetime:
        return parse_instant(self.attempted_at)


NotificationStatus = Literal["claimed", "sent", "failed", "skipped"]


class NotificationClaim(ServiceModel):
    idempotency_key: str = Field(min_length=1, max_length=512)
    kind: str = Field(min_length=1, max_length=64)
    user_id: str | None = None
    recipient: str | None = None
    run_id: str | None = None
    job_name: str | None = None
    partition_key: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.idempotency_key


class NotificationRecord(ServiceModel):
    idempotency_key: str
    kind: str
    user_id: str | None = None
    recipient: str | None = None
    status: NotificationStatus
    run_id: str | None = None
    job_name: str | None = None
    partition_key: str | None = None
    attempts: int
    claimed_at: InstantStr
    sent_at: InstantStr | None = None
    message_id: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ClaimResult(ServiceModel):
    idempotency_key: str
    outcome: Literal["claimed", "duplicate"]
    record: NotificationRecord

    @property
    def key(self) -> str:
        return self.idempotency_key


class NotificationOutcome(ServiceModel):
    idempotency_key: str
    status: Literal["sent", "failed", "skipped"]
    message_id: str | None = None
    error: str | None = None
    at: InstantStr

    @property
    def key(self) -> str:
        return self.idempotency_key


class OutcomeResult(ServiceModel):
    idempotency_key: str
    outcome: Literal["updated", "not_found"]

    @property
    def key(self) -> str:
        return self.idempotency_key
