"""Prometheus metrics pushed at the end of a run, received by a real HTTP receiver and parsed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cron_pipelines_tests.demo_services.helpers import due, user
from cron_pipelines_tests.support.job_world import JobWorld, job_environment
from cron_pipelines_tests.support.pushgateway import PushgatewayStandIn
from cron_pipelines_tests.support.services import ServiceWorld
from cron_pipelines_tests.support.smtp_sink import SmtpSink

D = "2026-11-28"


@pytest.fixture
def gateway() -> Iterator[PushgatewayStandIn]:
    with PushgatewayStandIn() as receiver:
        yield receiver


@pytest.fixture
def world(services: ServiceWorld, tmp_path: Path, gateway: PushgatewayStandIn) -> Iterator[JobWorld]:
    with SmtpSink() as smtp, dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        environment = job_environment(services, smtp, str(tmp_path), PROMETHEUS_PUSHGATEWAY_URL=gateway.url)
        yield JobWorld(services, smtp, environment, instance)


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_a_run_pushes_notification_request_retry_and_duration_metrics(
    world: JobWorld, gateway: PushgatewayStandIn
) -> None:
    world.services.store.add_users([user("usr_a"), user("usr_b"), user("usr_c", email=None)])
    world.services.store.add_dues([due(f"due_{x}", user_id=f"usr_{x}", due_date="2026-12-01") for x in "abc"])
    world.smtp.temporarily_refused_recipients.add("usr_b@example.com")
    world.services.sql_faults.add(method="GET", path="/v1/dues", status=503)

    assert world.run("send_payment_reminders", D).success

    (push,) = gateway.pushes
    assert push.method == "PUT"
    assert push.path == "/metrics/job/cron_pipelines/dagster_job/send_payment_reminders"
    assert push.content_type.startswith("text/plain")
    samples = push.samples()
    notifications = "cron_pipelines_notifications_total"
    job = {"job": "send_payment_reminders", "kind": "payment_reminder"}
    assert _value(samples, notifications, **job, outcome="claimed") == 3
    assert _value(samples, notifications, **job, outcome="sent") == 1
    assert _value(samples, notifications, **job, outcome="failed") == 1
    assert _value(samples, notifications, **job, outcome="skipped") == 1
    requests = "cron_pipelines_service_requests_total"
    assert _value(samples, requests, service="sql-service", endpoint="GET /v1/dues", status="503") == 1
    assert _value(samples, requests, service="sql-service", endpoint="GET /v1/dues", status="200") == 1
    assert (
        _value(samples, requests, service="mongo-service", endpoint="POST /v1/notifications/claims", status="200") == 1
    )
    assert _value(samples, "cron_pipelines_service_retries_total", service="sql-service", endpoint="GET /v1/dues") == 1
    latency = "cron_pipelines_service_request_duration_seconds_count"
    assert _value(samples, latency, service="sql-service", endpoint="GET /v1/dues") == 2
    assert _value(samples, "cron_pipelines_run_duration_seconds_count", job="send_payment_reminders") == 1
    assert _value(samples, "cron_pipelines_run_duration_seconds_sum", job="send_payment_reminders") > 0


def test_a_failed_run_still_pushes_what_it_did(world: JobWorld, gateway: PushgatewayStandIn) -> None:
    world.services.store.add_users([user("usr_a")])
    world.services.store.add_dues([due("due_a", user_id="usr_a", due_date="2026-12-01")])
    world.smtp.recipient_reply = "421 4.3.2 Service shutting down"  # after the claim: released
    assert not world.run("send_payment_reminders", D).success
    samples = gateway.pushes[-1].samples()
    assert (
        _value(
            samples,
            "cron_pipelines_notifications_total",
            job="send_payment_reminders",
            kind="payment_reminder",
            outcome="released",
        )
        == 1
    )


def test_an_unreachable_pushgateway_does_not_fail_the_run(world: JobWorld) -> None:
    world.configure(PROMETHEUS_PUSHGATEWAY_URL="http://127.0.0.1:9")
    assert world.run("maintenance", D).success


def _seed_dues(world: JobWorld, users: int) -> None:
    world.services.store.add_users([user(f"usr_{n}") for n in range(users)])
    world.services.store.add_dues([due(f"due_{n}", user_id=f"usr_{n}", due_date="2026-12-01") for n in range(users)])


def test_each_shard_process_pushes_its_own_group_so_no_shard_overwrites_another(
    world: JobWorld, gateway: PushgatewayStandIn
) -> None:
    world.configure(DELIVERY_SHARDS="2", DELIVERY_EXECUTOR="multiprocess")
    _seed_dues(world, 20)

    process = world.run_in_subprocess("send_payment_reminders", D)
    output, _ = process.communicate(timeout=180)

    assert process.returncode == 0, output
    paths = sorted(push.path for push in gateway.pushes)
    base = "/metrics/job/cron_pipelines/dagster_job/send_payment_reminders/shard"
    assert paths == [f"{base}/0_of_2", f"{base}/1_of_2"]
    sent = [
        _value(
            push.samples(),
            "cron_pipelines_notifications_total",
            job="send_payment_reminders",
            kind="payment_reminder",
            outcome="sent",
        )
        for push in gateway.pushes
    ]
    assert sum(sent) == 20 and min(sent) > 0


def test_shards_run_in_one_process_push_once_for_the_run(world: JobWorld, gateway: PushgatewayStandIn) -> None:
    world.configure(DELIVERY_SHARDS="2", DELIVERY_EXECUTOR="in_process")
    _seed_dues(world, 20)

    assert world.run("send_payment_reminders", D).success

    (push,) = gateway.pushes
    assert push.path == "/metrics/job/cron_pipelines/dagster_job/send_payment_reminders"
    labels = {"job": "send_payment_reminders", "kind": "payment_reminder", "outcome": "sent"}
    assert _value(push.samples(), "cron_pipelines_notifications_total", **labels) == 20
