"""Whether a confirmation email (account deactivated, verification decided) is sent after the service write."""

from __future__ import annotations

import pytest

from cron_pipelines.rules.confirmations import confirmation_skip_reason

DEACTIVATION = {"applied": "deactivated", "already": "already_inactive"}
DECISION = {"applied": "updated", "already": "unchanged"}


@pytest.mark.parametrize("outcomes", [DEACTIVATION, DECISION], ids=["deactivation", "decision"])
@pytest.mark.parametrize("attempts", [1, 2, 5])
def test_a_write_applied_now_is_confirmed(outcomes: dict[str, str], attempts: int) -> None:
    assert confirmation_skip_reason(outcomes["applied"], **outcomes, claim_attempts=attempts) is None


@pytest.mark.parametrize("outcomes", [DEACTIVATION, DECISION], ids=["deactivation", "decision"])
def test_already_applied_on_a_first_claim_is_skipped(outcomes: dict[str, str]) -> None:
    reason = confirmation_skip_reason(outcomes["already"], **outcomes, claim_attempts=1)

    assert reason == f"not sent: the service answered `{outcomes['already']}`"


@pytest.mark.parametrize("outcomes", [DEACTIVATION, DECISION], ids=["deactivation", "decision"])
@pytest.mark.parametrize("attempts", [2, 3])
def test_already_applied_on_a_retried_claim_is_still_confirmed(outcomes: dict[str, str], attempts: int) -> None:
    # The earlier, failed send belonged to the run that made the change: the email is still owed.
    assert confirmation_skip_reason(outcomes["already"], **outcomes, claim_attempts=attempts) is None


@pytest.mark.parametrize(
    ("outcome", "outcomes"),
    [
        ("active_again", DEACTIVATION),
        ("not_found", DEACTIVATION),
        ("invalid_state", DECISION),
        ("not_found", DECISION),
    ],
)
@pytest.mark.parametrize("attempts", [1, 2])
def test_other_outcomes_are_skipped_naming_the_outcome(outcome: str, outcomes: dict[str, str], attempts: int) -> None:
    reason = confirmation_skip_reason(outcome, **outcomes, claim_attempts=attempts)

    assert reason == f"not sent: the service answered `{outcome}`"


def test_the_already_outcome_of_another_write_does_not_count() -> None:
    # `unchanged` is not the `already` outcome of a deactivation.
    assert confirmation_skip_reason("unchanged", **DEACTIVATION, claim_attempts=2) is not None
