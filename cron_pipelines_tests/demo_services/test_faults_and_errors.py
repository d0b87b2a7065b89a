"""Injected faults, the request log, and the contract's error body for every kind of failure."""

from __future__ import annotations

import time

import httpx
import pytest

from cron_pipelines_tests.demo_services.helpers import assert_error, due
from cron_pipelines_tests.support.services import ServiceWorld
from demo_services import DemoStore, FaultInjector, RequestLog
from demo_services.faults import RequestRecord

# -- faults --------------------------------------------------------------------------------------


def test_a_503_twice_then_normal_answers(services: ServiceWorld, sql: httpx.Client) -> None:
    services.sql_faults.add(method="GET", path="/v1/dues", status=503, times=2)
    assert services.sql_faults.remaining() == 2
    statuses = [sql.get("/v1/dues").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert services.sql_faults.remaining() == 0


def test_an_injected_fault_comes_before_auth_and_uses_the_contract_body(services: ServiceWorld) -> None:
    services.mongo_faults.add(method="POST", path="/v1/notifications/claims", status=502, code="bad_gateway")
    response = httpx.post(f"{services.mongo_url}/v1/notifications/claims", json={"items": []})
    assert "502" in assert_error(response, 502, "bad_gateway")
    assert_error(httpx.post(f"{services.mongo_url}/v1/notifications/claims", json={"items": []}), 401, "unauthorized")


@pytest.mark.parametrize(("retry_after", "header"), [(2, "2"), (0.25, "0.25")])
def test_a_429_carries_retry_after(services: ServiceWorld, sql: httpx.Client, retry_after: float, header: str) -> None:
    services.sql_faults.add(method="GET", path="/v1/verifications", status=429, retry_after=retry_after)
    response = sql.get("/v1/verifications")
    assert_error(response, 429, "injected_fault")
    assert response.headers["Retry-After"] == header


def test_a_fault_matches_only_its_method_and_path(
    services: ServiceWorld, sql: httpx.Client, mongo: httpx.Client
) -> None:
    services.sql_faults.add(method="get", path="/v1/dues", status=500)
    assert sql.get("/v1/verifications").status_code == 200
    assert sql.post("/v1/dues/overdue-marks", json={"items": []}).status_code == 200
    assert mongo.get("/v1/notifications").status_code == 200
    assert sql.get("/v1/dues").status_code == 500


def test_faults_are_used_in_the_order_added(services: ServiceWorld, sql: httpx.Client) -> None:
    services.sql_faults.add(method="GET", path="/v1/dues", status=503)
    services.sql_faults.add(method="GET", path="/v1/dues", status=429, retry_after=1)
    assert [sql.get("/v1/dues").status_code for _ in range(3)] == [503, 429, 200]


def test_a_delay_makes_the_client_time_out_then_the_service_answers_normally(
    services: ServiceWorld, demo_store: DemoStore, sql: httpx.Client
) -> None:
    demo_store.add_dues([due("due_1")])
    services.sql_faults.add(method="GET", path="/v1/dues", delay=1.0)
    with pytest.raises(httpx.ReadTimeout):
        sql.get("/v1/dues", timeout=0.2)
    started = time.perf_counter()
    response = sql.get("/v1/dues")
    assert response.status_code == 200 and response.json()["items"][0]["id"] == "due_1"
    assert time.perf_counter() - started < 0.5


def test_a_delay_with_a_status_answers_that_status_late(services: ServiceWorld, sql: httpx.Client) -> None:
    services.sql_faults.add(method="GET", path="/v1/dues", status=504, delay=0.3)
    started = time.perf_counter()
    assert sql.get("/v1/dues").status_code == 504
    assert time.perf_counter() - started >= 0.3


def test_cleared_faults_are_forgotten(services: ServiceWorld, sql: httpx.Client) -> None:
    services.sql_faults.add(method="GET", path="/v1/dues", status=503, times=5)
    services.sql_faults.clear()
    assert services.sql_faults.remaining() == 0
    assert sql.get("/v1/dues").status_code == 200


@pytest.mark.parametrize(
    "arguments",
    [{"times": 0, "status": 503}, {}, {"status": 200}, {"delay": -1.0}],
)
def test_a_fault_that_would_do_nothing_is_refused(arguments: dict) -> None:
    with pytest.raises(ValueError):
        FaultInjector().add(method="GET", path="/v1/dues", **arguments)


# -- request log ------------------------------------------------------------------------------------


def test_the_request_log_records_every_request_without_credentials(services: ServiceWorld, sql: httpx.Client) -> None:
    services.sql_faults.add(method="GET", path="/v1/dues", status=503)
    sql.get("/v1/dues", headers={"X-Request-ID": "req-1"})
    sql.get("/v1/dues", headers={"X-Request-ID": "req-2"})
    httpx.get(f"{services.sql_url}/v1/dues", headers={"X-Request-ID": "req-3"})
    sql.post("/v1/dues/overdue-marks", json={"items": []})
    sql.get("/v1/nothing-here")
    entries = services.sql_requests.entries
    assert [(e.method, e.path, e.status, e.request_id, e.has_authorization) for e in entries] == [
        ("GET", "/v1/dues", 503, "req-1", True),
        ("GET", "/v1/dues", 200, "req-2", True),
        ("GET", "/v1/dues", 401, "req-3", False),
        ("POST", "/v1/dues/overdue-marks", 200, None, True),
        ("GET", "/v1/nothing-here", 404, None, True),
    ]
    token = services.issuer.token_for("sql-service")
    assert token not in repr(entries)
    assert services.sql_requests.counts() == {
        "GET /v1/dues": 3,
        "POST /v1/dues/overdue-marks": 1,
        "GET /v1/nothing-here": 1,
    }
    assert services.sql_requests.count() == 5
    assert services.sql_requests.count(method="GET") == 4
    assert services.sql_requests.count(path="/v1/dues") == 3
    assert services.sql_requests.count(method="POST", path="/v1/dues") == 0
    assert services.mongo_requests.count() == 0


def test_the_request_log_is_cleared(services: ServiceWorld, sql: httpx.Client) -> None:
    sql.get("/v1/dues")
    services.sql_requests.clear()
    assert services.sql_requests.entries == [] and services.sql_requests.counts() == {}


def test_the_request_log_keeps_counts_beyond_its_retained_entries() -> None:
    log = RequestLog(max_entries=2)
    for number in range(5):
        log.record(RequestRecord("GET", "/v1/dues", 200, f"req-{number}", True))
    assert [entry.request_id for entry in log.entries] == ["req-3", "req-4"]
    assert log.counts() == {"GET /v1/dues": 5}


def test_request_counts_are_served_to_an_authenticated_caller(services: ServiceWorld, mongo: httpx.Client) -> None:
    mongo.get("/v1/notifications")
    mongo.get("/v1/notifications")
    mongo.post("/v1/notifications/claims", json={"items": []})
    response = mongo.get("/_admin/request-counts")
    assert response.json() == {"GET /v1/notifications": 2, "POST /v1/notifications/claims": 1}
    assert_error(httpx.get(f"{services.mongo_url}/_admin/request-counts"), 401, "unauthorized")


def test_the_request_id_is_echoed(sql: httpx.Client) -> None:
    assert sql.get("/v1/dues", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    assert "X-Request-ID" not in sql.get("/v1/dues").headers


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_routes_and_methods_use_the_contract_body(sql: httpx.Client, mongo: httpx.Client) -> None:
    assert "/v2/dues" in assert_error(sql.get("/v2/dues"), 404, "not_found")
    assert_error(mongo.get("/v1/dues"), 404, "not_found")
    assert_error(sql.delete("/v1/dues"), 405, "method_not_allowed")


def test_an_unexpected_failure_is_a_500_without_internals(
    services: ServiceWorld, demo_store: DemoStore, sql: httpx.Client
) -> None:
    # A value JSON cannot carry makes the page's serialisation fail inside the service.
    demo_store.add_dues([due("due_blob", description=b"\x00\x01")])
    response = sql.get("/v1/dues", headers={"X-Request-ID": "req-500"})
    message = assert_error(response, 500, "internal_error")
    assert "req-500" in message
    assert "Traceback" not in response.text and "TypeError" not in response.text
    assert services.sql_requests.entries[-1].status == 500
