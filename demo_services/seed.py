"""Deterministic demo data that exercises every business rule of docs/services.md.

Relative to a given day D (`today`), so that running the jobs for D in `dagster dev`
shows each rule at work, including its boundaries: reminders 7/3/1/0 days ahead and
not 2/5/8, overdue notices 1/7/14/30 days late and not 10/31, warnings after 30 days,
deactivation after 90 only once a warning was sent a week ago, verifications that
verify, reject, expire or get a reminder. Hostile records (no e-mail, an invalid
one, header injection, HTML in a name) show that the jobs skip rather than crash.

Scenario records have readable ids (`due_pending_in_7d`, `usr_inactive_91d`,
`ver_five_failures`) that tests and the demo refer to; `users` ordinary members
with their own dues and history make the volume realistic. `users=0` seeds the
scenario alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cron_pipelines.models.payloads import OptOut, format_instant
from demo_services.store import DemoStore

_FIRST_NAMES = (
    "Asha",
    "Rohan",
    "Priya",
    "Vikram",
    "Meera",
    "Arjun",
    "Kavya",
    "Nikhil",
    "Ananya",
    "Siddharth",
    "Lakshmi",
    "Farhan",
    "Ishita",
    "Rahul",
    "Sneha",
    "Karthik",
    "Divya",
    "Aditya",
    "Neha",
    "Imran",
    "Emma",
    "Lucas",
    "Sofia",
    "Mateo",
    "Amara",
    "Kenji",
    "Chloe",
    "Tomasz",
    "Zanele",
    "Oliver",
)
_LAST_NAMES = (
    "Rao",
    "Sharma",
    "Iyer",
    "Menon",
    "Patel",
    "Reddy",
    "Nair",
    "Gupta",
    "Khan",
    "Das",
    "Kulkarni",
    "Banerjee",
    "Pillai",
    "Joshi",
    "Chatterjee",
    "Fernandes",
    "Okafor",
    "Tanaka",
    "Nowak",
    "Garcia",
    "Dubois",
    "Mbeki",
    "Smith",
    "Rossi",
)
_DESCRIPTIONS = ("Membership fee", "Annual subscription", "Event ticket", "Locker rental", "Coaching programme")
_AMOUNTS_CENTS = (50000, 75000, 125000, 250000, 499900)


@dataclass
class _Builder:
    """Collects the records of one seeding, with instants relative to D in the given zone."""

    today: date
    zone: ZoneInfo
    rng: random.Random
    users: list[dict[str, Any]] = field(default_factory=list)
    dues: list[dict[str, Any]] = field(default_factory=list)
    verifications: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    opt_outs: list[OptOut] = field(default_factory=list)
    digest_users: list[str] = field(default_factory=list)

    def instant(self, days_ago: int, hour: int = 10, minute: int = 0) -> str:
        """RFC 3339 (UTC, `Z`) of `hour:minute` local time on the day D − `days_ago`."""
        day = self.today - timedelta(days=days_ago)
        return format_instant(datetime.combine(day, time(hour, minute), tzinfo=self.zone))

    def day(self, offset: int) -> str:
        return (self.today + timedelta(days=offset)).isoformat()

    def name(self) -> tuple[str, str]:
        return self.rng.choice(_FIRST_NAMES), self.rng.choice(_LAST_NAMES)

    def message_id(self) -> str:
        return f"<{self.rng.getrandbits(64):016x}.seed@example.com>"

    def user(
        self,
        user_id: str,
        *,
        last_login_days_ago: int | None,
        created_days_ago: int = 400,
        status: str = "active",
        domain: str = "example.com",
        **overrides: Any,
    ) -> dict[str, Any]:
        """A member with a realistic name and address; `overrides` replace any field as given."""
        first, last = self.name()
        row = {
            "id": user_id,
            "email": f"{first}.{last}{len(self.users) + 1}@{domain}".lower(),
            "full_name": f"{first} {last}",
            "status": status,
            "last_login_at": None if last_login_days_ago is None else self.instant(last_login_days_ago, 10),
            "created_at": self.instant(created_days_ago, 9),
            **overrides,
        }
        self.users.append(row)
        return row

    def due(self, due_id: str, user_id: str, *, due_in_days: int, status: str, **overrides: Any) -> None:
        self.dues.append(
            {
                "id": due_id,
                "user_id": user_id,
                "amount_cents": self.rng.choice(_AMOUNTS_CENTS),
                "currency": "INR" if self.rng.random() < 0.85 else self.rng.choice(("EUR", "USD")),
                "due_date": self.day(due_in_days),
                "status": status,
                "description": self.rng.choice(_DESCRIPTIONS),
                **overrides,
            }
        )

    def member_with_due(self, suffix: str, *, due_in_days: int, status: str) -> None:
        """A recently active member with one due (so only the due's rule applies to them)."""
        user = self.user(f"usr_{suffix}", last_login_days_ago=self.rng.randint(1, 10))
        self.due(f"due_{suffix}", user["id"], due_in_days=due_in_days, status=status)

    def ledger(
        self,
        key: str,
        *,
        kind: str,
        job_name: str,
        user: dict[str, Any],
        days_ago: int,
        hour: int,
        status: str = "sent",
    ) -> None:
        """A ledger record claimed at `hour`:00 on the day D − `days_ago` (and sent a minute later)."""
        sent = status == "sent"
        self.notifications.append(
            {
                "idempotency_key": key,
                "kind": kind,
                "user_id": user["id"],
                "recipient": user["email"],
                "status": status,
                "run_id": f"seed-{self.rng.getrandbits(32):08x}",
                "job_name": job_name,
                "partition_key": self.day(-days_ago),
                "attempts": 1,
                "claimed_at": self.instant(days_ago, hour, 0),
                "sent_at": self.instant(days_ago, hour, 1) if sent else None,
                "message_id": self.message_id() if sent else None,
                "error": None if sent else "421 4.7.0 Try again later",
                "metadata": {"source": "seed"},
            }
        )

    def warning(
        self,
        user: dict[str, Any],
        *,
        sent_days_ago: int,
        sent_hour: int = 9,
        last_active_at: str | None = None,
        status: str = "sent",
    ) -> None:
        """An `inactivity_warning` for the stretch starting at `last_active_at` (default: the current one)."""
        stretch = last_active_at or user["last_login_at"] or user["created_at"]
        self.ledger(
            f"inactivity_warning:{user['id']}:{stretch}",
            kind="inactivity_warning",
            job_name="notify_inactive_users",
            user=user,
            days_ago=sent_days_ago,
            hour=sent_hour,
            status=status,
        )

    def verification(
        self,
        verification_id: str,
        *,
        requested_days_ago: int,
        status: str = "pending",
        attempts: tuple[tuple[str, int, int], ...] = (),
    ) -> None:
        """An employee verification with `attempts` as (outcome, days ago, hour)."""
        first, last = self.name()
        employee_id = f"emp_{verification_id.removeprefix('ver_')}"
        decided = status != "pending"
        self.verifications.append(
            {
                "id": verification_id,
                "employee_id": employee_id,
                "email": f"{first}.{last}{len(self.verifications) + 1}@example.org".lower(),
                "full_name": f"{first} {last}",
                "status": status,
                "requested_at": self.instant(requested_days_ago, 10),
                "decision_reason": f"seeded as {status}" if decided else None,
                "decided_at": self.instant(max(requested_days_ago - 1, 0), 11) if decided else None,
            }
        )
        for number, (outcome, days_ago, hour) in enumerate(attempts, start=1):
            self.attempts.append(
                {
                    "id": f"att_{verification_id.removeprefix('ver_')}_{number}",
                    "verification_id": verification_id,
                    "employee_id": employee_id,
                    "outcome": outcome,
                    "method": self.rng.choice(("otp", "document", "video_call")),
                    "attempted_at": self.instant(days_ago, hour, self.rng.randint(0, 59)),
                }
            )


def _payment_scenarios(b: _Builder) -> None:
    # Reminders go out 7, 3, 1 and 0 days ahead; 2, 5 and 8 days ahead are the controls.
    for days in (0, 1, 2, 3, 5, 7, 8):
        b.member_with_due(f"pending_in_{days}d", due_in_days=days, status="pending")
    # Past due but still pending: marked overdue; a notice too when 1/7/14/30 days late.
    for days in (1, 10, 30, 45):
        b.member_with_due(f"pending_past_{days}d", due_in_days=-days, status="pending")
    # Already overdue: notices at 1, 7, 14 and 30 days late; 10 and 31 are the controls.
    for days in (1, 7, 10, 14, 30, 31):
        b.member_with_due(f"overdue_{days}d", due_in_days=-days, status="overdue")
    # Settled dues are never reminded nor marked, even inside the windows.
    b.member_with_due("paid_in_3d", due_in_days=3, status="paid")
    b.member_with_due("paid_past_7d", due_in_days=-7, status="paid")
    b.member_with_due("cancelled_in_7d", due_in_days=7, status="cancelled")
    b.member_with_due("cancelled_past_1d", due_in_days=-1, status="cancelled")


def _hostile_scenarios(b: _Builder) -> None:
    # Each is due in 3 days, so the reminder job meets it and must skip it, not send it.
    hostile = {
        "no_email": {"email": None},
        "bad_email": {"email": "not-an-email"},
        "header_injection": {"full_name": "Eve Example\r\nBcc: victim@example.com"},
        "script_name": {"full_name": "<script>alert(1)</script>"},
    }
    for suffix, values in hostile.items():
        user = b.user(f"usr_{suffix}", last_login_days_ago=2, **values)
        b.due(f"due_{suffix}", user["id"], due_in_days=3, status="pending")


def _inactivity_scenarios(b: _Builder) -> None:
    # Last login at 10:00 on the day D − N: warned once before start(D) − 30 days (N ≥ 31),
    # deactivation candidates before start(D) − 90 days (N ≥ 91).
    users = {
        days: b.user(f"usr_inactive_{days}d", last_login_days_ago=days, created_days_ago=days + 300)
        for days in (29, 30, 31, 89, 90, 91, 95, 100, 120, 150)
    }
    never = b.user("usr_never_logged_in", last_login_days_ago=None, created_days_ago=200)
    b.user("usr_never_logged_in_recent", last_login_days_ago=None, created_days_ago=10)
    b.user("usr_already_inactive", last_login_days_ago=200, status="inactive")
    # Warned long enough ago: deactivated.
    b.warning(users[91], sent_days_ago=8)
    b.warning(never, sent_days_ago=30)
    # Sent late on D − 7 itself (local time): "on or before D − 7" still holds.
    b.warning(users[100], sent_days_ago=7, sent_hour=23)
    # Warned only 3 days ago: waits; the warning is not repeated.
    b.warning(users[120], sent_days_ago=3)
    # Warned for an earlier stretch of inactivity only: warned again for this one, not deactivated.
    b.warning(users[95], sent_days_ago=400, last_active_at=b.instant(500, 10))
    # The warning failed to go out: warned again (the claim is retried), not deactivated.
    b.warning(users[150], sent_days_ago=20, status="failed")


def _verification_scenarios(b: _Builder) -> None:
    b.verification("ver_success", requested_days_ago=2, attempts=(("failure", 2, 11), ("success", 1, 9)))
    b.verification(
        "ver_five_failures", requested_days_ago=4, attempts=tuple(("failure", days, 12) for days in (4, 4, 3, 2, 1))
    )
    b.verification(
        "ver_four_failures", requested_days_ago=5, attempts=tuple(("failure", days, 12) for days in (5, 4, 2, 1))
    )
    # Expiry is for requests before start(D) − 14 days: 15 days expires, 14 does not.
    b.verification("ver_requested_15d", requested_days_ago=15)
    b.verification("ver_requested_14d", requested_days_ago=14)
    # Reminders 3, 7 and 10 days after the request, unless an attempt happened in the last 3 days.
    b.verification("ver_requested_3d", requested_days_ago=3)
    b.verification("ver_requested_3d_recent_attempt", requested_days_ago=3, attempts=(("failure", 1, 15),))
    b.verification("ver_requested_7d_old_attempt", requested_days_ago=7, attempts=(("failure", 5, 15),))
    b.verification("ver_requested_7d_recent_attempt", requested_days_ago=7, attempts=(("failure", 2, 15),))
    b.verification("ver_requested_10d", requested_days_ago=10)
    b.verification("ver_requested_10d_recent_attempt", requested_days_ago=10, attempts=(("failure", 1, 8),))
    b.verification("ver_already_verified", requested_days_ago=20, status="verified", attempts=(("success", 19, 10),))
    b.verification(
        "ver_already_rejected",
        requested_days_ago=25,
        status="rejected",
        attempts=tuple(("failure", 24, hour) for hour in (9, 10, 11, 12, 13)),
    )
    b.verification("ver_already_expired", requested_days_ago=40, status="expired")


def _ordinary_members(b: _Builder, count: int) -> None:
    """Recently active members with settled history and dues spread over the next two months."""
    for number in range(1, count + 1):
        suffix = f"{number:05d}"
        never_logged_in = b.rng.random() < 0.05
        user = b.user(
            f"usr_{suffix}",
            last_login_days_ago=None if never_logged_in else b.rng.randint(1, 20),
            created_days_ago=b.rng.randint(1, 20) if never_logged_in else b.rng.randint(120, 1500),
            domain=b.rng.choice(("example.com", "example.org")),
        )
        for due_number in range(1, b.rng.randint(0, 3) + 1):
            due_id = f"due_{suffix}_{due_number}"
            roll = b.rng.random()
            if roll < 0.5:
                b.due(due_id, user["id"], due_in_days=b.rng.randint(0, 60), status="pending")
            elif roll < 0.9:
                days_ago = b.rng.randint(5, 300)
                b.due(due_id, user["id"], due_in_days=-days_ago, status="paid")
                if days_ago <= 60:  # with the reminder sent 3 days before it fell due
                    b.ledger(
                        f"payment_reminder:{due_id}:{b.day(-days_ago)}:3",
                        kind="payment_reminder",
                        job_name="send_payment_reminders",
                        user=user,
                        days_ago=days_ago + 3,
                        hour=6,
                    )
            else:
                b.due(due_id, user["id"], due_in_days=-b.rng.randint(5, 300), status="cancelled")
        if number % 10 == 0:
            requested_days_ago = b.rng.randint(20, 300)
            b.verification(
                f"ver_{suffix}",
                requested_days_ago=requested_days_ago,
                status="verified",
                attempts=(("success", requested_days_ago - 1, 10),),
            )


# Readers in other languages and time zones (v1.1): every fifth ordinary member has one.
_READER_SETTINGS = (
    {"locale": "en-IN", "timezone": "Asia/Kolkata"},
    {"locale": "de-DE", "timezone": "Europe/Berlin"},
    {"locale": "de-DE", "timezone": "America/Los_Angeles"},  # a German reader abroad
    {"locale": "en-IN"},  # no time zone: CRON_TIMEZONE
)


def _reader_scenarios(b: _Builder) -> None:
    """Named readers in `en-IN` and `de-DE` with dues in their currencies, and ordinary members
    spread over the settings above; everyone else carries no locale, as from a v1.0 service."""
    for suffix, due_in_days, currency, amount_cents, settings in (
        ("en_in_in_3d", 3, "INR", 125_000_00, _READER_SETTINGS[0]),
        ("de_de_in_7d", 7, "EUR", 1_250_00, _READER_SETTINGS[1]),
    ):
        reader = b.user(f"usr_{suffix}", last_login_days_ago=2, **settings)
        b.due(f"due_{suffix}", reader["id"], due_in_days=due_in_days, status="pending",
              currency=currency, amount_cents=amount_cents)  # fmt: skip
    for user in b.users:
        suffix = user["id"].removeprefix("usr_")
        if suffix.isdigit() and int(suffix) % 5 == 1:
            user.update(_READER_SETTINGS[int(suffix) // 5 % len(_READER_SETTINGS)])


def _preference_scenarios(b: _Builder) -> None:
    """v1.1 preferences: a member opted out of payment reminders, one who reads them as a
    digest; and among ordinary members every tenth opted out (every twentieth of inactivity
    warnings too) and another tenth on digest."""
    b.member_with_due("opted_out_in_3d", due_in_days=3, status="pending")
    b.opt_outs.append(
        OptOut(user_id="usr_opted_out_in_3d", kind="payment_reminder", source="list-unsubscribe", at=b.instant(20))
    )
    reader = b.user("usr_digest_reader", last_login_days_ago=1)
    for days in (3, 7):
        b.due(f"due_digest_in_{days}d", reader["id"], due_in_days=days, status="pending")
    b.digest_users.append(reader["id"])
    for user in b.users:
        suffix = user["id"].removeprefix("usr_")
        if not suffix.isdigit():  # scenario users keep the defaults
            continue
        number = int(suffix)
        if number % 10 == 3:
            for kind in ("payment_reminder", "inactivity_warning") if number % 20 == 3 else ("payment_reminder",):
                b.opt_outs.append(OptOut(user_id=user["id"], kind=kind, source="support", at=b.instant(30)))
        elif number % 10 == 7:
            b.digest_users.append(user["id"])


def seed_demo_data(
    store: DemoStore, today: date, *, timezone: str = "UTC", seed: int = 7, users: int = 300
) -> dict[str, int]:
    """Insert the demo records for day `today` (in `timezone`); how many of each were inserted.

    The same arguments always give the same records. `users` is the number of ordinary
    members added to the scenario records.
    """
    builder = _Builder(today=today, zone=ZoneInfo(timezone), rng=random.Random(seed))
    _payment_scenarios(builder)
    _hostile_scenarios(builder)
    _inactivity_scenarios(builder)
    _verification_scenarios(builder)
    _ordinary_members(builder, users)
    _preference_scenarios(builder)
    _reader_scenarios(builder)
    counts = {
        "users": store.add_users(builder.users),
        "dues": store.add_dues(builder.dues),
        "verifications": store.add_verifications(builder.verifications),
        "verification_attempts": store.add_attempts(builder.attempts),
        "notifications": store.add_notifications(builder.notifications),
        "opt_outs": len(store.add_opt_outs(builder.opt_outs)),
    }
    for user_id in builder.digest_users:
        store.set_digest(user_id, True)
    return {**counts, "notification_preferences": len(builder.digest_users)}
