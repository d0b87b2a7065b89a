"""Keyset pagination of every list endpoint (docs/services.md, Talking to a service): stable order, no gaps or duplicates, bounded pages."""

from __future__ import annotations

import base64
import time
from datetime import date, timedelta

import httpx
import pytest

from cron_pipelines_tests.demo_services.helpers import (
    assert_error,
    attempt,
    due,
    fetch_all,
    ids,
    ledger_record,
    user,
    verification,
)
from demo_services import DemoStore


def _dues_in_mixed_order(count: int) -> list[dict]:
    # Several dues share a date, so the id breaks ties; insertion order is neither.
    return [
        due(f"due_{(n * 7) % count:03d}", due_date=(date(2026, 12, 1) + timedelta(days=n % 4)).isoformat())
        for n in range(count)
    ]


def test_pages_follow_due_date_then_id_without_gaps_or_duplicates(demo_store: DemoStore, sql: httpx.Client) -> None:
    rows = _dues_in_mixed_order(25)
    demo_store.add_dues(rows)
    items, pages = fetch_all(sql, "/v1/dues", {"limit": 10})
    assert pages == 3
    assert ids(items) == [row["id"] for row in sorted(rows, key=lambda row: (row["due_date"], row["id"]))]


def test_a_full_last_page_carries_no_cursor(demo_store: DemoStore, sql: httpx.Client) -> None:
    demo_store.add_dues(_dues_in_mixed_order(20))
    first = sql.get("/v1/dues", params={"limit": 10}).json()
    second = sql.get("/v1/dues", params={"limit": 10, "cursor": first["next_cursor"]}).json()
    assert first["next_cursor"] is not None
    assert len(second["items"]) == 10
    assert second["next_cursor"] is None


def test_the_default_page_holds_100_items(demo_store: DemoStore, sql: httpx.Client) -> None:
    demo_store.add_dues(_dues_in_mixed_order(150))
    body = sql.get("/v1/dues").json()
    assert len(body["items"]) == 100
    assert body["next_cursor"] is not None


@pytest.mark.parametrize("limit", [1, 1000])
def test_limits_at_the_bounds_are_accepted(demo_store: DemoStore, sql: httpx.Client, limit: int) -> None:
    demo_store.add_dues(_dues_in_mixed_order(3))
    body = sql.get("/v1/dues", params={"limit": limit}).json()
    assert len(body["items"]) == min(limit, 3)


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "ten", "1.5"])
def test_limits_out_of_bounds_are_refused(sql: httpx.Client, limit: str) -> None:
    assert "limit" in assert_error(sql.get("/v1/dues", params={"limit": limit}), 400, "invalid_parameter")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%not-base64%%%",
        _b64(b"not json"),
        _b64(b'{"due_date": "2026-12-01"}'),
        _b64(b'["2026-12-01"]'),
        _b64(b'["2026-12-01", "due_1", "extra"]'),
        _b64(b'["2026-12-01", 7]'),
        _b64(b'[["nested"], "due_1"]'),
        _b64(b"\xff\xfe"),
    ],
)
def test_cursors_not_issued_by_the_service_are_refused(sql: httpx.Client, cursor: str) -> None:
    assert_error(sql.get("/v1/dues", params={"cursor": cursor}), 400, "invalid_cursor")


def test_records_added_while_paging_never_cause_duplicates_or_gaps(demo_store: DemoStore, sql: httpx.Client) -> None:
    demo_store.add_dues([due(f"due_{n}", due_date=f"2026-12-{10 + n:02d}") for n in range(6)])
    first = sql.get("/v1/dues", params={"limit": 3}).json()
    # One lands before the cursor (already paged past), one after it (still ahead).
    demo_store.add_dues([due("due_early", due_date="2026-12-01"), due("due_late", due_date="2026-12-31")])
    rest, _ = fetch_all(sql, "/v1/dues", {"limit": 3, "cursor": first["next_cursor"]})
    assert ids(first["items"]) + ids(rest) == ["due_0", "due_1", "due_2", "due_3", "due_4", "due_5", "due_late"]


def test_instants_are_ordered_by_the_moment_they_denote_not_their_text(
    demo_store: DemoStore, sql: httpx.Client
) -> None:
    demo_store.add_verifications(
        [
            verification("ver_utc", requested_at="2026-11-20T05:00:00Z"),
            verification("ver_india", requested_at="2026-11-20T10:00:00+05:30"),  # 04:30Z
            verification("ver_fraction", requested_at="2026-11-20T04:30:00.5Z"),
        ]
    )
    items, _ = fetch_all(sql, "/v1/verifications", {"limit": 1})
    assert ids(items) == ["ver_india", "ver_fraction", "ver_utc"]
    assert items[0]["requested_at"] == "2026-11-20T10:00:00+05:30"  # served as stored


def test_records_with_unreadable_sort_keys_are_still_paged_first(demo_store: DemoStore, sql: httpx.Client) -> None:
    demo_store.add_verifications(
        [
            verification("ver_a", requested_at="2026-11-20T05:00:00Z"),
            verification("ver_b", requested_at="yesterday"),
            verification("ver_c", requested_at="2026-11-19T05:00:00Z"),
            verification("ver_d", requested_at=None),
            verification("ver_e", requested_at="2026-11-20T05:00:00"),  # no offset
        ]
    )
    items, pages = fetch_all(sql, "/v1/verifications", {"limit": 2})
    assert pages == 3
    assert ids(items) == ["ver_b", "ver_d", "ver_e", "ver_c", "ver_a"]
    assert [item["requested_at"] for item in items[:3]] == ["yesterday", None, "2026-11-20T05:00:00"]


LIST_ENDPOINTS = {
    "verifications": ("sql", "/v1/verifications", {}, "id"),
    "inactive users": ("mongo", "/v1/users/inactive", {"last_active_before": "2027-01-01T00:00:00Z"}, "id"),
    "verification attempts": ("mongo", "/v1/verification-attempts", {}, "id"),
    "notifications": ("mongo", "/v1/notifications", {}, "idempotency_key"),
}


def _seven_of_each(store: DemoStore) -> dict[str, list[str]]:
    """Seven records per list, inserted out of order; their expected order for each endpoint."""
    order = [3, 0, 6, 1, 5, 2, 4]  # insertion order; the sort key grows with the number
    store.add_verifications(verification(f"ver_{n}", requested_at=f"2026-11-0{n + 1}T10:00:00Z") for n in order)
    store.add_users(user(f"usr_{n}", last_login_at=f"2026-10-0{n + 1}T10:00:00Z") for n in order)
    store.add_attempts(attempt(f"att_{n}", attempted_at=f"2026-11-0{n + 1}T10:00:00Z") for n in order)
    store.add_notifications(ledger_record(f"key_{n}", claimed_at=f"2026-11-0{n + 1}T10:00:00Z") for n in order)
    return {
        "verifications": [f"ver_{n}" for n in range(7)],
        "inactive users": [f"usr_{n}" for n in range(7)],
        "verification attempts": [f"att_{n}" for n in range(7)],
        "notifications": [f"key_{n}" for n in range(7)],
    }


@pytest.mark.parametrize("endpoint", list(LIST_ENDPOINTS))
def test_every_list_endpoint_pages_in_its_contract_order(
    demo_store: DemoStore, sql: httpx.Client, mongo: httpx.Client, endpoint: str
) -> None:
    expected = _seven_of_each(demo_store)[endpoint]
    service, path, params, id_field = LIST_ENDPOINTS[endpoint]
    client = sql if service == "sql" else mongo
    items, pages = fetch_all(client, path, {**params, "limit": 3})
    assert pages == 3
    assert ids(items, id_field) == expected
    assert_error(client.get(path, params={**params, "limit": 1001}), 400, "invalid_parameter")
    assert_error(client.get(path, params={**params, "cursor": "bm90IGpzb24"}), 400, "invalid_cursor")


def test_paging_a_large_table_at_1000_stays_fast(demo_store: DemoStore, sql: httpx.Client) -> None:
    # A regression guard, not a benchmark: a page that re-sorts the table or fetches row by
    # row would blow this budget by an order of magnitude.
    demo_store.add_users(user(f"usr_{n}") for n in range(500))
    demo_store.add_dues(
        due(
            f"due_{n:05d}",
            user_id=f"usr_{n % 500}",
            status=("pending", "overdue")[n % 2],
            due_date=(date(2026, 1, 1) + timedelta(days=n % 365)).isoformat(),
        )
        for n in range(20_000)
    )
    started = time.perf_counter()
    items, pages = fetch_all(sql, "/v1/dues", {"limit": 1000, "status": ["pending", "overdue"]})
    elapsed = time.perf_counter() - started
    assert (len(items), pages) == (20_000, 20)
    assert len(set(ids(items))) == 20_000
    assert elapsed < 5.0, f"20 pages took {elapsed:.2f} s"
