"""The mongo-service stand-in (docs/services.md, mongo-service): inactive users, deactivations and verification attempts."""

from __future__ import annotations

import httpx
import pytest

from cron_pipelines.models.payloads import InactiveUser, VerificationAttempt
from cron_pipelines_tests.demo_services.helpers import assert_error, attempt, fetch_all, ids, user
from demo_services import DemoStore

CUTOFF = "2026-10-01T00:00:00Z"


@pytest.fixture
def users(demo_store: DemoStore) -> None:
    demo_store.add_users(
        [
            user("usr_old", last_login_at="2026-08-01T12:00:00Z"),
            user("usr_older", last_login_at="2026-07-01T12:00:00Z"),
            user("usr_recent", last_login_at="2026-11-20T12:00:00Z"),
            user("usr_at_cutoff", last_login_at=CUTOFF),
            user("usr_just_before", last_login_at="2026-09-30T23:59:59.999Z"),
            # 2026-09-30T20:00:00Z, written with an offset: before the cutoff despite its text.
            user("usr_offset", last_login_at="2026-10-01T01:30:00+05:30"),
            user("usr_never_old", last_login_at=None, created_at="2026-06-01T00:00:00Z"),
            user("usr_never_new", last_login_at=None, created_at="2026-11-01T00:00:00Z"),
            # Logged in long ago, but created even earlier: the login is what counts.
            user("usr_login_counts", last_login_at="2026-10-15T00:00:00Z", created_at="2020-01-01T00:00:00Z"),
            user("usr_inactive", status="inactive", last_login_at="2026-01-01T00:00:00Z"),
        ]
    )


# -- GET /v1/users/inactive --------------------------------------------------------------------


@pytest.mark.usefixtures("users")
def test_inactive_users_are_active_users_last_active_strictly_before_the_instant(mongo: httpx.Client) -> None:
    items, _ = fetch_all(mongo, "/v1/users/inactive", {"last_active_before": CUTOFF, "limit": 2})
    assert ids(items) == ["usr_never_old", "usr_older", "usr_old", "usr_offset", "usr_just_before"]
    never = next(item for item in items if item["id"] == "usr_never_old")
    assert never == {
        "id": "usr_never_old",
        "email": "usr_never_old@example.com",
        "full_name": "User usr_never_old",
        "status": "active",
        "last_login_at": None,
        "created_at": "2026-06-01T00:00:00Z",
    }
    assert InactiveUser.model_validate(never).last_active_at == "2026-06-01T00:00:00Z"
    assert next(i for i in items if i["id"] == "usr_offset")["last_login_at"] == "2026-10-01T01:30:00+05:30"


@pytest.mark.usefixtures("users")
def test_the_instant_may_carry_any_offset(mongo: httpx.Client) -> None:
    # 2026-10-01T05:30:00+05:30 is the same instant as the cutoff.
    params = {"last_active_before": "2026-10-01T05:30:00+05:30"}
    items, _ = fetch_all(mongo, "/v1/users/inactive", params)
    assert ids(items) == ["usr_never_old", "usr_older", "usr_old", "usr_offset", "usr_just_before"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "last_active_before"),
        ({"last_active_before": "2026-10-01T00:00:00"}, "offset"),
        ({"last_active_before": "2026-10-01"}, "offset"),
        ({"last_active_before": "last tuesday"}, "last_active_before"),
    ],
)
def test_inactive_users_need_an_instant_with_offset(mongo: httpx.Client, params: dict, reason: str) -> None:
    assert reason in assert_error(mongo.get("/v1/users/inactive", params=params), 400, "invalid_parameter")


# -- POST /v1/users/deactivations ---------------------------------------------------------------


@pytest.mark.usefixtures("users")
def test_deactivations_answer_each_item_in_order(demo_store: DemoStore, mongo: httpx.Client) -> None:
    items = [
        {"user_id": "usr_old", "reason": "inactivity", "last_active_at": "2026-08-01T12:00:00Z"},
        {"user_id": "usr_inactive", "reason": "inactivity", "last_active_at": "2026-01-01T00:00:00Z"},
        # The decision was based on an earlier login: the user came back since.
        {"user_id": "usr_recent", "reason": "inactivity", "last_active_at": "2026-08-01T12:00:00Z"},
        {"user_id": "usr_nope", "reason": "inactivity", "last_active_at": "2026-08-01T12:00:00Z"},
        # The same instant as stored, written with another offset.
        {"user_id": "usr_offset", "last_active_at": "2026-09-30T20:00:00Z"},
        {"user_id": "usr_never_old", "reason": "inactivity", "last_active_at": "2026-06-01T00:00:00Z"},
    ]
    results = mongo.post("/v1/users/deactivations", json={"items": items}).json()["results"]
    assert results == [
        {"user_id": "usr_old", "outcome": "deactivated"},
        {"user_id": "usr_inactive", "outcome": "already_inactive"},
        {"user_id": "usr_recent", "outcome": "active_again"},
        {"user_id": "usr_nope", "outcome": "not_found"},
        {"user_id": "usr_offset", "outcome": "deactivated"},
        {"user_id": "usr_never_old", "outcome": "deactivated"},
    ]
    old = demo_store.get_user("usr_old")
    assert (old["status"], old["deactivation_reason"]) == ("inactive", "inactivity")
    assert old["deactivated_at"].endswith("Z")
    assert old["last_login_at"] == "2026-08-01T12:00:00Z"
    assert demo_store.get_user("usr_recent")["status"] == "active"


@pytest.mark.usefixtures("users")
def test_replaying_a_deactivation_changes_nothing_twice(demo_store: DemoStore, mongo: httpx.Client) -> None:
    body = {"items": [{"user_id": "usr_old", "reason": "inactivity", "last_active_at": "2026-08-01T12:00:00Z"}]}
    assert mongo.post("/v1/users/deactivations", json=body).json()["results"][0]["outcome"] == "deactivated"
    deactivated_at = demo_store.get_user("usr_old")["deactivated_at"]
    assert mongo.post("/v1/users/deactivations", json=body).json()["results"][0]["outcome"] == "already_inactive"
    assert demo_store.get_user("usr_old")["deactivated_at"] == deactivated_at


def test_a_user_whose_activity_cannot_be_read_is_not_deactivated(demo_store: DemoStore, mongo: httpx.Client) -> None:
    demo_store.add_users([user("usr_garbled", last_login_at="sometime in spring")])
    body = {"items": [{"user_id": "usr_garbled", "last_active_at": "2026-08-01T12:00:00Z"}]}
    assert mongo.post("/v1/users/deactivations", json=body).json()["results"][0]["outcome"] == "active_again"
    assert demo_store.get_user("usr_garbled")["status"] == "active"


@pytest.mark.usefixtures("users")
def test_a_deactivation_needs_an_instant_with_offset(demo_store: DemoStore, mongo: httpx.Client) -> None:
    body = {"items": [{"user_id": "usr_old", "last_active_at": "2026-08-01 12:00"}]}
    assert_error(mongo.post("/v1/users/deactivations", json=body), 400, "invalid_request")
    assert demo_store.get_user("usr_old")["status"] == "active"


# -- GET /v1/verification-attempts ------------------------------------------------------------------


@pytest.fixture
def attempts(demo_store: DemoStore) -> None:
    demo_store.add_attempts(
        [
            attempt("att_1", verification_id="ver_a", attempted_at="2026-11-20T08:00:00Z"),
            attempt("att_2", verification_id="ver_b", attempted_at="2026-11-21T08:00:00Z", outcome="success"),
            attempt("att_3", verification_id="ver_a", attempted_at="2026-11-22T08:00:00Z"),
            attempt("att_4", verification_id="ver_c", attempted_at="2026-11-22T08:00:00Z"),
            attempt("att_5", verification_id="ver_a", attempted_at="2026-11-23T13:30:00+05:30"),  # 08:00Z
        ]
    )


@pytest.mark.usefixtures("attempts")
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["att_1", "att_2", "att_3", "att_4", "att_5"]),
        ({"verification_id": "ver_a"}, ["att_1", "att_3", "att_5"]),
        ({"verification_id": ["ver_a", "ver_c"]}, ["att_1", "att_3", "att_4", "att_5"]),
        ({"verification_id": "ver_zzz"}, []),
        ({"since": "2026-11-22T08:00:00Z"}, ["att_3", "att_4", "att_5"]),  # inclusive
        ({"since": "2026-11-22T08:00:00.001Z"}, ["att_5"]),
        ({"since": "2026-11-23T13:30:00+05:30", "verification_id": ["ver_a", "ver_b"]}, ["att_5"]),
    ],
)
def test_attempt_filters(mongo: httpx.Client, params: dict, expected: list[str]) -> None:
    items, _ = fetch_all(mongo, "/v1/verification-attempts", {**params, "limit": 2})
    assert ids(items) == expected
    for item in items:
        VerificationAttempt.model_validate(item)


@pytest.mark.usefixtures("attempts")
def test_attempts_take_at_most_100_verification_ids(mongo: httpx.Client) -> None:
    hundred = ["ver_a"] + [f"ver_{n}" for n in range(99)]
    items, _ = fetch_all(mongo, "/v1/verification-attempts", {"verification_id": hundred})
    assert ids(items) == ["att_1", "att_3", "att_5"]
    response = mongo.get("/v1/verification-attempts", params={"verification_id": [*hundred, "ver_b"]})
    assert "verification_id" in assert_error(response, 400, "invalid_parameter")


def test_attempts_refuse_a_since_without_offset(mongo: httpx.Client) -> None:
    response = mongo.get("/v1/verification-attempts", params={"since": "2026-11-22T08:00:00"})
    assert_error(response, 400, "invalid_parameter")
