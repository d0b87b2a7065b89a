"""Builders of plain records and HTTP helpers for the demo_services tests."""

from __future__ import annotations

from typing import Any

import httpx


def fetch_all(client: httpx.Client, path: str, params: dict[str, Any] | None = None) -> tuple[list[dict], int]:
    """Every item of a list endpoint, following cursors; and how many pages that took."""
    query = dict(params or {})
    items: list[dict] = []
    pages = 0
    while True:
        response = client.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        pages += 1
        if body["next_cursor"] is None:
            return items, pages
        query["cursor"] = body["next_cursor"]


def ids(items: list[dict], field: str = "id") -> list[Any]:
    return [item[field] for item in items]


def user(user_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": user_id,
        "email": f"{user_id}@example.com",
        "full_name": f"User {user_id}",
        "status": "active",
        "last_login_at": "2026-11-01T10:00:00Z",
        "created_at": "2025-01-01T00:00:00Z",
        **fields,
    }


def due(due_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": due_id,
        "user_id": "usr_1",
        "amount_cents": 125000,
        "currency": "INR",
        "due_date": "2026-12-05",
        "status": "pending",
        "description": "Membership fee",
        **fields,
    }


def verification(verification_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": verification_id,
        "employee_id": f"emp_{verification_id}",
        "email": f"{verification_id}@example.org",
        "full_name": f"Employee {verification_id}",
        "status": "pending",
        "requested_at": "2026-11-20T10:00:00Z",
        **fields,
    }


def attempt(attempt_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": attempt_id,
        "verification_id": "ver_1",
        "employee_id": "emp_ver_1",
        "outcome": "failure",
        "method": "otp",
        "attempted_at": "2026-11-21T08:00:00Z",
        **fields,
    }


def ledger_record(key: str, **fields: Any) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "kind": "payment_reminder",
        "user_id": "usr_1",
        "recipient": "usr_1@example.com",
        "status": "sent",
        "run_id": "run-old",
        "job_name": "send_payment_reminders",
        "partition_key": "2026-11-20",
        "attempts": 1,
        "claimed_at": "2026-11-20T06:00:00Z",
        "sent_at": "2026-11-20T06:00:01Z",
        "message_id": "<old@example.com>",
        "error": None,
        "metadata": {"days_before": 3},
        **fields,
    }


def claim(key: str, **fields: Any) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "kind": "payment_reminder",
        "user_id": "usr_1",
        "recipient": "usr_1@example.com",
        "run_id": "run-new",
        "job_name": "send_payment_reminders",
        "partition_key": "2026-11-28",
        "metadata": {"days_before": 7},
        **fields,
    }


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """The response is the contract's error body with this status and code; its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["message"]
