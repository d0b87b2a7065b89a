"""What can be checked here of the container deployment (no Docker engine runs on this machine):
the files parse, agree with each other and with the install the tests use."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import yaml

from cron_pipelines.settings import Settings
from cron_pipelines_tests.deploy.conftest import PROJECT, PostgresHome


def _yaml(path: str) -> dict:
    return yaml.safe_load((PROJECT / path).read_text())


def _keys(value: object) -> list[str]:
    if isinstance(value, dict):
        return [key for key, item in value.items() for key in [key, *_keys(item)]]
    if isinstance(value, list):
        return [key for item in value for key in _keys(item)]
    return []


def test_compose_names_the_services_images_and_documented_variables() -> None:
    compose = _yaml("docker-compose.yaml")
    assert set(compose["services"]) == {"postgres", "code-server", "webserver", "daemon"}
    assert compose["services"]["code-server"]["build"] == "."
    for service in ("code-server", "webserver", "daemon"):
        assert compose["services"][service]["image"] == "cron-pipelines:latest"
    assert compose["services"]["webserver"]["command"][:3] == ["dagster-webserver", "-w", "deploy/workspace.yaml"]
    assert compose["services"]["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in compose["services"]["daemon"]["volumes"]
    environment = compose["services"]["daemon"]["environment"]
    documented = (PROJECT / "README.md").read_text() + (PROJECT / ".env.example").read_text()
    for name in environment:
        assert name in documented, f"{name} is not documented"
    # The project's own variables are the settings model's fields.
    project_variables = {name for name in environment if name.lower() in Settings.model_fields}
    assert {"SQL_SERVICE_URL", "MONGO_SERVICE_URL", "INTERNAL_JWT_SECRET", "SMTP_PASSWORD", "CRON_TIMEZONE"} <= project_variables
    # Every variable the Docker run launcher hands to run containers is set on the services.
    launcher = _yaml("deploy/dagster.docker.yaml")["run_launcher"]
    assert launcher["class"] == "DockerRunLauncher"
    assert set(launcher["config"]["env_vars"]) <= set(environment)


def test_helm_values_set_the_k8s_launcher_postgres_and_code_location_image() -> None:
    values = _yaml("deploy/helm/values.yaml")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"]
    assert values["generatePostgresqlPasswordSecret"] is False  # the password lives in a secret
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["image"]["repository"].endswith("/cron-pipelines")
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "cron_pipelines.definitions", "--attribute", "defs"]
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in queue["tagConcurrencyLimits"]
    assert values["dagsterDaemon"]["runRetries"]["retryOnAssetOrOpFailure"] is False
    assert not [key for key in _keys(values) if "password" in key.lower() and key != "generatePostgresqlPasswordSecret"]


def test_the_image_installs_what_the_tests_install() -> None:
    dockerfile = (PROJECT / "Dockerfile").read_text()
    makefile = (PROJECT / "Makefile").read_text()
    image_install = re.search(r"pip install -c constraints.txt '\.\[(\w+)\]'", dockerfile)
    test_install = re.search(r"pip install --quiet -c constraints.txt -e '\.\[([\w,]+)\]'", makefile)
    assert image_install and test_install
    assert image_install.group(1) in test_install.group(1).split(",")  # same constraints, same extras
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^USER cron$", dockerfile, re.M)  # not root
    assert '"dagster", "code-server", "start", "-m", "cron_pipelines.definitions"' in dockerfile
    pins = (PROJECT / "constraints.txt").read_text()
    for package in ("dagster==1.13.27", "dagster-postgres==0.29.27", "dagster-docker==0.29.27", "dagster-k8s==0.29.27"):
        assert package in pins


def test_the_docker_instance_config_loads_with_the_docker_run_launcher(postgres_home: PostgresHome) -> None:
    (postgres_home.path / "dagster.yaml").write_text((PROJECT / "deploy/dagster.docker.yaml").read_text())
    import os

    os.environ["DAGSTER_DOCKER_NETWORK"] = "cron_pipelines"
    try:
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
            assert instance.run_launcher.inst_data.config_dict["network"] == {"env": "DAGSTER_DOCKER_NETWORK"}
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    finally:
        del os.environ["DAGSTER_DOCKER_NETWORK"]


def test_the_workspace_points_at_the_code_server() -> None:
    (location,) = _yaml("deploy/workspace.yaml")["load_from"]
    assert location["grpc_server"]["location_name"] == "cron_pipelines"
    assert location["grpc_server"]["port"] == {"env": "DAGSTER_CODE_SERVER_PORT"}
    supervisor = (PROJECT / "deploy/supervisord.conf").read_text()
    for program in ("code-server", "webserver", "daemon"):
        section = supervisor.split(f"[program:{program}]", 1)[1].split("[program:", 1)[0]
        assert "autorestart=true" in section and "stdout_logfile=" in section
