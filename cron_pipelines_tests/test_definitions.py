"""The code location loads from the environment with every job, schedule, sensor and resource."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from cron_pipelines.defs import build_definitions
from cron_pipelines.settings import load_settings

JOBS = {
    "send_payment_reminders": {"payment_reminders"},
    "mark_overdue_dues": {"overdue_marks", "overdue_notices"},
    "notify_inactive_users": {"inactivity_warnings"},
    "deactivate_inactive_users": {"inactive_user_deactivations"},
    "verify_employees": {"verification_decisions", "verification_reminders"},
    "maintenance": {"ledger_health"},
}
# Not daily: launched by the alert sensors.
ALERT_JOBS = {"send_ops_alerts": {"ops_alerts"}}
PROJECT = Path(__file__).resolve().parents[1]


def test_the_six_jobs_are_daily_partitioned_in_the_business_time_zone() -> None:
    defs = build_definitions(load_settings({"CRON_TIMEZONE": "Europe/Berlin", "DAGSTER_HOME": "/tmp/unused"}))
    for name, assets in JOBS.items():
        job = defs.resolve_job_def(name)
        partitions_def = job.partitions_def
        assert isinstance(partitions_def, dg.DailyPartitionsDefinition)
        assert partitions_def.timezone == "Europe/Berlin" and partitions_def.end_offset == 1
        selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
        assert selected == assets
    assert {sensor.name for sensor in defs.sensors} == {
        "verification_attempts_sensor",
        "run_failure_alert_sensor",
        "stuck_claims_sensor",
    }
    assert all(sensor.default_status == dg.DefaultSensorStatus.RUNNING for sensor in defs.sensors)


@pytest.mark.parametrize(
    ("executor", "name"),
    [
        ("multiprocess", "shard_processes"),
        ("celery", "shard_celery"),
        ("k8s", "shard_pods"),
        ("in_process", "in_process"),
    ],
)
def test_sharded_deployments_fan_out_only_the_dues_jobs_on_their_executor(executor: str, name: str) -> None:
    settings = {"DAGSTER_HOME": "/tmp/unused", "DELIVERY_SHARDS": "3", "DELIVERY_EXECUTOR": executor}
    defs = build_definitions(load_settings(settings))
    for job_name, asset in (("send_payment_reminders", "payment_reminders"), ("mark_overdue_dues", "overdue_notices")):
        job = defs.resolve_job_def(job_name)
        assert job.executor_def.name == name and job.tags["cron_pipelines/shards"] == "3"
        step_names = {node.name for node in defs.resolve_assets_def(asset).node_def.node_defs}  # type: ignore[attr-defined]
        assert step_names == {f"plan_{asset}_shards", f"deliver_{asset}", f"sum_{asset}_shards"}
    # The other jobs, the sensor-driven verification run among them, stay one in-process step per asset.
    for job_name in ("notify_inactive_users", "deactivate_inactive_users", "verify_employees", "maintenance"):
        job = defs.resolve_job_def(job_name)
        assert job.executor_def is dg.in_process_executor and "cron_pipelines/shards" not in job.tags


@pytest.mark.parametrize("shards", ["1", "3"])
def test_lineage_starts_at_the_services_data(shards: str) -> None:
    defs = build_definitions(load_settings({"DAGSTER_HOME": "/tmp/unused", "DELIVERY_SHARDS": shards}))
    graph = defs.resolve_asset_graph()
    parents = lambda name: {key.to_user_string() for key in graph.get(dg.AssetKey.from_user_string(name)).parent_keys}
    assert parents("payment_reminders") == {"sql_service/dues", "mongo_service/notification_ledger"}
    assert parents("overdue_notices") == {"overdue_marks", "mongo_service/notification_ledger"}
    assert parents("verification_decisions") == {
        "sql_service/verifications",
        "mongo_service/verification_attempts",
        "mongo_service/notification_ledger",
    }
    assert parents("ledger_health") == {"mongo_service/notification_ledger"}
    assert not graph.get(dg.AssetKey(["sql_service", "dues"])).is_materializable


def test_secrets_from_the_environment_stay_env_vars_in_the_resource_config(monkeypatch) -> None:
    for variable, value in {
        "DAGSTER_HOME": "/tmp/unused",
        "SQL_SERVICE_URL": "https://sql.internal",
        "MONGO_SERVICE_URL": "https://mongo.internal",
        "INTERNAL_JWT_SECRET": "a-real-secret-that-is-long-enough-000",
        "SMTP_USERNAME": "mailer",
        "SMTP_PASSWORD": "smtp-secret",
        "SMTP_SECURITY": "starttls",
    }.items():
        monkeypatch.setenv(variable, value)
    resources = build_definitions(load_settings()).resources
    assert resources["sql_service"].auth.secret.value == dg.EnvVar("INTERNAL_JWT_SECRET")
    assert resources["mailer"].smtp_password.value == dg.EnvVar("SMTP_PASSWORD")
    assert "a-real-secret" not in repr(resources["sql_service"]) and "smtp-secret" not in repr(resources["mailer"])


def _secret_files_environment(tmp_path: Path) -> dict[str, str]:
    """Real service URLs (nothing is called) and every secret as a `_FILE`, as a container deployment sets them."""
    secrets = {
        "INTERNAL_JWT_SECRET": "file-secret-Zq8Wm3Rt6Yp1Lx4Nc7Vb0Kd2",
        "SMTP_PASSWORD": "smtp-file-password",
        "UNSUBSCRIBE_SIGNING_KEY": "unsubscribe-Hq2Wn5Rk8Yt1Lc4Nv7Bx0Md3",
    }
    environment = {
        "PATH": str(Path(sys.executable).parent),
        "DAGSTER_HOME": str(tmp_path),
        "HOME": str(tmp_path),
        "SQL_SERVICE_URL": "https://sql.internal",
        "MONGO_SERVICE_URL": "https://mongo.internal",
        "SMTP_USERNAME": "mailer",
        "SMTP_SECURITY": "starttls",
        "UNSUBSCRIBE_BASE_URL": "https://example.com/unsubscribe",
    }
    for name, value in secrets.items():
        (tmp_path / name.lower()).write_text(value + "\n")
        environment[f"{name}_FILE"] = str(tmp_path / name.lower())
    return environment


@pytest.mark.parametrize(
    "command",
    [["definitions", "validate", "-w", "workspace.yaml"], ["job", "list", "-w", "workspace.yaml"]],
    ids=["definitions-validate", "job-list"],
)
def test_secret_files_work_in_the_child_processes_dagster_starts(tmp_path: Path, command: list[str]) -> None:
    # Both commands load the code location in a code server of their own: a child process that
    # reads the same environment again.
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), *command],
        cwd=PROJECT,
        env=_secret_files_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "not both" not in output
    if command[0] == "job":
        assert set(JOBS) <= set(output.split())


def test_a_secret_file_is_read_by_the_process_that_uses_it(tmp_path: Path) -> None:
    """The resource config names the file; a child process (here a fresh interpreter) reads it itself."""
    environment = _secret_files_environment(tmp_path)
    probe = (
        "from cron_pipelines.defs import build_definitions; from cron_pipelines.settings import load_settings; "
        "r = build_definitions(load_settings()).resources; "
        "print(r['sql_service'].auth.secret.file, r['sql_service'].auth.build_issuer().token_for('sql-service') != '', "
        "r['mailer'].smtp_password.reveal(), r['mailer'].unsubscribe_links is not None)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [environment["INTERNAL_JWT_SECRET_FILE"], "True", "smtp-file-password", "True"]


def test_dagster_validates_the_code_location(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT,
        env={"PATH": str(Path(sys.executable).parent), "DAGSTER_HOME": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_a_bad_environment_stops_the_code_location_naming_the_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT,
        env={
            "PATH": str(Path(sys.executable).parent),
            "DAGSTER_HOME": str(tmp_path),
            "HOME": str(tmp_path),
            "SMTP_PORT": "abc",
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode != 0
    assert "SMTP_PORT='abc'" in result.stdout + result.stderr


def _dg(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": sys.prefix}
    for name in ("SQL_SERVICE_URL", "MONGO_SERVICE_URL"):
        environment.pop(name, None)
    return subprocess.run(
        [str(Path(sys.executable).parent / "dg"), *args],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dg_lists_and_checks_every_definition_from_the_project_root(tmp_path: Path) -> None:
    listed = _dg("list", "defs", "--json", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    everything = json.loads(listed.stdout)
    defs = build_definitions(load_settings({"DAGSTER_HOME": str(tmp_path)}))
    assert {job["name"] for job in everything["jobs"]} == set(JOBS) | set(ALERT_JOBS)
    assert {schedule["name"] for schedule in everything["schedules"]} == {schedule.name for schedule in defs.schedules}
    assert {sensor["name"] for sensor in everything["sensors"]} == {sensor.name for sensor in defs.sensors}
    assert {asset["asset_key"] for asset in everything["assets"]} >= {key for assets in JOBS.values() for key in assets}
    checked = _dg("check", "defs", home=tmp_path)
    assert checked.returncode == 0 and "All definitions loaded successfully." in checked.stdout + checked.stderr
    assert "does not match" not in checked.stdout + checked.stderr
