"""verify_employees end to end: decisions written, result emails only for what changed, reminders."""

from __future__ import annotations

from cron_pipelines_tests.demo_services.helpers import attempt, verification
from cron_pipelines_tests.support.job_world import JobWorld, metadata

# A past day, so as_of = start(D+1) = 2026-11-21T00:00Z whatever the real date.
D = "2026-11-20"


def _seed(world: JobWorld) -> None:
    store = world.services.store
    store.add_verifications(
        [
            verification("v_success", requested_at="2026-11-18T09:00:00Z"),
            verification("v_five", requested_at="2026-11-16T09:00:00Z"),
            verification("v_four", requested_at="2026-11-17T09:00:00Z"),
            verification("v_expired", requested_at="2026-11-05T10:00:00Z"),
            verification("v_day7", requested_at="2026-11-13T09:00:00Z"),
            verification("v_day10_recent", requested_at="2026-11-10T09:00:00Z"),
            verification("v_day10", requested_at="2026-11-10T08:00:00Z"),
            verification("v_done", requested_at="2026-11-17T09:00:00Z", status="verified"),
        ]
    )
    store.add_attempts(
        [
            attempt("a1", verification_id="v_success", outcome="failure", attempted_at="2026-11-18T10:00:00Z"),
            attempt("a2", verification_id="v_success", outcome="success", attempted_at="2026-11-19T10:00:00Z"),
            *[
                attempt(f"f5_{n}", verification_id="v_five", attempted_at=f"2026-11-1{6 + n % 3}T1{n}:00:00Z")
                for n in range(5)
            ],
            *[
                attempt(f"f4_{n}", verification_id="v_four", attempted_at=f"2026-11-1{7 + n % 3}T1{n}:00:00Z")
                for n in range(4)
            ],
            attempt("r1", verification_id="v_day10_recent", attempted_at="2026-11-18T12:00:00Z"),
            attempt("o1", verification_id="v_day10", attempted_at="2026-11-16T12:00:00Z"),
        ]
    )


EXPECTED = sorted(
    [
        "verification_result:v_success:verified",
        "verification_result:v_five:rejected",
        "verification_result:v_expired:expired",
        "verification_reminder:v_day7:7",
        "verification_reminder:v_day10:10",
    ]
)


def test_decisions_and_reminders(world: JobWorld) -> None:
    _seed(world)
    result = world.run("verify_employees", D)

    assert result.success
    store = world.services.store
    assert store.get_verification("v_success")["status"] == "verified"
    assert store.get_verification("v_five")["status"] == "rejected"
    assert store.get_verification("v_expired")["status"] == "expired"
    for pending in ("v_four", "v_day7", "v_day10_recent", "v_day10"):
        assert store.get_verification(pending)["status"] == "pending"
    assert world.sent_keys() == EXPECTED
    rejected_mail = next(m for m in world.mails() if m.notification_id == "verification_result:v_five:rejected")
    assert rejected_mail.rcpt_tos == ("v_five@example.org",)
    decisions = metadata(result, "verification_decisions")
    assert (decisions["decision.verified"], decisions["decision.rejected"], decisions["decision.expired"]) == (1, 1, 1)
    assert (decisions["write.updated"], decisions["sent"]) == (3, 3)
    assert metadata(result, "verification_reminders")["sent"] == 2

    again = world.run("verify_employees", D)
    assert again.success and world.sent_keys() == EXPECTED
    assert metadata(again, "verification_decisions")["write.updated"] == 0


def test_a_decision_made_elsewhere_is_not_announced(world: JobWorld) -> None:
    _seed(world)
    # Someone verified v_success by hand before the run: the write answers `unchanged`, no email.
    world.services.store.add_verifications(
        [verification("v_manual", requested_at="2026-11-18T09:00:00Z", status="pending")]
    )
    world.services.store.add_attempts(
        [attempt("m1", verification_id="v_manual", outcome="success", attempted_at="2026-11-19T09:00:00Z")]
    )
    import sqlite3

    with sqlite3.connect(world.services.store.path) as connection:
        connection.execute("UPDATE verifications SET status = 'verified' WHERE id = 'v_manual'")
    result = world.run("verify_employees", D)
    assert result.success
    assert "verification_result:v_manual:verified" not in world.sent_keys()


def test_a_sensor_run_touches_only_the_named_verifications(world: JobWorld) -> None:
    _seed(world)
    config = {"ops": {"verify_employees_assets": {"config": {"verification_ids": ["v_success", "v_day7"]}}}}
    result = world.run("verify_employees", D, run_config=config)

    assert result.success
    assert world.sent_keys() == ["verification_reminder:v_day7:7", "verification_result:v_success:verified"]
    assert world.services.store.get_verification("v_five")["status"] == "pending"
    assert metadata(result, "verification_decisions")["only_verification_ids"] == 2
