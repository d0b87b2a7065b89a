"""The demo data covers every business rule of docs/services.md, The business rules around a fixed day D, deterministically."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cron_pipelines.models.payloads import parse_instant
from cron_pipelines_tests.demo_services.helpers import fetch_all, ids
from demo_services import DemoStore, seed_demo_data

D = date(2026, 11, 28)
START = datetime(2026, 11, 28, tzinfo=UTC)  # start(D) in UTC
AS_OF = START + timedelta(days=1)  # a run of D after the day is over


def day(offset: int) -> str:
    return (D + timedelta(days=offset)).isoformat()


def instant(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _dump(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in tables}


@pytest.fixture
def seeded(demo_store: DemoStore) -> dict[str, int]:
    return seed_demo_data(demo_store, D, users=0)


def test_seeding_reports_what_it_inserted(demo_store: DemoStore, seeded: dict[str, int]) -> None:
    assert seeded == demo_store.table_counts()
    assert all(count > 0 for count in seeded.values())


def test_seeding_is_deterministic(tmp_path: Path) -> None:
    first, second, other = (DemoStore(tmp_path / f"{name}.sqlite3") for name in ("first", "second", "other"))
    seed_demo_data(first, D, users=50)
    seed_demo_data(second, D, users=50)
    seed_demo_data(other, D, users=50, seed=8)
    assert _dump(first.path) == _dump(second.path)
    assert _dump(first.path)["users"] != _dump(other.path)["users"]
    assert [row[0] for row in _dump(first.path)["users"]] == [row[0] for row in _dump(other.path)["users"]]


@pytest.mark.usefixtures("seeded")
def test_payment_reminders_fall_due_7_3_1_and_0_days_ahead(sql: httpx.Client) -> None:
    window, _ = fetch_all(sql, "/v1/dues", {"status": "pending", "due_from": day(0), "due_to": day(7)})
    days_before = {item["id"]: (date.fromisoformat(item["due_date"]) - D).days for item in window}
    assert days_before == {
        "due_pending_in_0d": 0,
        "due_pending_in_1d": 1,
        "due_pending_in_2d": 2,
        "due_pending_in_3d": 3,
        "due_pending_in_5d": 5,
        "due_pending_in_7d": 7,
        "due_no_email": 3,
        "due_bad_email": 3,
        "due_header_injection": 3,
        "due_script_name": 3,
        "due_opted_out_in_3d": 3,
        "due_digest_in_3d": 3,
        "due_digest_in_7d": 7,
        "due_en_in_in_3d": 3,
        "due_de_de_in_7d": 7,
    }
    reminded = {due_id for due_id, days in days_before.items() if days in (7, 3, 1, 0)}
    assert {"due_pending_in_0d", "due_pending_in_1d", "due_pending_in_3d", "due_pending_in_7d"} <= reminded


@pytest.mark.usefixtures("seeded")
def test_readers_in_en_in_and_de_de_carry_locale_and_timezone_and_others_carry_neither(
    sql: httpx.Client, mongo: httpx.Client
) -> None:
    dues, _ = fetch_all(sql, "/v1/dues", {"status": "pending", "due_from": day(0), "due_to": day(7)})
    users = {item["id"]: item["user"] for item in dues}
    assert users["due_en_in_in_3d"] | {"email": None, "full_name": None} == {
        "id": "usr_en_in_in_3d", "email": None, "full_name": None, "locale": "en-IN", "timezone": "Asia/Kolkata",
    }  # fmt: skip
    assert (users["due_de_de_in_7d"]["locale"], users["due_de_de_in_7d"]["timezone"]) == ("de-DE", "Europe/Berlin")
    assert "locale" not in users["due_pending_in_3d"] and "timezone" not in users["due_pending_in_3d"]
    inactive, _ = fetch_all(mongo, "/v1/users/inactive", {"last_active_before": "2030-01-01T00:00:00Z"})
    locales = {user.get("locale") for user in inactive}
    assert {"en-IN", "de-DE", None} <= locales


@pytest.mark.usefixtures("seeded")
def test_preferences_are_seeded_for_the_v1_1_scenarios(mongo: httpx.Client) -> None:
    answer = mongo.post(
        "/v1/notification-preferences/lookup",
        json={"items": [{"user_id": "usr_opted_out_in_3d"}, {"user_id": "usr_digest_reader"}, {"user_id": "usr_x"}]},
    )
    assert answer.json()["results"] == [
        {"user_id": "usr_opted_out_in_3d", "opted_out": ["payment_reminder"], "digest": False},
        {"user_id": "usr_digest_reader", "opted_out": [], "digest": True},
        {"user_id": "usr_x", "opted_out": [], "digest": False},  # no preferences stored: the defaults
    ]


def test_settled_and_far_dues_exist_inside_and_around_the_window(demo_store: DemoStore, seeded: dict) -> None:
    assert demo_store.get_due("due_pending_in_8d")["due_date"] == day(8)
    assert (demo_store.get_due("due_paid_in_3d")["status"], demo_store.get_due("due_paid_in_3d")["due_date"]) == (
        "paid",
        day(3),
    )
    assert demo_store.get_due("due_cancelled_in_7d")["status"] == "cancelled"
    assert demo_store.get_due("due_cancelled_past_1d")["status"] == "cancelled"
    assert demo_store.get_due("due_paid_past_7d")["status"] == "paid"


@pytest.mark.usefixtures("seeded")
def test_overdue_rules_have_dues_to_mark_and_notices_to_send(sql: httpx.Client) -> None:
    to_mark, _ = fetch_all(sql, "/v1/dues", {"status": "pending", "due_to": day(-1)})
    assert set(ids(to_mark)) == {
        "due_pending_past_1d",
        "due_pending_past_10d",
        "due_pending_past_30d",
        "due_pending_past_45d",
    }
    overdue, _ = fetch_all(sql, "/v1/dues", {"status": "overdue", "due_from": day(-30), "due_to": day(-1)})
    days_late = {item["id"]: (D - date.fromisoformat(item["due_date"])).days for item in overdue}
    assert days_late == {
        "due_overdue_1d": 1,
        "due_overdue_7d": 7,
        "due_overdue_10d": 10,
        "due_overdue_14d": 14,
        "due_overdue_30d": 30,
    }
    everything, _ = fetch_all(sql, "/v1/dues", {"status": "overdue"})
    assert "due_overdue_31d" in ids(everything)


def _inactive_ids(mongo: httpx.Client, days: int) -> set[str]:
    items, _ = fetch_all(mongo, "/v1/users/inactive", {"last_active_before": instant(START - timedelta(days=days))})
    return set(ids(items))


@pytest.mark.usefixtures("seeded")
def test_inactivity_has_users_on_both_sides_of_30_and_90_days(mongo: httpx.Client) -> None:
    assert _inactive_ids(mongo, 30) == {
        "usr_inactive_31d",
        "usr_inactive_89d",
        "usr_inactive_90d",
        "usr_inactive_91d",
        "usr_inactive_95d",
        "usr_inactive_100d",
        "usr_inactive_120d",
        "usr_inactive_150d",
        "usr_never_logged_in",
    }
    assert _inactive_ids(mongo, 90) == {
        "usr_inactive_91d",
        "usr_inactive_95d",
        "usr_inactive_100d",
        "usr_inactive_120d",
        "usr_inactive_150d",
        "usr_never_logged_in",
    }


def test_user_records_behind_the_inactivity_rules(demo_store: DemoStore, seeded: dict) -> None:
    assert demo_store.get_user("usr_inactive_30d")["last_login_at"] == f"{day(-30)}T10:00:00Z"
    never = demo_store.get_user("usr_never_logged_in")
    assert never["last_login_at"] is None and never["created_at"] == f"{day(-200)}T09:00:00Z"
    assert demo_store.get_user("usr_never_logged_in_recent")["last_login_at"] is None
    assert demo_store.get_user("usr_already_inactive")["status"] == "inactive"


@pytest.mark.usefixtures("seeded")
def test_warnings_let_some_users_be_deactivated_and_others_wait(demo_store: DemoStore, mongo: httpx.Client) -> None:
    candidates, _ = fetch_all(mongo, "/v1/users/inactive", {"last_active_before": instant(START - timedelta(days=90))})
    outcome = {}
    for candidate in candidates:
        stretch = candidate["last_login_at"] or candidate["created_at"]
        warning = demo_store.get_notification(f"inactivity_warning:{candidate['id']}:{stretch}")
        if warning is None:
            outcome[candidate["id"]] = "warn"
        elif warning["status"] == "sent" and parse_instant(warning["sent_at"]).date() <= D - timedelta(days=7):
            outcome[candidate["id"]] = "deactivate"
        elif warning["status"] == "sent":
            outcome[candidate["id"]] = "wait"
        else:
            outcome[candidate["id"]] = f"warn again ({warning['status']})"
    assert outcome == {
        "usr_inactive_91d": "deactivate",
        "usr_inactive_100d": "deactivate",  # sent late on D − 7 itself
        "usr_never_logged_in": "deactivate",
        "usr_inactive_120d": "wait",  # sent 3 days ago
        "usr_inactive_95d": "warn",  # only warned for an earlier stretch
        "usr_inactive_150d": "warn again (failed)",
    }
    warning = demo_store.get_notification("inactivity_warning:usr_inactive_91d:" + f"{day(-91)}T10:00:00Z")
    assert warning["kind"] == "inactivity_warning" and warning["recipient"].endswith("@example.com")
    assert parse_instant(warning["claimed_at"]) <= parse_instant(warning["sent_at"])
    assert warning["message_id"].startswith("<") and warning["partition_key"] == day(-8)


@pytest.mark.usefixtures("seeded")
def test_verifications_reach_every_decision(sql: httpx.Client, mongo: httpx.Client) -> None:
    pending, _ = fetch_all(sql, "/v1/verifications", {"status": "pending"})
    attempts, _ = fetch_all(mongo, "/v1/verification-attempts", {"verification_id": ids(pending)})
    decision = {}
    for item in pending:
        mine = [a for a in attempts if a["verification_id"] == item["id"]]
        requested = parse_instant(item["requested_at"])
        since_request = (D - requested.date()).days
        recent = [a for a in mine if AS_OF - timedelta(days=3) <= parse_instant(a["attempted_at"]) < AS_OF]
        if any(a["outcome"] == "success" for a in mine):
            decision[item["id"]] = "verified"
        elif sum(a["outcome"] == "failure" for a in mine) >= 5:
            decision[item["id"]] = "rejected"
        elif requested < START - timedelta(days=14):
            decision[item["id"]] = "expired"
        elif since_request in (3, 7, 10) and not recent:
            decision[item["id"]] = f"reminder after {since_request} days"
        else:
            decision[item["id"]] = "wait"
    assert decision == {
        "ver_success": "verified",
        "ver_five_failures": "rejected",
        "ver_four_failures": "wait",
        "ver_requested_15d": "expired",
        "ver_requested_14d": "wait",
        "ver_requested_3d": "reminder after 3 days",
        "ver_requested_3d_recent_attempt": "wait",
        "ver_requested_7d_old_attempt": "reminder after 7 days",
        "ver_requested_7d_recent_attempt": "wait",
        "ver_requested_10d": "reminder after 10 days",
        "ver_requested_10d_recent_attempt": "wait",
    }
    decided, _ = fetch_all(sql, "/v1/verifications", {"status": ["verified", "rejected", "expired"]})
    assert {"ver_already_verified", "ver_already_rejected", "ver_already_expired"} <= set(ids(decided))


@pytest.mark.usefixtures("seeded")
def test_hostile_records_reach_the_client_intact(sql: httpx.Client) -> None:
    window, _ = fetch_all(sql, "/v1/dues", {"status": "pending", "due_from": day(3), "due_to": day(3)})
    users = {item["id"]: item["user"] for item in window}
    assert users["due_no_email"]["email"] is None
    assert users["due_bad_email"]["email"] == "not-an-email"
    assert "\r\nBcc: victim@example.com" in users["due_header_injection"]["full_name"]
    assert "<script>alert(1)</script>" in users["due_script_name"]["full_name"]


def test_every_instant_is_rfc3339_utc_and_names_are_realistic(demo_store: DemoStore) -> None:
    seed_demo_data(demo_store, D, users=60)
    with sqlite3.connect(demo_store.path) as conn:
        instants = [
            value
            for table, column in (
                ("users", "last_login_at"),
                ("users", "created_at"),
                ("verifications", "requested_at"),
                ("verification_attempts", "attempted_at"),
                ("notifications", "claimed_at"),
                ("notifications", "sent_at"),
            )
            for (value,) in conn.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")
        ]
        emails = [email for (email,) in conn.execute("SELECT email FROM users WHERE email LIKE '%@%'")]
    assert instants and all(value.endswith("Z") and parse_instant(value) for value in instants)
    assert all(parse_instant(value) < AS_OF for value in instants)
    assert len(emails) == len(set(emails))
    assert all(email.rsplit("@", 1)[1] in ("example.com", "example.org") for email in emails)


def test_ordinary_members_do_not_disturb_the_scenarios(tmp_path: Path) -> None:
    alone, crowded = DemoStore(tmp_path / "alone.sqlite3"), DemoStore(tmp_path / "crowded.sqlite3")
    seed_demo_data(alone, D, users=0)
    counts = seed_demo_data(crowded, D, users=80)
    assert counts["users"] == alone.table_counts()["users"] + 80
    assert crowded.get_user("usr_00080") is not None and crowded.get_user("usr_00081") is None
    cutoff = START - timedelta(days=29)
    before = alone.page_inactive_users(last_active_before=cutoff, limit=1000).items
    after = crowded.page_inactive_users(last_active_before=cutoff, limit=1000).items
    assert ids(after) == ids(before)


def test_instants_follow_the_configured_timezone(demo_store: DemoStore) -> None:
    seed_demo_data(demo_store, D, timezone="Asia/Kolkata", users=0)
    # 10:00 in Kolkata is 04:30 UTC; dates stay dates.
    assert demo_store.get_user("usr_inactive_31d")["last_login_at"] == f"{day(-31)}T04:30:00Z"
    assert demo_store.get_due("due_pending_in_7d")["due_date"] == day(7)
