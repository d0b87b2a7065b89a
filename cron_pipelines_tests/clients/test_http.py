"""The client core against the stand-in services on real loopback ports."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from datetime import date

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from cron_pipelines.clients.errors import (
    ServiceAuthError,
    ServiceBudgetExhausted,
    ServiceProtocolError,
    ServiceRequestError,
    ServiceUnavailable,
)
from cron_pipelines.clients.http import Backoff, ServiceBudget, ServiceClient
from cron_pipelines.clients.mongo_service import MongoServiceClient
from cron_pipelines.clients.sql_service import SqlServiceClient
from cron_pipelines.clients.tokens import TokenIssuer
from cron_pipelines.models.payloads import Due, NotificationClaim
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines_tests.demo_services.helpers import due, user
from cron_pipelines_tests.support.keys import TEST_JWT_SECRET
from cron_pipelines_tests.support.services import ServiceWorld
from demo_services.server import ServiceServer

FAST_BACKOFF = Backoff(max_attempts=4, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def _sql(services: ServiceWorld, sleeps: list[float], **options) -> SqlServiceClient:
    options.setdefault("backoff", FAST_BACKOFF)
    return SqlServiceClient(base_url=services.sql_url, issuer=services.issuer, sleep=sleeps.append, **options)


def _mongo(services: ServiceWorld, sleeps: list[float], **options) -> MongoServiceClient:
    options.setdefault("backoff", FAST_BACKOFF)
    return MongoServiceClient(base_url=services.mongo_url, issuer=services.issuer, sleep=sleeps.append, **options)


def _seed_dues(services: ServiceWorld, count: int) -> list[str]:
    services.store.add_users([user("usr_1")])
    ids = [f"due_{index:05d}" for index in range(count)]
    services.store.add_dues([due(due_id, due_date="2026-12-01") for due_id in ids])
    return ids


# --- pagination -----------------------------------------------------------------


def test_pagination_streams_every_item_once_in_order(services: ServiceWorld, sleeps: list[float]) -> None:
    ids = _seed_dues(services, 2500)
    with _sql(services, sleeps, page_size=1000) as client:
        dues = list(client.iter_dues(statuses=["pending"]))
    assert [item.id for item in dues] == ids
    assert all(isinstance(item, Due) and item.user.email == "usr_1@example.com" for item in dues)
    assert services.sql_requests.count(method="GET", path="/v1/dues") == 3


def test_pagination_fetches_pages_only_as_they_are_consumed(services: ServiceWorld, sleeps: list[float]) -> None:
    _seed_dues(services, 50)
    with _sql(services, sleeps, page_size=10) as client:
        stream = client.iter_dues(statuses=["pending"])
        first = [next(stream) for _ in range(10)]
        assert services.sql_requests.count(path="/v1/dues") == 1
        next(stream)
        assert services.sql_requests.count(path="/v1/dues") == 2
        assert len(first) + 1 + len(list(stream)) == 50


def test_filters_reach_the_service(services: ServiceWorld, sleeps: list[float]) -> None:
    services.store.add_users([user("usr_1")])
    services.store.add_dues(
        [
            due("a", due_date="2026-12-01"),
            due("b", due_date="2026-12-05"),
            due("c", due_date="2026-12-09"),
            due("d", due_date="2026-12-05", status="paid"),
        ]
    )
    with _sql(services, sleeps) as client:
        found = list(client.iter_dues(statuses=["pending"], due_from=date(2026, 12, 2), due_to=date(2026, 12, 9)))
    assert [item.id for item in found] == ["b", "c"]


def test_malformed_records_are_yielded_as_rejections_and_counted(services: ServiceWorld, sleeps: list[float]) -> None:
    services.store.add_users([user("usr_1")])
    services.store.add_dues(
        [due("ok_1"), due("bad_amount", amount_cents="lots"), due("bad_date", due_date="soon"), due("ok_2")]
    )
    with _sql(services, sleeps) as client:
        items = list(client.iter_dues(statuses=["pending"]))
        assert client.stats.invalid_records == 2
    valid = [item.id for item in items if isinstance(item, Due)]
    rejected = {item.record_id: item.reason for item in items if isinstance(item, InvalidRecord)}
    assert valid == ["ok_1", "ok_2"]
    assert set(rejected) == {"bad_amount", "bad_date"}
    assert "amount_cents" in rejected["bad_amount"] and "due_date" in rejected["bad_date"]


# --- batch writes ------------------------------------------------------------------


def test_batch_writes_are_chunked_to_500_and_matched_to_items(services: ServiceWorld, sleeps: list[float]) -> None:
    ids = _seed_dues(services, 1203)
    requested = ids + ["missing_due"]
    with _sql(services, sleeps) as client:
        results = list(client.mark_overdue(requested))
    assert services.sql_requests.count(method="POST", path="/v1/dues/overdue-marks") == 3
    assert [mark.due_id for mark, _ in results] == requested
    assert {result.outcome for _, result in results[:-1]} == {"marked"}
    assert results[-1][1].outcome == "not_found"
    assert services.store.get_due(ids[0])["status"] == "overdue"


def test_claims_round_trip_through_the_ledger(services: ServiceWorld, sleeps: list[float]) -> None:
    claim = NotificationClaim(
        idempotency_key="payment_reminder:d1:2026-12-05:7",
        kind="payment_reminder",
        user_id="u1",
        recipient="u1@example.com",
        run_id="run-1",
        job_name="send_payment_reminders",
        partition_key="2026-11-28",
        metadata={"due_id": "d1"},
    )
    with _mongo(services, sleeps) as client:
        first = client.claim_notifications([claim]).results
        second = client.claim_notifications([claim]).results
    assert first[0].outcome == "claimed" and first[0].record.attempts == 1
    assert second[0].outcome == "duplicate" and second[0].record.status == "claimed"
    assert second[0].record.metadata == {"due_id": "d1"}


def test_a_batch_over_500_is_refused_before_sending(services: ServiceWorld, sleeps: list[float]) -> None:
    with _sql(services, sleeps) as client, pytest.raises(ValueError, match="at most 500"):
        client.write_batch("/v1/dues/overdue-marks", [Due.model_construct()] * 501, Due)
    assert services.sql_requests.count() == 0


# --- retries -------------------------------------------------------------------------


def test_two_503s_then_success(services: ServiceWorld, sleeps: list[float]) -> None:
    _seed_dues(services, 3)
    services.sql_faults.add(method="GET", path="/v1/dues", status=503, times=2)
    with _sql(services, sleeps) as client:
        assert len(list(client.iter_dues(statuses=["pending"]))) == 3
        assert client.stats.retries == 2
    assert services.sql_requests.count(path="/v1/dues") == 3
    assert len(sleeps) == 2 and all(delay > 0 for delay in sleeps)


def test_429_honours_retry_after(services: ServiceWorld, sleeps: list[float]) -> None:
    services.mongo_faults.add(method="POST", path="/v1/notifications/claims", status=429, retry_after=2)
    claim = NotificationClaim(idempotency_key="k:1", kind="payment_reminder")
    with _mongo(services, sleeps) as client:
        assert client.claim_notifications([claim]).results[0].outcome == "claimed"
    assert sleeps == [2.0]
    assert services.mongo_requests.count(path="/v1/notifications/claims") == 2


def test_backoff_grows_exponentially_with_jitter() -> None:
    backoff = Backoff(base_delay=1.0, max_delay=8.0)
    for retry, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        delays = [backoff.delay(retry, None) for _ in range(200)]
        assert all(ceiling / 2 <= value <= ceiling for value in delays)
        assert len(set(delays)) > 100  # jittered, not in lockstep
    assert Backoff(max_retry_after=30).delay(0, 120.0) == 30


def test_read_timeout_is_retried(services: ServiceWorld, sleeps: list[float]) -> None:
    _seed_dues(services, 2)
    services.sql_faults.add(method="GET", path="/v1/dues", delay=1.0)
    with _sql(services, sleeps, read_timeout=0.3) as client:
        assert len(list(client.iter_dues(statuses=["pending"]))) == 2
        assert client.stats.retries == 1


def test_transient_failures_that_outlast_the_retries_fail_clearly(services: ServiceWorld, sleeps: list[float]) -> None:
    services.sql_faults.add(method="GET", path="/v1/dues", status=502, times=10, code="bad_gateway")
    with _sql(services, sleeps) as client, pytest.raises(ServiceUnavailable) as raised:
        list(client.iter_dues(statuses=["pending"]))
    message = str(raised.value)
    assert "sql-service: GET /v1/dues status=502 code=bad_gateway" in message
    assert "attempts=4" in message and "request_id=" in message
    assert services.sql_requests.count(path="/v1/dues") == 4


def test_the_budget_is_charged_for_failed_tries_and_waits_only(services: ServiceWorld, sleeps: list[float]) -> None:
    _seed_dues(services, 3)
    services.sql_faults.add(method="GET", path="/v1/dues", status=503, times=1)
    services.sql_faults.add(method="GET", path="/v1/dues", delay=0.3)  # slow but answered: free
    budget = ServiceBudget(60.0)
    with _sql(services, sleeps, budget=budget) as client:
        assert len(list(client.iter_dues(statuses=["pending"]))) == 3
    assert sleeps and budget.spent == pytest.approx(sleeps[0], abs=0.25)  # the 503's try and its wait


def test_a_spent_budget_fails_the_next_try_naming_the_service_and_the_last_failure(
    services: ServiceWorld, sleeps: list[float]
) -> None:
    services.sql_faults.add(method="GET", path="/v1/dues", status=503, times=10, code="overloaded")
    budget = ServiceBudget(0.001)  # the first failed try spends it
    with _sql(services, sleeps, budget=budget) as client, pytest.raises(ServiceBudgetExhausted) as raised:
        list(client.iter_dues(statuses=["pending"]))
    message = str(raised.value)
    assert message.startswith("sql-service: GET /v1/dues status=503 code=overloaded")
    assert "(SERVICE_STEP_DEADLINE_SECONDS=0.001); last failure: injected fault: status 503" in message
    assert services.sql_requests.count(path="/v1/dues") == 1 and sleeps == []


def test_a_service_that_is_down_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    issuer = TokenIssuer(algorithm="HS256", signing_key=TEST_JWT_SECRET)
    sleeps: list[float] = []
    with SqlServiceClient(
        base_url=f"http://127.0.0.1:{port}", issuer=issuer, backoff=FAST_BACKOFF, sleep=sleeps.append
    ) as client:
        with pytest.raises(ServiceUnavailable, match=r"connection failed \(ConnectError\)"):
            list(client.iter_dues(statuses=["pending"]))
    assert len(sleeps) == 3


@pytest.fixture
def dropping_server() -> Iterator[str]:
    """A TCP server that accepts and closes every connection without answering."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            connection.recv(65536)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


def test_dropped_connections_are_retried(dropping_server: str) -> None:
    issuer = TokenIssuer(algorithm="HS256", signing_key=TEST_JWT_SECRET)
    sleeps: list[float] = []
    with SqlServiceClient(base_url=dropping_server, issuer=issuer, backoff=FAST_BACKOFF, sleep=sleeps.append) as client:
        with pytest.raises(ServiceUnavailable, match="connection failed"):
            list(client.iter_dues(statuses=["pending"]))
    assert len(sleeps) == 3


# --- permanent failures -----------------------------------------------------------------


def test_401_fails_at_once_and_names_the_service(services: ServiceWorld, sleeps: list[float]) -> None:
    wrong = TokenIssuer(algorithm="HS256", signing_key="another-secret-that-is-32-bytes-long!!")
    with SqlServiceClient(base_url=services.sql_url, issuer=wrong, backoff=FAST_BACKOFF, sleep=sleeps.append) as client:
        with pytest.raises(ServiceAuthError) as raised:
            list(client.iter_dues(statuses=["pending"]))
    assert "sql-service: GET /v1/dues status=401 code=unauthorized" in str(raised.value)
    assert raised.value.request_id and raised.value.attempts == 1
    assert sleeps == [] and services.sql_requests.count() == 1


def test_token_for_the_other_service_is_refused(services: ServiceWorld, sleeps: list[float]) -> None:
    # A client that presents the mongo-service token to sql-service.
    class Misaddressed(ServiceClient):
        def __init__(self, **kwargs) -> None:
            super().__init__(service="mongo-service", **kwargs)

    with Misaddressed(base_url=services.sql_url, issuer=services.issuer, sleep=sleeps.append) as client:
        with pytest.raises(ServiceAuthError, match="status=401"):
            client.request("GET", "/v1/dues", params={"status": "pending"})


def test_400_fails_at_once_without_retry(services: ServiceWorld, sleeps: list[float]) -> None:
    with _sql(services, sleeps) as client, pytest.raises(ServiceRequestError) as raised:
        list(client.iter_dues(statuses=["bogus"]))  # type: ignore[list-item]
    assert "status=400" in str(raised.value) and raised.value.code is not None
    assert sleeps == [] and services.sql_requests.count() == 1


def test_every_request_has_a_fresh_request_id(services: ServiceWorld, sleeps: list[float]) -> None:
    _seed_dues(services, 30)
    services.sql_faults.add(method="GET", path="/v1/dues", status=503)
    with _sql(services, sleeps, page_size=10) as client:
        list(client.iter_dues(statuses=["pending"]))
    request_ids = [entry.request_id for entry in services.sql_requests.entries]
    assert len(request_ids) == 4 and len(set(request_ids)) == 4 and all(request_ids)


# --- contract violations by the server ------------------------------------------------------


@pytest.fixture
def lying_service() -> Iterator[str]:
    app = FastAPI()

    @app.post("/v1/dues/overdue-marks")
    def wrong_order() -> JSONResponse:
        return JSONResponse({"results": [{"due_id": "b", "outcome": "marked"}, {"due_id": "a", "outcome": "marked"}]})

    @app.get("/v1/dues")
    def not_a_page() -> JSONResponse:
        return JSONResponse({"data": []})

    with ServiceServer(app) as server:
        yield server.url


def test_results_that_do_not_match_the_items_are_a_protocol_error(lying_service: str) -> None:
    issuer = TokenIssuer(algorithm="HS256", signing_key=TEST_JWT_SECRET)
    with SqlServiceClient(base_url=lying_service, issuer=issuer) as client:
        with pytest.raises(ServiceProtocolError, match="answers item 'a'"):
            list(client.mark_overdue(["a", "b"]))
        with pytest.raises(ServiceProtocolError, match="no `items` list"):
            list(client.iter_dues(statuses=["pending"]))


# --- secrets ------------------------------------------------------------------------------------


def test_no_token_or_secret_in_logs_or_errors(
    services: ServiceWorld, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _seed_dues(services, 5)
    services.sql_faults.add(method="GET", path="/v1/dues", status=503)
    messages = []
    with _sql(services, sleeps) as client:
        list(client.iter_dues(statuses=["pending"]))
        token = services.issuer.token_for("sql-service")
    wrong = TokenIssuer(algorithm="HS256", signing_key="another-secret-that-is-32-bytes-long!!")
    with SqlServiceClient(base_url=services.sql_url, issuer=wrong, sleep=sleeps.append) as client:
        try:
            list(client.iter_dues(statuses=["pending"]))
        except ServiceAuthError as exc:
            messages.append(str(exc))
            messages.append(repr(exc))
        wrong_token = wrong.token_for("sql-service")
    assert messages
    everything = caplog.text + "\n".join(messages)
    assert "retry 1/3" in caplog.text  # the retry was logged...
    for secret in (token, wrong_token, TEST_JWT_SECRET, "another-secret-that-is-32-bytes-long!!"):
        assert secret not in everything  # ...but never a credential
