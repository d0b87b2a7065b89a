"""Emails that confirm a service write (an account deactivated, a verification decided).

Such an email is claimed in the ledger before the write, so a crash between the
write and the send can never lose it silently: the claim stays `claimed` and the
maintenance job reports it. After the write, this decides whether to send it.
"""

from __future__ import annotations


def confirmation_skip_reason(write_outcome: str, *, applied: str, already: str, claim_attempts: int) -> str | None:
    """None to send the confirmation, else why it is recorded `skipped`.

    `applied` is the outcome of a write that changed state now (e.g. `deactivated`).
    `already` (e.g. `already_inactive`) still gets the email when this claim is a retry
    of a `failed` send: only a run that saw `applied` ever reaches the send, so the
    earlier attempt made the change and the email is still owed.
    """
    if write_outcome == applied:
        return None
    if write_outcome == already and claim_attempts > 1:
        return None
    return f"not sent: the service answered `{write_outcome}`"
