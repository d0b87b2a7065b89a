"""The notification ledger of mongo-service (docs/services.md, mongo-service): claims, outcomes and the history list."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cron_pipelines.models.payloads import ClaimResult, NotificationClaim, NotificationRecord, parse_instant
from cron_pipelines_tests.demo_services.helpers import assert_error, claim, fetch_all, ids, ledger_record
from cron_pipelines_tests.support.services import ServiceWorld
from demo_services import DemoStore

RECORD_FIELDS = {
    "idempotency_key",
    "kind",
    "user_id",
    "recipient",
    "status",
    "run_id",
    "job_name",
    "partition_key",
    "attempts",
    "claimed_at",
    "sent_at",
    "message_id",
    "error",
    "metadata",
}


def _claim(mongo: httpx.Client, *claims: dict) -> list[dict]:
    response = mongo.post("/v1/notifications/claims", json={"items": list(claims)})
    assert response.status_code == 200, response.text
    return response.json()["results"]


# -- claims ----------------------------------------------------------------------------------------


def test_a_new_key_is_claimed_with_a_full_record(demo_store: DemoStore, mongo: httpx.Client) -> None:
    before = datetime.now(UTC)
    [result] = _claim(mongo, claim("payment_reminder:due_1:2026-12-05:7", metadata={"due_id": "due_1"}))
    after = datetime.now(UTC)
    assert result["idempotency_key"] == "payment_reminder:due_1:2026-12-05:7"
    assert result["outcome"] == "claimed"
    record = result["record"]
    assert set(record) == RECORD_FIELDS
    assert record | {"claimed_at": None} == {
        "idempotency_key": "payment_reminder:due_1:2026-12-05:7",
        "kind": "payment_reminder",
        "user_id": "usr_1",
        "recipient": "usr_1@example.com",
        "status": "claimed",
        "run_id": "run-new",
        "job_name": "send_payment_reminders",
        "partition_key": "2026-11-28",
        "attempts": 1,
        "claimed_at": None,
        "sent_at": None,
        "message_id": None,
        "error": None,
        "metadata": {"due_id": "due_1"},
    }
    assert before - timedelta(seconds=1) <= parse_instant(record["claimed_at"]) <= after + timedelta(seconds=1)
    assert demo_store.get_notification("payment_reminder:due_1:2026-12-05:7") == record
    ClaimResult.model_validate(result)


@pytest.mark.parametrize("status", ["claimed", "sent", "skipped"])
def test_a_key_claimed_sent_or_skipped_is_a_duplicate_returned_unchanged(
    demo_store: DemoStore, mongo: httpx.Client, status: str
) -> None:
    demo_store.add_notifications([ledger_record("key_1", status=status)])
    stored = demo_store.get_notification("key_1")
    [result] = _claim(mongo, claim("key_1"))
    assert result == {"idempotency_key": "key_1", "outcome": "duplicate", "record": stored}
    assert demo_store.get_notification("key_1") == stored


def test_a_failed_key_is_claimed_again_as_a_fresh_attempt(demo_store: DemoStore, mongo: httpx.Client) -> None:
    demo_store.add_notifications(
        [
            ledger_record(
                "key_1",
                status="failed",
                attempts=2,
                error="554 5.7.1 rejected",
                message_id="<try2@example.com>",
                sent_at=None,
                metadata={"old": True},
            )
        ]
    )
    [result] = _claim(mongo, claim("key_1", recipient="new@example.com", metadata={"new": True}))
    record = result["record"]
    assert result["outcome"] == "claimed"
    assert (record["status"], record["attempts"]) == ("claimed", 3)
    assert (record["run_id"], record["job_name"], record["partition_key"]) == (
        "run-new",
        "send_payment_reminders",
        "2026-11-28",
    )
    assert (record["recipient"], record["metadata"]) == ("new@example.com", {"new": True})
    assert (record["error"], record["message_id"], record["sent_at"]) == (None, None, None)
    assert record["claimed_at"] != "2026-11-20T06:00:00Z"
    assert (record["kind"], record["user_id"]) == ("payment_reminder", "usr_1")  # the key's identity stays
    assert demo_store.get_notification("key_1") == record


def test_a_released_key_is_claimed_again_without_counting_an_attempt(
    demo_store: DemoStore, mongo: httpx.Client
) -> None:
    [first] = _claim(mongo, claim("key_1"))
    released = {"idempotency_key": "key_1", "status": "released", "error": "421 closing", "at": "2026-11-28T09:00:00Z"}
    assert mongo.post("/v1/notifications/outcomes", json={"items": [released]}).json()["results"][0]["outcome"] == (
        "updated"
    )
    assert demo_store.get_notification("key_1")["status"] == "released"
    for _ in range(3):  # however often the server failed meanwhile
        [again] = _claim(mongo, claim("key_1"))
        assert (again["outcome"], again["record"]["attempts"]) == ("claimed", first["record"]["attempts"])
        mongo.post("/v1/notifications/outcomes", json={"items": [released]})
    failed = {**released, "status": "failed", "error": "451 try later"}
    mongo.post("/v1/notifications/outcomes", json={"items": [failed]})
    [after_failure] = _claim(mongo, claim("key_1"))
    assert after_failure["record"]["attempts"] == first["record"]["attempts"] + 1  # a message failure counts


def test_a_v1_1_ledger_refuses_released_outcomes_and_listings(services: ServiceWorld, mongo: httpx.Client) -> None:
    services.speak_contract("1.1")
    _claim(mongo, claim("key_1"))
    released = {"idempotency_key": "key_1", "status": "released", "at": "2026-11-28T09:00:00Z"}
    assert_error(mongo.post("/v1/notifications/outcomes", json={"items": [released]}), 400, "invalid_request")
    assert_error(mongo.get("/v1/notifications", params={"status": "released"}), 400, "invalid_parameter")
    assert mongo.get("/v1/notifications", params={"status": "claimed"}).status_code == 200


def test_claiming_the_same_key_twice_in_one_batch_claims_it_once(mongo: httpx.Client) -> None:
    first, second = _claim(mongo, claim("key_1"), claim("key_1", run_id="other-run"))
    assert (first["outcome"], second["outcome"]) == ("claimed", "duplicate")
    assert second["record"] == first["record"]


def test_replaying_a_claim_batch_claims_nothing_twice(demo_store: DemoStore, mongo: httpx.Client) -> None:
    batch = [claim(f"key_{n}") for n in range(5)]
    assert {r["outcome"] for r in _claim(mongo, *batch)} == {"claimed"}
    stored = demo_store.list_notifications()
    assert {r["outcome"] for r in _claim(mongo, *batch)} == {"duplicate"}
    assert demo_store.list_notifications() == stored


@pytest.mark.parametrize(
    "bad",
    [
        claim("", kind="payment_reminder"),
        claim("key_bad", kind=""),
        claim("key_bad", metadata=["not", "an", "object"]),
        {"kind": "payment_reminder"},
        claim("k" * 513),
    ],
)
def test_an_invalid_claim_refuses_the_whole_batch(demo_store: DemoStore, mongo: httpx.Client, bad: dict) -> None:
    response = mongo.post("/v1/notifications/claims", json={"items": [claim("key_ok"), bad]})
    assert_error(response, 400, "invalid_request")
    assert demo_store.list_notifications() == []


def test_more_than_500_claims_are_refused(demo_store: DemoStore, mongo: httpx.Client) -> None:
    response = mongo.post("/v1/notifications/claims", json={"items": [claim(f"key_{n}") for n in range(501)]})
    assert_error(response, 400, "batch_too_large")
    assert demo_store.list_notifications() == []


def test_concurrent_batches_claim_each_key_exactly_once(demo_store: DemoStore, services: ServiceWorld) -> None:
    # Two runs (plus two retries of theirs) claim the same 200 keys at once, in batches of 50
    # and in different orders, so their transactions overlap in the service's thread pool.
    keys = [f"payment_reminder:due_{n}:2026-12-05:7" for n in range(200)]
    orders = {
        "run-a": keys,
        "run-b": keys[::-1],
        "run-a-retry": keys[100:] + keys[:100],
        "run-b-retry": keys[1::2] + keys[::2],
    }
    barrier = threading.Barrier(len(orders))
    outcomes: dict[str, list[dict]] = {}

    def claim_all(run_id: str, order: list[str]) -> None:
        with httpx.Client(base_url=services.mongo_url, headers=services.auth_headers("mongo-service")) as client:
            barrier.wait()
            outcomes[run_id] = [
                result
                for start in range(0, len(order), 50)
                for result in _claim(client, *(claim(key, run_id=run_id) for key in order[start : start + 50]))
            ]

    threads = [threading.Thread(target=claim_all, args=item) for item in orders.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert set(outcomes) == set(orders), "a claiming thread failed"
    claimed = [r["idempotency_key"] for results in outcomes.values() for r in results if r["outcome"] == "claimed"]
    assert sorted(claimed) == sorted(keys)
    records = demo_store.list_notifications()
    assert len(records) == 200 and {record["attempts"] for record in records} == {1}
    # Every duplicate returns the winner's record.
    winners = {record["idempotency_key"]: record["run_id"] for record in records}
    for results in outcomes.values():
        for result in results:
            assert result["record"]["run_id"] == winners[result["idempotency_key"]]


def _claim_in_process(path: str, run_id: str, keys: list[str], barrier: multiprocessing.synchronize.Barrier) -> None:
    store = DemoStore(path)
    barrier.wait()
    for start in range(0, len(keys), 50):
        store.claim_notifications(
            [
                NotificationClaim(idempotency_key=key, kind="payment_reminder", run_id=run_id)
                for key in keys[start : start + 50]
            ]
        )


def test_two_processes_sharing_the_file_claim_each_key_exactly_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    DemoStore(path)
    keys = [f"key_{n:03d}" for n in range(200)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    processes = [
        context.Process(target=_claim_in_process, args=(path, "run-a", keys, barrier)),
        context.Process(target=_claim_in_process, args=(path, "run-b", keys[::-1], barrier)),
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0, 0]
    records = DemoStore(path).list_notifications()
    assert sorted(record["idempotency_key"] for record in records) == keys
    assert {record["attempts"] for record in records} == {1}


# -- outcomes ------------------------------------------------------------------------------------


def test_outcomes_update_existing_records_and_report_missing_ones(demo_store: DemoStore, mongo: httpx.Client) -> None:
    _claim(mongo, claim("key_sent"), claim("key_failed"), claim("key_skipped"))
    items = [
        {
            "idempotency_key": "key_sent",
            "status": "sent",
            "message_id": "<m1@example.com>",
            "at": "2026-11-28T06:00:05Z",
        },
        {
            "idempotency_key": "key_failed",
            "status": "failed",
            "error": "550 mailbox unavailable",
            "at": "2026-11-28T06:00:06Z",
        },
        {
            "idempotency_key": "key_skipped",
            "status": "skipped",
            "error": "recipient: not a valid address",
            "at": "2026-11-28T06:00:07Z",
        },
        {
            "idempotency_key": "key_nope",
            "status": "sent",
            "message_id": "<m2@example.com>",
            "at": "2026-11-28T06:00:08Z",
        },
    ]
    response = mongo.post("/v1/notifications/outcomes", json={"items": items})
    assert response.json() == {
        "results": [
            {"idempotency_key": "key_sent", "outcome": "updated"},
            {"idempotency_key": "key_failed", "outcome": "updated"},
            {"idempotency_key": "key_skipped", "outcome": "updated"},
            {"idempotency_key": "key_nope", "outcome": "not_found"},
        ]
    }
    sent = demo_store.get_notification("key_sent")
    assert (sent["status"], sent["message_id"], sent["sent_at"], sent["error"]) == (
        "sent",
        "<m1@example.com>",
        "2026-11-28T06:00:05Z",
        None,
    )
    failed = demo_store.get_notification("key_failed")
    assert (failed["status"], failed["error"], failed["sent_at"]) == ("failed", "550 mailbox unavailable", None)
    assert demo_store.get_notification("key_skipped")["status"] == "skipped"
    assert demo_store.get_notification("key_nope") is None


def test_replaying_an_outcome_leaves_the_same_record(demo_store: DemoStore, mongo: httpx.Client) -> None:
    _claim(mongo, claim("key_1"))
    body = {
        "items": [
            {
                "idempotency_key": "key_1",
                "status": "sent",
                "message_id": "<m@example.com>",
                "at": "2026-11-28T06:00:05Z",
            }
        ]
    }
    mongo.post("/v1/notifications/outcomes", json=body)
    once = demo_store.get_notification("key_1")
    assert mongo.post("/v1/notifications/outcomes", json=body).json()["results"][0]["outcome"] == "updated"
    assert demo_store.get_notification("key_1") == once


@pytest.mark.parametrize(
    "item",
    [
        {"idempotency_key": "key_1", "status": "claimed", "at": "2026-11-28T06:00:05Z"},
        {"idempotency_key": "key_1", "status": "sent", "at": "2026-11-28 06:00"},
        {"idempotency_key": "key_1", "status": "sent"},
    ],
)
def test_invalid_outcomes_are_refused(demo_store: DemoStore, mongo: httpx.Client, item: dict) -> None:
    _claim(mongo, claim("key_1"))
    assert_error(mongo.post("/v1/notifications/outcomes", json={"items": [item]}), 400, "invalid_request")
    assert demo_store.get_notification("key_1")["status"] == "claimed"


# -- GET /v1/notifications --------------------------------------------------------------------------


@pytest.fixture
def history(demo_store: DemoStore) -> None:
    demo_store.add_notifications(
        [
            ledger_record(
                "n1", user_id="usr_1", kind="payment_reminder", status="sent", claimed_at="2026-11-20T06:00:00Z"
            ),
            ledger_record(
                "n2", user_id="usr_2", kind="inactivity_warning", status="sent", claimed_at="2026-11-21T06:00:00Z"
            ),
            ledger_record(
                "n3", user_id="usr_1", kind="inactivity_warning", status="failed", claimed_at="2026-11-22T06:00:00Z"
            ),
            ledger_record(
                "n4", user_id="usr_1", kind="payment_reminder", status="claimed", claimed_at="2026-11-23T11:30:00+05:30"
            ),  # 06:00Z
            ledger_record(
                "n5", user_id="usr_3", kind="payment_reminder", status="skipped", claimed_at="2026-11-24T06:00:00Z"
            ),
        ]
    )


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["n1", "n2", "n3", "n4", "n5"]),
        ({"user_id": "usr_1"}, ["n1", "n3", "n4"]),
        ({"kind": "inactivity_warning"}, ["n2", "n3"]),
        ({"status": "sent"}, ["n1", "n2"]),
        ({"status": ["claimed", "failed"]}, ["n3", "n4"]),
        ({"since": "2026-11-22T06:00:00Z"}, ["n3", "n4", "n5"]),  # inclusive
        ({"until": "2026-11-22T06:00:00Z"}, ["n1", "n2"]),  # exclusive
        ({"since": "2026-11-21T00:00:00Z", "until": "2026-11-23T06:00:00.000001Z"}, ["n2", "n3", "n4"]),
        ({"user_id": "usr_1", "kind": "inactivity_warning", "status": "failed"}, ["n3"]),
        ({"user_id": "usr_9"}, []),
    ],
)
def test_notification_filters(mongo: httpx.Client, params: dict, expected: list[str]) -> None:
    items, _ = fetch_all(mongo, "/v1/notifications", {**params, "limit": 2})
    assert ids(items, "idempotency_key") == expected
    for item in items:
        NotificationRecord.model_validate(item)


@pytest.mark.parametrize("params", [{"since": "yesterday"}, {"until": "2026-11-22"}, {"status": "lost"}])
def test_notifications_refuse_invalid_filters(mongo: httpx.Client, params: dict) -> None:
    assert_error(mongo.get("/v1/notifications", params=params), 400, "invalid_parameter")


def test_metadata_is_served_as_an_object_or_as_stored(demo_store: DemoStore, mongo: httpx.Client) -> None:
    demo_store.add_notifications(
        [
            ledger_record("n_ok", metadata={"days_before": 3, "nested": {"a": [1, 2]}}),
            ledger_record("n_bad", metadata="{not json"),
        ]
    )
    items = {item["idempotency_key"]: item for item in mongo.get("/v1/notifications").json()["items"]}
    assert items["n_ok"]["metadata"] == {"days_before": 3, "nested": {"a": [1, 2]}}
    assert items["n_bad"]["metadata"] == "{not json"
