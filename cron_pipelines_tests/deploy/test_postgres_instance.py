"""deploy/dagster.yaml on a real PostgreSQL database: storage, queue settings, runs and their history."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pytest

from cron_pipelines.definitions import definitions_for
from cron_pipelines.settings import load_settings
from cron_pipelines_tests.deploy.conftest import PostgresHome


def test_the_production_instance_stores_everything_in_postgres(postgres_home: PostgresHome) -> None:
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        limits = {limit["key"]: limit for limit in coordinator.get_run_queue_config().tag_concurrency_limits}
        assert limits["dagster/partition"] == {
            "key": "dagster/partition",
            "limit": 1,
            "value": {"applyLimitPerUniqueValue": True},
        }
        assert limits["dagster/backfill"]["limit"] < coordinator.get_run_queue_config().max_concurrent_runs
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 7200
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert type(instance.scheduler).__name__ == "DagsterDaemonScheduler"
        assert (instance.scheduler.max_catchup_runs, instance.scheduler.max_tick_retries) == (3, 3)  # type: ignore[union-attr]
        assert instance.managed_python_loggers == ["cron_pipelines"] and instance.python_log_level == "INFO"
        assert instance.telemetry_enabled is False


def test_runs_and_materializations_are_read_back_from_postgres(
    postgres_home: PostgresHome, capfd: pytest.CaptureFixture[str]
) -> None:
    today = datetime.now(UTC).date().isoformat()
    defs = definitions_for(load_settings())  # embedded demo services, outbox mail, under DAGSTER_HOME
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("send_payment_reminders").execute_in_process(
            partition_key=today, instance=instance
        )
        assert result.success
    capfd.readouterr()
    with dg.DagsterInstance.get() as reopened:  # a fresh connection: this is what is stored
        (record,) = reopened.get_run_records(dg.RunsFilter(job_name="send_payment_reminders"))
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert record.dagster_run.tags["dagster/partition"] == today
        event = reopened.get_latest_materialization_event(dg.AssetKey("payment_reminders"))
        metadata = event.asset_materialization.metadata
        assert event.run_id == result.run_id and metadata["sent"].value > 0 and metadata["business_date"].value == today
        partitions = reopened.get_materialized_partitions(dg.AssetKey("payment_reminders"))
        assert partitions == {today}

    audit = subprocess.run(
        [sys.executable, "-m", "cron_pipelines.cli", "audit", "--run", result.run_id, "--json"],
        env=postgres_home.environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stderr
    rows = json.loads(audit.stdout)
    assert (
        rows
        and {row["run_status"] for row in rows} == {"SUCCESS"}
        and {row["run_partition"] for row in rows} == {today}
    )


def test_every_event_is_printed_as_a_json_line(postgres_home: PostgresHome, capfd: pytest.CaptureFixture[str]) -> None:
    today = datetime.now(UTC).date().isoformat()
    defs = definitions_for(load_settings())
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("maintenance").execute_in_process(partition_key=today, instance=instance)
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    ours = [line for line in lines if line.get("run_id") == result.run_id]
    assert {"RUN_START", "ASSET_MATERIALIZATION", "RUN_SUCCESS"} <= {line.get("event") for line in ours}
    assert all(line["job"] == "maintenance" and line["partition"] == today for line in ours)
