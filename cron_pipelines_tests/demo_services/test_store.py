"""DemoStore: the SQLite file shared by both stand-ins, tests and other processes."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone

import pytest

from cron_pipelines.models.payloads import NotificationClaim
from cron_pipelines_tests.demo_services.helpers import attempt, due, ledger_record, user, verification
from demo_services import DemoStore
from demo_services.store import sortable_instant


def test_opening_an_existing_file_keeps_its_data(demo_store: DemoStore) -> None:
    demo_store.add_dues([due("due_1")])
    assert DemoStore(demo_store.path).get_due("due_1")["id"] == "due_1"


def test_the_file_and_its_journal_are_private_whatever_the_umask(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        store = DemoStore(tmp_path / "demo.sqlite3")
        # An open writer keeps the write-ahead log and shared-memory files in place to look at.
        with closing(sqlite3.connect(store.path)) as reader:
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
            store.add_dues([due("due_1")])
            files = list(tmp_path.glob("demo.sqlite3*"))
            modes = {path.name: oct(path.stat().st_mode & 0o777) for path in files}
    finally:
        os.umask(previous)
    assert {"demo.sqlite3", "demo.sqlite3-wal", "demo.sqlite3-shm"} <= set(modes)
    assert set(modes.values()) == {"0o600"}, modes


def test_the_file_is_in_wal_mode(demo_store: DemoStore) -> None:
    with sqlite3.connect(demo_store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_values_are_stored_exactly_as_given(demo_store: DemoStore) -> None:
    demo_store.add_dues([due("due_1", amount_cents="125", due_date=20261205, description=None)])
    demo_store.add_users([user("usr_1", email=None, last_login_at="last week")])
    stored = demo_store.get_due("due_1")
    assert (stored["amount_cents"], stored["due_date"], stored["description"]) == ("125", 20261205, None)
    garbled = demo_store.get_user("usr_1")
    assert (garbled["email"], garbled["last_login_at"], garbled["last_active_utc"]) == (None, "last week", None)


def test_normalised_instants_are_derived_from_the_raw_ones(demo_store: DemoStore) -> None:
    demo_store.add_users(
        [
            user("usr_login", last_login_at="2026-08-01T17:30:00+05:30"),
            user("usr_never", last_login_at=None, created_at="2025-01-01T00:00:00Z"),
        ]
    )
    demo_store.add_verifications([verification("ver_1", requested_at="2026-11-20T10:00:00-01:00")])
    demo_store.add_attempts([attempt("att_1", attempted_at="2026-11-21T08:00:00.25Z")])
    demo_store.add_notifications([ledger_record("key_1", claimed_at=None)])
    assert demo_store.get_user("usr_login")["last_active_utc"] == "2026-08-01T12:00:00.000000Z"
    assert demo_store.get_user("usr_never")["last_active_utc"] == "2025-01-01T00:00:00.000000Z"
    assert demo_store.get_verification("ver_1")["requested_at_utc"] == "2026-11-20T11:00:00.000000Z"
    with sqlite3.connect(demo_store.path) as conn:
        assert conn.execute("SELECT attempted_at_utc FROM verification_attempts").fetchone()[0] == (
            "2026-11-21T08:00:00.250000Z"
        )
        assert conn.execute("SELECT claimed_at_utc FROM notifications").fetchone()[0] is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-28T09:00:00Z", "2026-11-28T09:00:00.000000Z"),
        ("2026-11-28T09:00:00.123456Z", "2026-11-28T09:00:00.123456Z"),
        ("2026-11-28T00:30:00+01:00", "2026-11-27T23:30:00.000000Z"),
        (datetime(2026, 11, 28, 9, tzinfo=timezone(timedelta(hours=-5))), "2026-11-28T14:00:00.000000Z"),
        ("2026-11-28T09:00:00", None),
        (datetime(2026, 11, 28, 9), None),
        ("soon", None),
        (None, None),
        (1764320400, None),
    ],
)
def test_sortable_instant(value: object, expected: str | None) -> None:
    assert sortable_instant(value) == expected


def test_an_unknown_column_is_refused_and_nothing_is_inserted(demo_store: DemoStore) -> None:
    with pytest.raises(ValueError, match="amount"):
        demo_store.add_dues([due("due_1"), due("due_2", amount=5)])
    assert demo_store.table_counts()["dues"] == 0


def test_missing_records_read_as_none(demo_store: DemoStore) -> None:
    assert demo_store.get_due("x") is None
    assert demo_store.get_user("x") is None
    assert demo_store.get_verification("x") is None
    assert demo_store.get_notification("x") is None


def test_reset_empties_every_table_and_keeps_the_schema(demo_store: DemoStore) -> None:
    demo_store.add_users([user("usr_1")])
    demo_store.add_dues([due("due_1")])
    demo_store.add_verifications([verification("ver_1")])
    demo_store.add_attempts([attempt("att_1")])
    demo_store.add_notifications([ledger_record("key_1")])
    demo_store.reset()
    assert set(demo_store.table_counts().values()) == {0}
    demo_store.add_dues([due("due_1")])
    assert demo_store.table_counts()["dues"] == 1


def test_a_writer_waits_for_another_writers_lock(demo_store: DemoStore) -> None:
    demo_store.add_dues([due("due_1")])
    locked = threading.Event()

    def hold_the_write_lock() -> None:
        with sqlite3.connect(demo_store.path, isolation_level=None) as conn:
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(0.3)
            conn.execute("COMMIT")

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    locked.wait()
    started = time.perf_counter()
    assert demo_store.mark_overdue(["due_1"]) == [{"due_id": "due_1", "outcome": "marked"}]
    assert time.perf_counter() - started >= 0.2
    holder.join()


def test_a_batch_that_fails_midway_writes_nothing(demo_store: DemoStore) -> None:
    with pytest.raises(AttributeError):
        demo_store.claim_notifications(
            [NotificationClaim(idempotency_key="key_1", kind="payment_reminder"), object()]  # type: ignore[list-item]
        )
    assert demo_store.list_notifications() == []
