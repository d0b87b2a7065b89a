"""Payloads of the sql-service and mongo-service contract, as pydantic models.

One definition serves the client (which validates what it reads), the stand-in
services (which serialise what they answer) and the tests.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from cron_pipelines.models.reader import LocaleTag, TimezoneName

# Caps on what the services send (docs/services.md, "Limits"). A record over a cap fails
# validation: it is recorded `skipped` with the reason (or counted invalid when not even
# its key can be formed), so one absurd value never reaches an email or blocks a batch.
MAX_ID_CHARACTERS = 128
MAX_EMAIL_CHARACTERS = 320
MAX_NAME_CHARACTERS = 200
MAX_DESCRIPTION_CHARACTERS = 500
MAX_INSTANT_CHARACTERS = 64

# An id becomes part of an idempotency key, which is also a mail header and a ledger key:
# printable ASCII without spaces.
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARACTERS, pattern=r"^[\x21-\x7e]+$")]
EmailText = Annotated[str, StringConstraints(max_length=MAX_EMAIL_CHARACTERS)]
# Where a notification went, whatever the channel: an e-mail address, a webhook's origin.
RecipientText = Annotated[str, StringConstraints(max_length=MAX_EMAIL_CHARACTERS)]
NameText = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARACTERS)]
DescriptionText = Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_CHARACTERS)]
_ID = TypeAdapter(Id)


def usable_id(value: object) -> str | None:
    """`value` as an Id if it is one (a number is read as its digits), else None.

    What a skip record keeps of a malformed record's fields: only what fits the ledger."""
    if value is None:
        return None
    try:
        return _ID.validate_python(str(value) if isinstance(value, int) else value)
    except ValidationError:
        return None


def usable_email(value: object) -> str | None:
    """`value` if it is a string short enough to be an address, else None (see usable_id)."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_EMAIL_CHARACTERS else None


def _parse_instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"instant {value!r} has no UTC offset")
    return parsed


def _check_instant(value: str) -> str:
    _parse_instant(value)
    return value


# An RFC 3339 instant kept exactly as the service wrote it: idempotency keys
# embed it unchanged (docs/services.md, "The business rules"), so it must not be re-formatted.
InstantStr = Annotated[str, StringConstraints(max_length=MAX_INSTANT_CHARACTERS), AfterValidator(_check_instant)]


def parse_instant(value: str) -> datetime:
    """An RFC 3339 instant with an offset as an aware datetime."""
    return _parse_instant(value)


def format_instant(value: datetime) -> str:
    """An aware datetime as RFC 3339 (UTC, `Z`), the way this project writes instants."""
    if value.tzinfo is None:
        raise ValueError("naive datetime cannot be written as an instant")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ServiceModel(BaseModel):
    """Base of every payload: unknown fields are ignored, values are immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class KeyedModel(ServiceModel):
    """An item of a batch write or its result: the service answers items in order, by this key."""

    @property
    @abstractmethod
    def key(self) -> str: ...


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
    id: Id
    # Recipients are validated when the mail is built, so a bad address becomes
    # a recorded skip of that notification rather than an unreadable record.
    email: EmailText | None = None
    full_name: NameText | None = None
    locale: LocaleTag = None
    timezone: TimezoneName = None


class Due(ServiceModel):
    id: Id
    user_id: Id
    amount_cents: int = Field(ge=-(10**15), le=10**15)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    due_date: date
    status: DueStatus
    description: DescriptionText | None = None
    user: DueUser


class OverdueMark(KeyedModel):
    due_id: str

    @property
    def key(self) -> str:
        return self.due_id


class OverdueMarkResult(KeyedModel):
    due_id: str
    outcome: Literal["marked", "already_overdue", "invalid_state", "not_found"]

    @property
    def key(self) -> str:
        return self.due_id


VerificationStatus = Literal["pending", "verified", "rejected", "expired"]


class Verification(ServiceModel):
    id: Id
    employee_id: Id
    email: EmailText | None = None
    full_name: NameText | None = None
    status: VerificationStatus
    requested_at: InstantStr
    locale: LocaleTag = None
    timezone: TimezoneName = None

    @property
    def requested_at_dt(self) -> datetime:
        return parse_instant(self.requested_at)


class VerificationDecision(KeyedModel):
    verification_id: str
    status: Literal["verified", "rejected", "expired"]
    reason: str

    @property
    def key(self) -> str:
        return self.verification_id


class VerificationDecisionResult(KeyedModel):
    verification_id: str
    outcome: Literal["updated", "unchanged", "invalid_state", "not_found"]

    @property
    def key(self) -> str:
        return self.verification_id


# --- mongo-service -----------------------------------------------------------

UserStatus = Literal["active", "inactive"]


class InactiveUser(ServiceModel):
    id: Id
    email: EmailText | None = None
    full_name: NameText | None = None
    status: UserStatus
    last_login_at: InstantStr | None = None
    created_at: InstantStr
    locale: LocaleTag = None
    timezone: TimezoneName = None

    @property
    def last_active_at(self) -> str:
        """The instant the inactivity is measured from, as the service wrote it."""
        return self.last_login_at if self.last_login_at is not None else self.created_at

    @property
    def last_active_at_dt(self) -> datetime:
        return parse_instant(self.last_active_at)


class Deactivation(KeyedModel):
    user_id: str
    reason: str = "inactivity"
    last_active_at: InstantStr

    @property
    def key(self) -> str:
        return self.user_id


class DeactivationResult(KeyedModel):
    user_id: str
    outcome: Literal["deactivated", "already_inactive", "active_again", "not_found"]

    @property
    def key(self) -> str:
        return self.user_id


class VerificationAttempt(ServiceModel):
    id: Id
    verification_id: Id
    employee_id: Id
    outcome: Literal["success", "failure"]
    method: Annotated[str, StringConstraints(max_length=64)]
    attempted_at: InstantStr

    @property
    def attempted_at_dt(self) -> datetime:
        return parse_instant(self.attempted_at)


# `released` (contract v1.2): the mail server failed, not the message; claimable again without an attempt.
NotificationStatus = Literal["claimed", "sent", "failed", "skipped", "released"]
# What this project adds to every claim's metadata (docs/services.md, "The ledger"):
# the batch's token, which recognises a claim whose answer was lost, the Message-ID the
# message will carry, which an operator can look up in the mail server's logs, and the channel.
CLAIM_TOKEN = "claim_token"
PLANNED_MESSAGE_ID = "planned_message_id"
# The channel the notification goes out on (`email`, `webhook`): its ledger record names it.
CHANNEL = "channel"
DELIVERY_METADATA = frozenset({CLAIM_TOKEN, PLANNED_MESSAGE_ID, CHANNEL})


class NotificationClaim(KeyedModel):
    idempotency_key: str = Field(min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$")
    kind: str = Field(min_length=1, max_length=64)
    user_id: Id | None = None
    recipient: RecipientText | None = None
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


class ClaimResult(KeyedModel):
    idempotency_key: str
    outcome: Literal["claimed", "duplicate"]
    record: NotificationRecord

    @property
    def key(self) -> str:
        return self.idempotency_key


OutcomeStatus = Literal["sent", "failed", "skipped", "released"]


class NotificationOutcome(KeyedModel):
    idempotency_key: str
    status: OutcomeStatus
    message_id: str | None = None
    error: str | None = None
    at: InstantStr

    @property
    def key(self) -> str:
        return self.idempotency_key


class OutcomeResult(KeyedModel):
    idempotency_key: str
    outcome: Literal["updated", "not_found"]

    @property
    def key(self) -> str:
        return self.idempotency_key


# --- mongo-service, recipients' preferences (v1.1) ---------------------------------

KindName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
OptOutSource = Literal["list-unsubscribe", "link", "support"]


class PreferenceQuery(KeyedModel):
    user_id: Id

    @property
    def key(self) -> str:
        return self.user_id


class Preference(KeyedModel):
    """A user's choices; a user with none stored has no opt-outs and no digest."""

    user_id: Id
    # Bounded: a service cannot make one answer hold more kinds than exist many times over.
    opted_out: Annotated[list[KindName], Field(max_length=64)] = Field(default_factory=list)
    digest: bool = False

    @property
    def key(self) -> str:
        return self.user_id


class OptOut(KeyedModel):
    user_id: Id
    kind: KindName
    source: OptOutSource
    at: InstantStr

    @property
    def key(self) -> str:
        return self.user_id


class OptOutResult(KeyedModel):
    user_id: Id
    outcome: Literal["added", "already", "not_found"]

    @property
    def key(self) -> str:
        return self.user_id
