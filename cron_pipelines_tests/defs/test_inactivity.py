"""notify_inactive_users and deactivate_inactive_users end to end."""

from __future__ import annotations

from cron_pipelines_tests.demo_services.helpers import ledger_record, user
from cron_pipelines_tests.support.job_world import JobWorld, metadata

D = "2026-11-28"  # start(D) = 2026-11-28T00:00Z; 30 days: before 2026-10-29; 90 days: before 2026-08-30


def _warning(user_id: str, last_active_at: str, sent_at: str) -> dict:
    return ledger_record(
        f"inactivity_warning:{user_id}:{last_active_at}",
        kind="inactivity_warning",
        user_id=user_id,
        recipient=f"{user_id}@example.com",
        job_name="notify_inactive_users",
        claimed_at=sent_at,
        sent_at=sent_at,
        metadata={},
    )


def _seed(world: JobWorld) -> None:
    world.services.store.add_users(
        [
            user("u29", last_login_at="2026-10-30T10:00:00Z"),
            user("u31", last_login_at="2026-10-28T10:00:00Z"),
            user("u_never", last_login_at=None, created_at="2026-06-01T00:00:00Z"),
            user("u91_warned_8d", last_login_at="2026-08-29T10:00:00Z"),
            user("u91_warned_7d", last_login_at="2026-08-29T09:00:00+05:30"),
            user("u95_warned_3d", last_login_at="2026-08-25T10:00:00Z"),
            user("u100_unwarned", last_login_at="2026-08-20T10:00:00Z"),
            user("u_inactive", last_login_at="2026-01-01T10:00:00Z", status="inactive"),
        ]
    )
    world.services.store.add_notifications(
        [
            _warning("u91_warned_8d", "2026-08-29T10:00:00Z", "2026-11-20T09:00:00Z"),
            _warning("u91_warned_7d", "2026-08-29T09:00:00+05:30", "2026-11-21T23:00:00Z"),
            _warning("u95_warned_3d", "2026-08-25T10:00:00Z", "2026-11-25T09:00:00Z"),
        ]
    )


def test_warnings_go_once_per_inactive_stretch_and_name_the_deactivation_day(world: JobWorld) -> None:
    _seed(world)
    result = world.run("notify_inactive_users", D)

    assert result.success
    assert world.sent_keys() == sorted(
        [
            "inactivity_warning:u31:2026-10-28T10:00:00Z",
            "inactivity_warning:u_never:2026-06-01T00:00:00Z",
            "inactivity_warning:u100_unwarned:2026-08-20T10:00:00Z",
        ]
    )
    by_key = {mail.notification_id: mail.message for mail in world.mails()}
    # 31 days inactive: deactivation once 90 days have passed, on 2027-01-27.
    assert (
        by_key["inactivity_warning:u31:2026-10-28T10:00:00Z"]["Subject"]
        == "Your account will be deactivated on January 27, 2027"
    )
    # Already past 90 days: a week's grace from today.
    assert (
        by_key["inactivity_warning:u100_unwarned:2026-08-20T10:00:00Z"]["Subject"]
        == "Your account will be deactivated on December 5, 2026"
    )
    summary = metadata(result, "inactivity_warnings")
    assert (summary["sent"], summary["duplicate"]) == (3, 3)
    assert world.run("notify_inactive_users", D).success and len(world.mails()) == 3


def test_deactivation_needs_a_warning_sent_a_week_ago_and_warns_the_rest(world: JobWorld) -> None:
    _seed(world)
    result = world.run("deactivate_inactive_users", D)

    assert result.success
    store = world.services.store
    assert store.get_user("u91_warned_8d")["status"] == "inactive"
    assert store.get_user("u91_warned_7d")["status"] == "inactive"  # sent on D − 7 (late evening): in time
    for waiting in ("u95_warned_3d", "u100_unwarned", "u_never", "u31"):
        assert store.get_user(waiting)["status"] == "active"
    assert world.sent_keys() == sorted(
        [
            "account_deactivated:u91_warned_8d:2026-08-29T10:00:00Z",
            "account_deactivated:u91_warned_7d:2026-08-29T09:00:00+05:30",
            "inactivity_warning:u100_unwarned:2026-08-20T10:00:00Z",
            "inactivity_warning:u_never:2026-06-01T00:00:00Z",
        ]
    )
    summary = metadata(result, "inactive_user_deactivations")
    assert summary["write.deactivated"] == 2
    assert {state: summary[f"warning.{state}"] for state in ("deactivate", "grace_pending", "warned_now")} == {
        "deactivate": 2,
        "grace_pending": 1,
        "warned_now": 2,
    }
    assert summary["account_deactivated.sent"] == 2 and summary["inactivity_warning.sent"] == 2

    again = world.run("deactivate_inactive_users", D)
    assert again.success and len(world.mails()) == 4
    assert metadata(again, "inactive_user_deactivations")["write.deactivated"] == 0
