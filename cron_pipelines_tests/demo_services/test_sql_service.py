"""The sql-service stand-in (docs/services.md, sql-service): dues and verifications, their filters and batch writes."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from cron_pipelines.models.payloads import Due, Verification
from cron_pipelines_tests.demo_services.helpers import assert_error, due, fetch_all, ids, user, verification
from demo_services import DemoStore


@pytest.fixture
def dues(demo_store: DemoStore) -> None:
    demo_store.add_users([user("usr_1", email="asha@example.com", full_name="Asha Rao")])
    demo_store.add_dues(
        [
            due("due_p1", due_date="2026-12-01", status="pending"),
            due("due_p2", due_date="2026-12-05", status="pending"),
            due("due_p3", due_date="2026-12-08", status="pending"),
            due("due_o1", due_date="2026-11-20", status="overdue"),
            due("due_o2", due_date="2026-12-05", status="overdue"),
            due("due_paid", due_date="2026-12-05", status="paid"),
            due("due_cancelled", due_date="2026-12-05", status="cancelled"),
        ]
    )


# -- GET /v1/dues --------------------------------------------------------------------------


@pytest.mark.usefixtures("dues")
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["due_o1", "due_p1", "due_cancelled", "due_o2", "due_p2", "due_paid", "due_p3"]),
        ({"status": "pending"}, ["due_p1", "due_p2", "due_p3"]),
        ({"status": ["pending", "overdue"]}, ["due_o1", "due_p1", "due_o2", "due_p2", "due_p3"]),
        ({"status": ["paid", "cancelled"]}, ["due_cancelled", "due_paid"]),
        ({"due_from": "2026-12-05"}, ["due_cancelled", "due_o2", "due_p2", "due_paid", "due_p3"]),
        ({"due_to": "2026-12-01"}, ["due_o1", "due_p1"]),
        ({"status": "pending", "due_from": "2026-12-01", "due_to": "2026-12-05"}, ["due_p1", "due_p2"]),
        ({"due_from": "2026-12-05", "due_to": "2026-12-05", "status": "overdue"}, ["due_o2"]),
        ({"due_from": "2026-12-06", "due_to": "2026-12-04"}, []),
    ],
)
def test_dues_filters(sql: httpx.Client, params: dict, expected: list[str]) -> None:
    items, _ = fetch_all(sql, "/v1/dues", {**params, "limit": 2})
    assert ids(items) == expected


@pytest.mark.parametrize(
    "params",
    [{"status": "late"}, {"due_from": "05/12/2026"}, {"due_to": "2026-13-01"}, {"due_from": "tomorrow"}],
)
def test_dues_refuse_invalid_filters(sql: httpx.Client, params: dict) -> None:
    assert_error(sql.get("/v1/dues", params=params), 400, "invalid_parameter")


@pytest.mark.usefixtures("dues")
def test_a_due_embeds_its_user_in_the_contract_shape(sql: httpx.Client) -> None:
    item = sql.get("/v1/dues", params={"status": "overdue", "limit": 1}).json()["items"][0]
    assert item == {
        "id": "due_o1",
        "user_id": "usr_1",
        "amount_cents": 125000,
        "currency": "INR",
        "due_date": "2026-11-20",
        "status": "overdue",
        "description": "Membership fee",
        "user": {"id": "usr_1", "email": "asha@example.com", "full_name": "Asha Rao"},
    }
    assert Due.model_validate(item).user.full_name == "Asha Rao"


def test_a_due_whose_user_is_missing_embeds_null(demo_store: DemoStore, sql: httpx.Client) -> None:
    demo_store.add_dues([due("due_orphan", user_id="usr_gone")])
    assert sql.get("/v1/dues").json()["items"][0]["user"] is None


def test_malformed_dues_are_served_exactly_as_stored(demo_store: DemoStore, sql: httpx.Client) -> None:
    demo_store.add_users(
        [
            user("usr_1"),
            user("usr_nomail", email=None, full_name="Eve\r\nBcc: victim@example.com"),
        ]
    )
    demo_store.add_dues(
        [
            due("due_bad_amount", amount_cents="lots"),
            due("due_text_number", amount_cents="125"),
            due("due_long_currency", currency="RUPEES", description=None),
            due("due_hostile", user_id="usr_nomail"),
        ]
    )
    items = {item["id"]: item for item in sql.get("/v1/dues").json()["items"]}
    assert items["due_bad_amount"]["amount_cents"] == "lots"
    assert items["due_text_number"]["amount_cents"] == "125"  # not silently turned into a number
    assert items["due_long_currency"]["currency"] == "RUPEES"
    assert items["due_hostile"]["user"] == {
        "id": "usr_nomail",
        "email": None,
        "full_name": "Eve\r\nBcc: victim@example.com",
    }
    for bad in ("due_bad_amount", "due_long_currency"):
        with pytest.raises(ValidationError):
            Due.model_validate(items[bad])


# -- POST /v1/dues/overdue-marks -------------------------------------------------------------


@pytest.mark.usefixtures("dues")
def test_overdue_marks_answer_each_item_in_order(demo_store: DemoStore, sql: httpx.Client) -> None:
    body = {"items": [{"due_id": due_id} for due_id in ("due_p1", "due_o1", "due_paid", "due_cancelled", "due_nope")]}
    response = sql.post("/v1/dues/overdue-marks", json=body)
    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {"due_id": "due_p1", "outcome": "marked"},
            {"due_id": "due_o1", "outcome": "already_overdue"},
            {"due_id": "due_paid", "outcome": "invalid_state"},
            {"due_id": "due_cancelled", "outcome": "invalid_state"},
            {"due_id": "due_nope", "outcome": "not_found"},
        ]
    }
    assert demo_store.get_due("due_p1")["status"] == "overdue"
    assert demo_store.get_due("due_paid")["status"] == "paid"
    assert demo_store.get_due("due_cancelled")["status"] == "cancelled"


@pytest.mark.usefixtures("dues")
def test_replaying_overdue_marks_changes_nothing_twice(demo_store: DemoStore, sql: httpx.Client) -> None:
    body = {"items": [{"due_id": "due_p1"}, {"due_id": "due_p1"}]}
    first = sql.post("/v1/dues/overdue-marks", json=body).json()["results"]
    replay = sql.post("/v1/dues/overdue-marks", json=body).json()["results"]
    assert [r["outcome"] for r in first] == ["marked", "already_overdue"]
    assert [r["outcome"] for r in replay] == ["already_overdue", "already_overdue"]
    assert demo_store.get_due("due_p1")["status"] == "overdue"


@pytest.mark.usefixtures("dues")
def test_a_batch_of_more_than_500_is_refused_whole(demo_store: DemoStore, sql: httpx.Client) -> None:
    items = [{"due_id": "due_p1"}] + [{"due_id": f"due_x{n}"} for n in range(500)]
    message = assert_error(sql.post("/v1/dues/overdue-marks", json={"items": items}), 400, "batch_too_large")
    assert "500" in message
    assert demo_store.get_due("due_p1")["status"] == "pending"


@pytest.mark.usefixtures("dues")
def test_a_batch_of_exactly_500_is_accepted(sql: httpx.Client) -> None:
    items = [{"due_id": "due_p1"}] + [{"due_id": f"due_x{n}"} for n in range(499)]
    results = sql.post("/v1/dues/overdue-marks", json={"items": items}).json()["results"]
    assert len(results) == 500
    assert results[0] == {"due_id": "due_p1", "outcome": "marked"}
    assert [result["due_id"] for result in results] == [item["due_id"] for item in items]


@pytest.mark.usefixtures("dues")
@pytest.mark.parametrize(
    "body",
    [
        {"items": [{"due_id": "due_p1"}, {"id": "due_p2"}]},
        {"items": [{"due_id": "due_p1"}, {"due_id": None}]},
        {"items": "due_p1"},
        {"due_ids": ["due_p1"]},
        [{"due_id": "due_p1"}],
    ],
)
def test_an_invalid_batch_is_refused_whole(demo_store: DemoStore, sql: httpx.Client, body: object) -> None:
    assert_error(sql.post("/v1/dues/overdue-marks", json=body), 400, "invalid_request")
    assert demo_store.get_due("due_p1")["status"] == "pending"


def test_a_body_that_is_not_json_is_refused(sql: httpx.Client) -> None:
    response = sql.post("/v1/dues/overdue-marks", content=b'{"items": [', headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_request")


def test_an_empty_batch_has_no_results(sql: httpx.Client) -> None:
    assert sql.post("/v1/dues/overdue-marks", json={"items": []}).json() == {"results": []}


# -- verifications ----------------------------------------------------------------------------


@pytest.fixture
def verifications(demo_store: DemoStore) -> None:
    demo_store.add_verifications(
        [
            verification("ver_p1", requested_at="2026-11-20T10:00:00Z"),
            verification("ver_p2", requested_at="2026-11-21T10:00:00Z"),
            verification("ver_v", status="verified", requested_at="2026-11-01T10:00:00Z"),
            verification("ver_r", status="rejected", requested_at="2026-11-02T10:00:00Z"),
            verification("ver_e", status="expired", requested_at="2026-10-01T10:00:00Z"),
        ]
    )


@pytest.mark.usefixtures("verifications")
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["ver_e", "ver_v", "ver_r", "ver_p1", "ver_p2"]),
        ({"status": "pending"}, ["ver_p1", "ver_p2"]),
        ({"status": ["verified", "rejected"]}, ["ver_v", "ver_r"]),
        ({"status": "expired"}, ["ver_e"]),
    ],
)
def test_verifications_filter_by_status(sql: httpx.Client, params: dict, expected: list[str]) -> None:
    items, _ = fetch_all(sql, "/v1/verifications", params)
    assert ids(items) == expected
    for item in items:
        Verification.model_validate(item)
        assert set(item) == {"id", "employee_id", "email", "full_name", "status", "requested_at"}


def test_verifications_refuse_an_unknown_status(sql: httpx.Client) -> None:
    assert_error(sql.get("/v1/verifications", params={"status": "approved"}), 400, "invalid_parameter")


@pytest.mark.usefixtures("verifications")
def test_decisions_answer_each_item_in_order(demo_store: DemoStore, sql: httpx.Client) -> None:
    items = [
        {"verification_id": "ver_p1", "status": "verified", "reason": "successful attempt att_9"},
        {"verification_id": "ver_v", "status": "verified", "reason": "again"},
        {"verification_id": "ver_r", "status": "verified", "reason": "too late"},
        {"verification_id": "ver_p2", "status": "expired", "reason": "no attempt in 14 days"},
        {"verification_id": "ver_nope", "status": "rejected", "reason": "5 failures"},
    ]
    results = sql.post("/v1/verifications/decisions", json={"items": items}).json()["results"]
    assert results == [
        {"verification_id": "ver_p1", "outcome": "updated"},
        {"verification_id": "ver_v", "outcome": "unchanged"},
        {"verification_id": "ver_r", "outcome": "invalid_state"},
        {"verification_id": "ver_p2", "outcome": "updated"},
        {"verification_id": "ver_nope", "outcome": "not_found"},
    ]
    decided = demo_store.get_verification("ver_p1")
    assert (decided["status"], decided["decision_reason"]) == ("verified", "successful attempt att_9")
    assert decided["decided_at"].endswith("Z")
    assert demo_store.get_verification("ver_r")["status"] == "rejected"
    assert demo_store.get_verification("ver_v")["decision_reason"] is None


@pytest.mark.usefixtures("verifications")
def test_replaying_a_decision_is_unchanged(demo_store: DemoStore, sql: httpx.Client) -> None:
    body = {"items": [{"verification_id": "ver_p1", "status": "rejected", "reason": "5 failures"}]}
    assert sql.post("/v1/verifications/decisions", json=body).json()["results"][0]["outcome"] == "updated"
    decided_at = demo_store.get_verification("ver_p1")["decided_at"]
    assert sql.post("/v1/verifications/decisions", json=body).json()["results"][0]["outcome"] == "unchanged"
    assert demo_store.get_verification("ver_p1")["decided_at"] == decided_at


@pytest.mark.usefixtures("verifications")
@pytest.mark.parametrize(
    "item",
    [
        {"verification_id": "ver_p1", "status": "pending", "reason": "back to pending"},
        {"verification_id": "ver_p1", "status": "approved", "reason": "?"},
        {"verification_id": "ver_p1", "status": "verified"},
    ],
)
def test_decisions_refuse_invalid_items(demo_store: DemoStore, sql: httpx.Client, item: dict) -> None:
    response = sql.post("/v1/verifications/decisions", json={"items": [item]})
    assert_error(response, 400, "invalid_request")
    assert demo_store.get_verification("ver_p1")["status"] == "pending"
