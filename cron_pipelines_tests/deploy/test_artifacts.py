"""What can be checked here of the container deployment (no Docker engine runs on this machine):
the files parse, agree with each other, with the README and with the install the tests use, and
the instance configs load on PostgreSQL."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from dagster_k8s.models import k8s_model_from_dict

from cron_pipelines.settings import Settings
from cron_pipelines_tests.deploy.conftest import PROJECT, PostgresHome

# Every variable the code location reads (its settings), except DAGSTER_HOME, which each
# image or process sets for itself.
PROJECT_VARIABLES = {name.upper() for name in Settings.model_fields} - {"DAGSTER_HOME"}
# The image carries no stand-in services: containers always talk to the real ones.
CONTAINER_VARIABLES = PROJECT_VARIABLES - {"DEMO_SERVICES_DB"}
POSTGRES_VARIABLES = {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}
IMAGE = "cron-pipelines:latest"


def _yaml(path: str) -> dict:
    return yaml.safe_load((PROJECT / path).read_text())


def _keys(value: object) -> list[str]:
    if isinstance(value, dict):
        return [key for key, item in value.items() for key in [key, *_keys(item)]]
    if isinstance(value, list):
        return [key for item in value for key in _keys(item)]
    return []


def _env_example_variables() -> set[str]:
    return set(re.findall(r"^# ([A-Z][A-Z0-9_]+)=", (PROJECT / ".env.example").read_text(), re.M))


def test_env_example_lists_exactly_the_settings() -> None:
    # The compose and launcher checks below rely on .env.example and the settings agreeing.
    assert _env_example_variables() - {"DAGSTER_HOME"} == PROJECT_VARIABLES


def test_compose_names_the_services_and_image() -> None:
    services = _yaml("docker-compose.yaml")["services"]
    assert set(services) == {"postgres", "code-server", "webserver", "daemon"}
    for name in ("code-server", "webserver", "daemon"):
        assert services[name]["image"] == IMAGE and services[name]["build"] == "."
        assert services[name]["restart"] == "unless-stopped"
    assert services["code-server"].get("command") is None  # the image's CMD: the code server
    assert services["webserver"]["command"] == [
        "dagster-webserver",
        "-w",
        "deploy/workspace.yaml",
        "-h",
        "0.0.0.0",
        "-p",
        "3000",
    ]
    assert services["daemon"]["command"] == ["dagster-daemon", "run", "-w", "deploy/workspace.yaml"]
    # The Docker run launcher starts runs in the image the code server reports.
    assert services["code-server"]["environment"]["DAGSTER_CURRENT_IMAGE"] == IMAGE
    assert services["code-server"]["healthcheck"]["test"] == [
        "CMD",
        "dagster",
        "api",
        "grpc-health-check",
        "-p",
        "4266",
    ]
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["code-server"]["condition"] == "service_healthy"
        # Both talk to the Docker engine (start and terminate run containers) as the image's
        # non-root user, through the socket's group.
        assert "/var/run/docker.sock:/var/run/docker.sock" in services[name]["volumes"]
        assert services[name]["group_add"] and "DOCKER_GID" in services[name]["group_add"][0]
        assert "user" not in services[name]


def test_compose_passes_on_every_variable_the_readme_documents() -> None:
    compose = _yaml("docker-compose.yaml")
    shared = compose["x-dagster-env"]
    for name in ("code-server", "webserver", "daemon"):
        assert shared.items() <= compose["services"][name]["environment"].items()
    readme = (PROJECT / "README.md").read_text()
    containers = re.search(r"\*\*Containers\*\*(.*?)\n## ", readme, re.S)
    assert containers, "README has no **Containers** section"
    documented = {
        name
        for span in re.findall(r"`([^`]+)`", containers.group(1))
        for name in re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", span)
    }
    assert {"DAGSTER_PG_HOST", "DAGSTER_HOME", "DAGSTER_DOCKER_NETWORK"} <= documented  # the section was read
    assert documented <= set(shared), f"documented but not passed on: {documented - set(shared)}"
    assert _env_example_variables() & CONTAINER_VARIABLES <= set(shared)  # "plus the variables of .env.example"
    # And the other way round: whatever an operator can set is documented somewhere.
    header = (PROJECT / "docker-compose.yaml").read_text().split("\nx-dagster-env", 1)[0]
    described = readme + (PROJECT / ".env.example").read_text() + header
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (PROJECT / "docker-compose.yaml").read_text()))
    for name in set(shared) | interpolated:
        assert name in described, f"{name} is not documented"


def test_run_containers_get_the_instance_and_every_setting() -> None:
    docker_instance = _yaml("deploy/dagster.docker.yaml")
    launcher = docker_instance["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    env_vars = set(launcher["config"]["env_vars"])
    assert env_vars >= POSTGRES_VARIABLES | CONTAINER_VARIABLES
    compose = _yaml("docker-compose.yaml")
    assert env_vars <= set(compose["services"]["daemon"]["environment"])  # the daemon has them to pass on
    assert compose["networks"]["cron_pipelines"]["name"] == compose["x-dagster-env"]["DAGSTER_DOCKER_NETWORK"]
    # The demo services' file and the outbox live in one volume the code server and the run
    # containers share.
    (volume,) = launcher["config"]["container_kwargs"]["volumes"]
    volume_name, mount = volume.split(":")
    assert compose["volumes"]["cron_pipelines_data"]["name"] == volume_name
    assert f"cron_pipelines_data:{mount}" in compose["services"]["code-server"]["volumes"]
    shared = compose["x-dagster-env"]
    for variable in ("MAIL_OUTBOX_DIR",):
        assert shared[variable].removeprefix(f"${{{variable}:-").startswith(mount + "/")
    # Apart from its launcher, the Docker instance is the production instance.
    production = _yaml("deploy/dagster.yaml")
    assert production["run_launcher"] == {
        "module": "cron_pipelines.deployment.run_launcher",
        "class": "LocalRunLauncher",
    }

    def without_launcher(instance: dict) -> dict:
        return {key: value for key, value in instance.items() if key != "run_launcher"}

    assert without_launcher(docker_instance) == without_launcher(production)


def test_the_image_installs_what_the_tests_install() -> None:
    dockerfile = (PROJECT / "Dockerfile").read_text()
    makefile = (PROJECT / "Makefile").read_text()
    image_install = re.search(r"^RUN pip install -c constraints.txt '\.\[(\w+)\]'$", dockerfile, re.M)
    test_install = re.search(r"pip install --quiet -c constraints.txt -e '\.\[([\w,]+)\]'", makefile)
    assert image_install and test_install
    assert image_install.group(1) in test_install.group(1).split(",")  # same constraints, same extras
    assert re.search(r"^COPY constraints.txt pyproject.toml README.md \./$", dockerfile, re.M)
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^USER cron$", dockerfile, re.M)  # not root
    assert re.search(r"^EXPOSE 4266$", dockerfile, re.M)
    assert re.search(r"^COPY --chown=cron deploy/dagster.docker.yaml /opt/dagster/home/dagster.yaml$", dockerfile, re.M)
    assert "DAGSTER_HOME=/opt/dagster/home" in dockerfile
    cmd = re.search(r"^CMD (\[.*?\])$", dockerfile, re.M | re.S)
    assert cmd and yaml.safe_load(cmd.group(1).replace("\\\n", "")) == [
        "dagster",
        "code-server",
        "start",
        "-m",
        "cron_pipelines.definitions",
        "-a",
        "defs",
        "--location-name",
        "cron_pipelines",
        "-h",
        "0.0.0.0",
        "-p",
        "4266",
    ]
    # The extra brings the launchers the image's instance configs name, pinned like dagster.
    pyproject = (PROJECT / "pyproject.toml").read_text()
    deploy_extra = re.search(r"^deploy = \[(.*)\]$", pyproject, re.M)
    assert deploy_extra and {"dagster-docker==0.29.27", "dagster-k8s==0.29.27"} <= set(
        re.findall(r'"([^"]+)"', deploy_extra.group(1))
    )
    pins = set((PROJECT / "constraints.txt").read_text().splitlines())
    for package in ("dagster==1.13.27", "dagster-postgres==0.29.27", "dagster-docker==0.29.27", "dagster-k8s==0.29.27"):
        assert package in pins
    assert any(pin.startswith("supervisor==") for pin in pins)
    ignored = (PROJECT / ".dockerignore").read_text().splitlines()
    assert {".env", ".venv", ".git", ".dagster_home"} <= set(ignored)


def test_helm_values_set_the_k8s_launcher_postgres_and_code_location_image() -> None:
    values = _yaml("deploy/helm/values.yaml")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    # One pod per run, with a Kubernetes deadline past run monitoring's max runtime; the
    # run-pod config is what dagster-k8s accepts.
    run_k8s_config = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    user_config = UserDefinedDagsterK8sConfig.from_dict(
        {"container_config": run_k8s_config["containerConfig"], "job_spec_config": run_k8s_config["jobSpecConfig"]}
    )
    k8s_model_from_dict(kubernetes.client.V1Container, {"name": "run", **user_config.container_config})
    job_spec = k8s_model_from_dict(kubernetes.client.V1JobSpec, {"template": {}, **user_config.job_spec_config})
    assert job_spec.active_deadline_seconds > values["dagsterDaemon"]["runMonitoring"]["maxRuntimeSeconds"]

    postgres = values["postgresql"]
    assert postgres["enabled"] is False and postgres["postgresqlHost"] and postgres["postgresqlDatabase"]
    assert values["generatePostgresqlPasswordSecret"] is False  # the password lives in a secret...
    assert not [key for key in _keys(values) if "password" in key.lower() and key != "generatePostgresqlPasswordSecret"]

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    assert deployment["image"]["repository"].endswith("/cron-pipelines") and deployment["image"]["tag"]
    assert deployment["codeServerArgs"] == ["--module-name", "cron_pipelines.definitions", "--attribute", "defs"]
    assert deployment["port"] == 4266
    assert deployment["securityContext"]["runAsNonRoot"] is True
    assert {entry["name"] for entry in deployment["env"]} <= PROJECT_VARIABLES


def test_helm_instance_settings_match_the_production_instance() -> None:
    values = _yaml("deploy/helm/values.yaml")
    production = _yaml("deploy/dagster.yaml")
    daemon = values["dagsterDaemon"]
    queue = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert daemon["runCoordinator"]["type"] == production["run_coordinator"]["class"]
    assert queue["maxConcurrentRuns"] == production["run_coordinator"]["config"]["max_concurrent_runs"]
    assert queue["tagConcurrencyLimits"] == production["run_coordinator"]["config"]["tag_concurrency_limits"]
    retries = production["run_retries"]
    assert daemon["runRetries"] == {
        "enabled": retries["enabled"],
        "maxRetries": retries["max_retries"],
        "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"],
    }
    monitoring = production["run_monitoring"]
    assert daemon["runMonitoring"]["enabled"] is monitoring["enabled"] is True
    assert daemon["runMonitoring"]["maxRuntimeSeconds"] == monitoring["max_runtime_seconds"]
    assert daemon["runMonitoring"]["startTimeoutSeconds"] >= monitoring["start_timeout_seconds"]
    scheduler = values["scheduler"]["config"]["customScheduler"]
    assert {key: scheduler[key] for key in ("module", "class", "config")} == production["scheduler"]
    assert values["pythonLogs"]["managedPythonLoggers"] == production["python_logs"]["managed_python_loggers"]
    assert values["pythonLogs"]["pythonLogLevel"] == production["python_logs"]["python_log_level"]
    assert values["telemetry"]["enabled"] is production["telemetry"]["enabled"] is False


def test_the_docker_instance_config_loads_with_the_docker_run_launcher(
    postgres_home: PostgresHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    (postgres_home.path / "dagster.yaml").write_text((PROJECT / "deploy/dagster.docker.yaml").read_text())
    monkeypatch.setenv("DAGSTER_DOCKER_NETWORK", "cron_pipelines")
    with dg.DagsterInstance.get() as instance:
        launcher = instance.run_launcher  # built and validated from the config
        assert type(launcher).__name__ == "DockerRunLauncher"
        assert launcher.networks == ["cron_pipelines"]  # type: ignore[attr-defined]
        assert "SMTP_PASSWORD" in launcher.env_vars  # type: ignore[attr-defined]
        assert launcher.container_kwargs["volumes"] == ["cron_pipelines_data:/opt/dagster/data"]  # type: ignore[attr-defined]
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        instance.get_runs(limit=1)  # the database answers


def test_one_machine_processes_use_the_grpc_workspace_and_are_supervised() -> None:
    (location,) = _yaml("deploy/workspace.yaml")["load_from"]
    assert location["grpc_server"] == {
        "host": {"env": "DAGSTER_CODE_SERVER_HOST"},
        "port": {"env": "DAGSTER_CODE_SERVER_PORT"},
        "location_name": "cron_pipelines",
    }
    supervisor = (PROJECT / "deploy/supervisord.conf").read_text()
    commands = {}
    for program in ("code-server", "webserver", "daemon"):
        section = supervisor.split(f"[program:{program}]", 1)[1].split("\n[", 1)[0]
        settings = dict(
            line.split("=", 1) for line in section.strip().splitlines() if "=" in line and not line.startswith(";")
        )
        assert settings["autorestart"] == "true" and int(settings["startretries"]) >= 100
        assert settings["stdout_logfile"].endswith(f"/{program}.log") and settings["redirect_stderr"] == "true"
        # The code server alone is signalled: its run workers outlive a restart (a hand-off).
        grouped = "false" if program == "code-server" else "true"
        assert settings["stopasgroup"] == settings["killasgroup"] == grouped
        commands[program] = shlex.split(settings["command"])
    assert commands["code-server"][1:6] == ["code-server", "start", "-m", "cron_pipelines.definitions", "-a"]
    assert "--location-name" in commands["code-server"]
    assert commands["webserver"][1:3] == ["-w", "%(ENV_DAGSTER_WORKSPACE)s"]
    assert commands["daemon"][1:4] == ["run", "-w", "%(ENV_DAGSTER_WORKSPACE)s"]
    env = (PROJECT / "deploy/env.sh").read_text()
    assert "$project/deploy/workspace.yaml" in env
    # Dagster's telemetry uploader empties $DAGSTER_HOME/logs: supervisord's logs live elsewhere.
    log_dir = re.search(r'CRON_PIPELINES_LOG_DIR="\$\{CRON_PIPELINES_LOG_DIR:-([^}]+)\}"', env)
    assert log_dir and log_dir.group(1) not in ("$DAGSTER_HOME/logs", "$DAGSTER_HOME/logs/")


def test_deploy_scripts_are_executable() -> None:
    for script in ("deploy/start.sh", "deploy/ctl.sh"):
        assert (PROJECT / script).stat().st_mode & 0o111, script
    assert Path(PROJECT / "deploy/env.sh").exists()
