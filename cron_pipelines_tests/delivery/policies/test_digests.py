"""The digest spill: a reader's notifications grouped across the whole stream, off the heap."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from cron_pipelines.delivery.policies.digests import DigestSpill
from cron_pipelines.models.notification import Notification, NotificationKind


def _reminder(key: str, user_id: str, *, email: str | None = None) -> Notification:
    return Notification(
        key=key,
        kind=NotificationKind.PAYMENT_REMINDER,
        user_id=user_id,
        address=email or f"{user_id}@example.com",
        name=None,
        context={"amount_cents": 100, "currency": "EUR", "description": None, "due_date": date(2026, 12, 1)},
        locale="de_DE",
    )


def test_notifications_that_arrive_apart_come_back_together_per_reader_kind_and_address() -> None:
    spill = DigestSpill()
    try:
        spill.add([_reminder("k3", "usr_b"), _reminder("k1", "usr_a")])
        spill.add([_reminder("k2", "usr_b"), _reminder("k4", "usr_a", email="new@example.com")])
        spill.add([_reminder("k5", "usr_b")])

        groups = [[notification.key for notification in group] for group in spill.digests()]

        assert groups == [["k4"], ["k1"], ["k2", "k3", "k5"]]  # a changed address is its own email
        (restored,) = [group for group in spill.digests() if group[0].key == "k1"]
        assert restored[0] == _reminder("k1", "usr_a")  # everything the composer needs survives the disk
    finally:
        spill.close()


def test_a_repeated_key_is_kept_once_and_handed_back() -> None:
    spill = DigestSpill()
    try:
        assert spill.add([_reminder("k1", "usr_a"), _reminder("k2", "usr_a")]) == []
        repeated = spill.add([_reminder("k1", "usr_a")])

        assert [notification.key for notification in repeated] == ["k1"]
        assert spill.size == 2
        assert [len(group) for group in spill.digests()] == [2]
    finally:
        spill.close()


def test_a_reader_with_more_than_the_cap_gets_several_digests() -> None:
    spill = DigestSpill()
    try:
        spill.add([_reminder(f"k{n:03d}", "usr_a") for n in range(120)])

        assert [len(group) for group in spill.digests(max_items=50)] == [50, 50, 20]
    finally:
        spill.close()


def test_the_spill_is_private_on_disk_and_gone_when_closed() -> None:
    spill = DigestSpill()
    directory = Path(spill._directory.name)
    spill.add([_reminder("k1", "usr_a")])
    assert directory.stat().st_mode & 0o077 == 0

    spill.close()

    assert not directory.exists()
