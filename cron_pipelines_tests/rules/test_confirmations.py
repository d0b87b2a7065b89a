"""Whether a confirmation email (account deactivated, verification decided) is sent after the service write."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import ClaimResult, InactiveUser, NotificationRecord, Verification
from cron_pipelines.rules.calendar import BusinessDay
from cron_pipelines.rules.confirmations import claimed_before, confirmation_from_record, confirmation_skip_reason
from cron_pipelines.rules.inactivity import account_deactivated
from cron_pipelines.rules.verifications import Decision, verification_result

DEACTIVATION = {"applied": "deactivated", "already": "already_inactive"}
DECISION = {"applied": "updated", "already": "unchanged"}


@pytest.mark.parametrize("outcomes", [DEACTIVATION, DECISION], ids=["deactivation", "decision"])
@pytest.mark.parametrize("before", [False, True])
def test_a_write_applied_now_is_confirmed(outcomes: dict[str, str], before: bool) -> None:
    assert confirmation_skip_reason(outcomes["applied"], **outcomes, claimed_before=before) is None


@pytest.mark.parametrize("outcomes", [DEACTIVATION, DECISION], ids=["deactivation", "decision"])
def test_already_applied_on_a_first_claim_is_skipped(outcomes: dict[str, str]) -> None:
    reason = confirmation_skip_reason(outcomes["already"], **outcomes, claimed_before=False)

    assert reason == f"not sent: the service answered `{outcomes['already']}`"


@pytest.mark.parametrize("outcomes", [DEACTIVATION, DECISION], ids=["deactivation", "decision"])
def test_already_applied_on_a_claim_that_takes_up_an_earlier_one_is_still_confirmed(outcomes: dict[str, str]) -> None:
    # The earlier, failed or released send belonged to the run that made the change: the email is still owed.
    assert confirmation_skip_reason(outcomes["already"], **outcomes, claimed_before=True) is None


@pytest.mark.parametrize(
    ("outcome", "outcomes"),
    [
        ("active_again", DEACTIVATION),
        ("not_found", DEACTIVATION),
        ("invalid_state", DECISION),
        ("not_found", DECISION),
    ],
)
@pytest.mark.parametrize("before", [False, True])
def test_other_outcomes_are_skipped_naming_the_outcome(outcome: str, outcomes: dict[str, str], before: bool) -> None:
    reason = confirmation_skip_reason(outcome, **outcomes, claimed_before=before)

    assert reason == f"not sent: the service answered `{outcome}`"


def test_the_already_outcome_of_another_write_does_not_count() -> None:
    # `unchanged` is not the `already` outcome of a deactivation.
    assert confirmation_skip_reason("unchanged", **DEACTIVATION, claimed_before=True) is not None


@pytest.mark.parametrize(
    ("resent", "attempts", "expected"),
    [(False, 1, False), (False, 2, True), (True, 1, True)],
    ids=["first-claim", "failed-claimed-again", "released-rebuilt-from-the-ledger"],
)
def test_a_claim_takes_up_an_earlier_one_when_rebuilt_from_the_ledger_or_counted_again(
    resent: bool, attempts: int, expected: bool
) -> None:
    notification = Notification(
        key="account_deactivated:x", kind=NotificationKind.ACCOUNT_DEACTIVATED, user_id="u", address=None, name=None
    )
    claim = ClaimResult(
        idempotency_key=notification.key,
        outcome="claimed",
        record=_record("account_deactivated", {}, attempts=attempts),
    )
    assert claimed_before(replace(notification, resent=resent), claim) is expected


# --- a failed confirmation rebuilt from its ledger record ---------------------------------------------


def _record(kind: str, metadata: dict, **fields: object) -> NotificationRecord:
    return NotificationRecord.model_validate(
        {
            "idempotency_key": f"{kind}:x",
            "kind": kind,
            "user_id": "usr_9",
            "recipient": "a@example.com",
            "status": "claimed",
            "claimed_at": "2026-11-28T09:00:00Z",
            "metadata": metadata,
            "attempts": 2,
            **fields,
        }
    )


def _first_send(notification: Notification) -> NotificationRecord:
    """The record the first claim of `notification` left in the ledger."""
    return _record(
        notification.kind,
        {**notification.metadata, "claim_token": "abc"},
        idempotency_key=notification.key,
        user_id=notification.user_id,
        recipient=notification.address,
    )


def test_a_deactivation_email_is_rebuilt_exactly_from_its_record() -> None:
    user = InactiveUser.model_validate(
        {
            "id": "usr_9",
            "email": "a@example.com",
            "full_name": "Åsa <b>Rao</b>",
            "status": "active",
            "last_login_at": "2026-08-01T20:00:00+05:30",
            "created_at": "2025-01-01T00:00:00Z",
        }
    )
    original = account_deactivated(user, BusinessDay.from_partition_key("2026-11-28", "Asia/Kolkata"))

    rebuilt = confirmation_from_record(_first_send(original))

    # Same key, kind, recipient, name, context and metadata: the same email, known to have been claimed before.
    assert rebuilt == replace(original, resent=True)


def test_a_verification_result_is_rebuilt_exactly_from_its_record() -> None:
    verification = Verification.model_validate(
        {
            "id": "ver_7",
            "employee_id": "emp_3",
            "email": "e@example.com",
            "full_name": "Emp Three",
            "status": "pending",
            "requested_at": "2026-11-20T10:00:00Z",
        }
    )
    original = verification_result(
        verification, Decision("rejected", "5 failed attempts"), BusinessDay.from_partition_key("2026-11-28", "UTC")
    )

    assert confirmation_from_record(_first_send(original)) == replace(original, resent=True)


@pytest.mark.parametrize(
    ("kind", "metadata", "user_id", "missing"),
    [
        ("account_deactivated", {"name": "A", "context": {}}, "usr_9", "last_active_at"),
        ("account_deactivated", {"last_active_at": "2026-08-01T00:00:00Z", "name": "A"}, "usr_9", "context"),
        ("account_deactivated", {"last_active_at": "2026-08-01T00:00:00Z", "context": {}}, None, "user_id"),
        ("verification_result", {"verification_id": "ver_7", "status": "verified", "context": {}}, "emp_3", "reason"),
    ],
)
def test_a_record_that_cannot_be_resent_is_skipped_with_the_reason(
    kind: str, metadata: dict, user_id: str | None, missing: str
) -> None:
    notification = confirmation_from_record(_record(kind, metadata, user_id=user_id))

    assert notification.skip_reason == f"ledger record lacks {missing}: cannot resend"
