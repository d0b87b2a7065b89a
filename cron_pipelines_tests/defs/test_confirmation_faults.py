"""Confirmation emails (account deactivated, verification decided) survive faults on either side of
their service write: a lost send is sent by a later run although its subject has left the service's
lists; a failed or lost write is done by a later run, and its email sent once."""

from __future__ import annotations

from cron_pipelines_tests.demo_services.helpers import attempt, ledger_record, user, verification
from cron_pipelines_tests.support.job_world import JobWorld, failure_messages, metadata

D = "2026-11-28"
LAST_LOGIN = "2026-08-01T10:00:00Z"
DEACTIVATED = f"account_deactivated:u_old:{LAST_LOGIN}"
ATTEMPTS_PER_REQUEST = 4  # SERVICE_MAX_ATTEMPTS of the job world


def _seed_user_due_for_deactivation(world: JobWorld) -> None:
    world.services.store.add_users([user("u_old", last_login_at=LAST_LOGIN, full_name="Zoë <Old>")])
    world.services.store.add_notifications(
        [
            ledger_record(
                f"inactivity_warning:u_old:{LAST_LOGIN}",
                kind="inactivity_warning",
                user_id="u_old",
                recipient="u_old@example.com",
                claimed_at="2026-11-01T09:00:00Z",
                sent_at="2026-11-01T09:00:00Z",
                metadata={},
            )
        ]
    )


def _deactivation_mails(world: JobWorld) -> list:
    return [mail for mail in world.mails() if mail.notification_id == DEACTIVATED]


SHUTTING_DOWN = "421 4.3.2 Service shutting down"  # the mail server fails after the claim and the write


def test_a_deactivation_email_lost_to_a_mail_outage_is_sent_by_a_later_run(world: JobWorld) -> None:
    _seed_user_due_for_deactivation(world)
    world.smtp.recipient_reply = SHUTTING_DOWN
    down = world.run("deactivate_inactive_users", D)

    assert not down.success
    assert world.services.store.get_user("u_old")["status"] == "inactive"  # the write was done
    assert world.ledger()[DEACTIVATED]["status"] == "released"

    world.smtp.recipient_reply = None
    back = world.run("deactivate_inactive_users", D)  # u_old is no longer in the inactive-users list
    assert back.success
    (mail,) = _deactivation_mails(world)
    assert mail.rcpt_tos == ("u_old@example.com",)
    assert "Zoë" in mail.message.get_body(("plain",)).get_content()  # the same email, rebuilt from the ledger
    assert "&lt;Old&gt;" in mail.message.get_body(("html",)).get_content()
    # A release is not an attempt; the write's `already_inactive` still sends: the ledger knew the earlier claim.
    assert (world.ledger()[DEACTIVATED]["status"], world.ledger()[DEACTIVATED]["attempts"]) == ("sent", 1)
    summary = metadata(back, "inactive_user_deactivations")
    assert (summary["failed_confirmations_retried"], summary["write.already_inactive"], summary["sent"]) == (1, 1, 1)

    assert world.run("deactivate_inactive_users", D).success
    assert len(_deactivation_mails(world)) == 1


def test_a_failed_deactivation_write_is_done_and_confirmed_by_a_later_run(world: JobWorld) -> None:
    _seed_user_due_for_deactivation(world)
    world.services.mongo_faults.add(
        method="POST", path="/v1/users/deactivations", status=503, times=ATTEMPTS_PER_REQUEST
    )
    failed = world.run("deactivate_inactive_users", D)

    assert not failed.success
    assert "mongo-service: POST /v1/users/deactivations" in failure_messages(failed)
    assert world.services.store.get_user("u_old")["status"] == "active" and _deactivation_mails(world) == []
    record = world.ledger()[DEACTIVATED]
    assert record["status"] == "released" and "ServiceUnavailable" in record["error"]  # not stranded as `claimed`

    assert world.run("deactivate_inactive_users", D).success
    assert world.services.store.get_user("u_old")["status"] == "inactive"
    assert len(_deactivation_mails(world)) == 1
    assert world.ledger()[DEACTIVATED]["status"] == "sent"


def test_a_deactivation_whose_answer_was_lost_is_confirmed_by_a_later_run(world: JobWorld) -> None:
    _seed_user_due_for_deactivation(world)
    world.services.mongo_faults.add(
        method="POST", path="/v1/users/deactivations", status=502, times=ATTEMPTS_PER_REQUEST, after_handling=True
    )
    assert not world.run("deactivate_inactive_users", D).success
    assert world.services.store.get_user("u_old")["status"] == "inactive"  # done, but the run never heard
    assert world.ledger()[DEACTIVATED]["status"] == "released"

    later = world.run("deactivate_inactive_users", D)
    assert later.success and len(_deactivation_mails(world)) == 1
    assert metadata(later, "inactive_user_deactivations")["write.already_inactive"] == 1


def test_a_verification_result_lost_to_a_mail_outage_is_sent_by_a_later_run(world: JobWorld) -> None:
    world.services.store.add_verifications([verification("v_ok", requested_at="2026-11-26T09:00:00Z")])
    world.services.store.add_attempts(
        [
            attempt("a1", verification_id="v_ok", outcome="success", attempted_at="2026-11-27T10:00:00Z"),
        ]
    )
    world.smtp.recipient_reply = SHUTTING_DOWN
    assert not world.run("verify_employees", D).success
    assert world.services.store.get_verification("v_ok")["status"] == "verified"
    assert world.ledger()["verification_result:v_ok:verified"]["status"] == "released"

    world.smtp.recipient_reply = None
    back = world.run("verify_employees", D)  # v_ok is no longer pending
    assert back.success
    assert world.sent_keys() == ["verification_result:v_ok:verified"]
    decisions = metadata(back, "verification_decisions")
    assert (decisions["failed_confirmations_retried"], decisions["write.unchanged"], decisions["sent"]) == (1, 1, 1)
    assert world.run("verify_employees", D).success and len(world.mails()) == 1
