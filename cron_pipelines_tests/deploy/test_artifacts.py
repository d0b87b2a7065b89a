"""What can be checked here of the container deployment (no Docker engine runs on this machine):
the files parse, agree with each other, with the docs and with the install the tests use, and
the instance configs load on PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from dagster_k8s.models import k8s_model_from_dict

from cron_pipelines.defs import build_definitions
from cron_pipelines.deployment.executors import K8S_STEP_POD
from cron_pipelines.settings import SECRET_VARIABLES, Settings, load_settings
from cron_pipelines_tests.deploy.conftest import PROJECT, PostgresHome
from cron_pipelines_tests.support.certificates import self_signed_localhost
from cron_pipelines_tests.support.keys import TEST_JWT_SECRET

# Every variable the code location reads (its settings), except DAGSTER_HOME, which each
# image or process sets for itself.
PROJECT_VARIABLES = {name.upper() for name in Settings.model_fields} - {"DAGSTER_HOME"}
# The image carries no stand-in services: containers always talk to the real ones. Containers
# get the secrets as files: the variables naming the files, not the values.
CONTAINER_VARIABLES = (PROJECT_VARIABLES - {"DEMO_SERVICES_DB"} - set(SECRET_VARIABLES)) | {
    f"{name}_FILE" for name in SECRET_VARIABLES
}
SECRET_NAMES = set(SECRET_VARIABLES) | {"UNSUBSCRIBE_SIGNING_KEY"}
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
    file_variables = {f"{name}_FILE" for name in SECRET_VARIABLES}
    assert _env_example_variables() - {"DAGSTER_HOME"} - file_variables == PROJECT_VARIABLES


def test_compose_names_the_services_and_image() -> None:
    compose = _yaml("docker-compose.yaml")
    services = compose["services"]
    assert set(services) == {
        "postgres", "code-server", "webserver", "webserver-readonly", "docker-stop-proxy", "daemon", "proxy",
        "redis", "celery-worker",
    }  # fmt: skip
    dagster_services = ("code-server", "webserver", "webserver-readonly", "daemon")
    for name in dagster_services:
        assert services[name]["image"] == IMAGE and services[name]["build"] == "."
        assert services[name]["restart"] == "unless-stopped"
    assert services["code-server"].get("command") is None  # the image's CMD: the code server
    webserver = ["dagster-webserver", "-w", "deploy/workspace.yaml", "-h", "0.0.0.0"]
    assert services["webserver"]["command"] == [*webserver, "-p", "3000"]
    assert services["webserver-readonly"]["command"] == [*webserver[:1], "--read-only", *webserver[1:], "-p", "3001"]
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
    for name in ("webserver", "webserver-readonly", "daemon"):
        assert services[name]["depends_on"]["code-server"]["condition"] == "service_healthy"
        assert "user" not in services[name]
    # Only the daemon, which starts run containers, mounts the Docker socket (as the image's
    # non-root user, through the socket's group); the webserver stops runs through a proxy that
    # allows nothing but listing and stopping containers.
    mounting = {name for name, service in services.items() if "/var/run/docker.sock" in str(service.get("volumes"))}
    assert mounting == {"daemon", "docker-stop-proxy"}
    assert services["daemon"]["group_add"] and "DOCKER_GID" in services["daemon"]["group_add"][0]
    assert services["webserver"]["environment"]["DOCKER_HOST"] == "tcp://docker-stop-proxy:2375"
    # Celery workers (profile `celery`) run steps as the code server would: its settings and secret files.
    worker = services["celery-worker"]
    assert worker["profiles"] == services["redis"]["profiles"] == ["celery"]
    assert worker["command"][:7] == [
        "celery",
        "-A",
        "cron_pipelines.deployment.celery_app",
        "worker",
        "-Q",
        "dagster",
        "--concurrency",
    ]
    assert worker["environment"] == compose["x-dagster-env"] and worker["volumes"] == services["code-server"]["volumes"]
    stop_proxy = services["docker-stop-proxy"]
    assert stop_proxy["environment"] == {"CONTAINERS": "1", "ALLOW_STOP": "1", "POST": "0"}
    assert stop_proxy["volumes"] == ["/var/run/docker.sock:/var/run/docker.sock:ro"] and "ports" not in stop_proxy


def test_compose_publishes_nothing_beyond_loopback_by_default_and_gives_webservers_no_secret() -> None:
    compose = _yaml("docker-compose.yaml")
    services = compose["services"]
    for name, service in services.items():
        if "profiles" in service:
            continue  # started only on request (the proxy)
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert services["proxy"]["profiles"] == ["proxy"]
    assert services["webserver"]["ports"] == ["127.0.0.1:3000:3000"]
    assert services["webserver-readonly"]["ports"] == ["127.0.0.1:3001:3001"]
    instance_env = set(compose["x-instance-env"])
    assert instance_env == POSTGRES_VARIABLES | {
        "DAGSTER_HOME", "PGSSLMODE", "DAGSTER_DOCKER_NETWORK", "DAGSTER_CODE_SERVER_HOST", "DAGSTER_CODE_SERVER_PORT",
    }  # fmt: skip
    assert set(services["webserver"]["environment"]) == instance_env | {"DOCKER_HOST"}
    assert set(services["webserver-readonly"]["environment"]) == instance_env
    # No secret value anywhere in the compose file's environments: only the paths of the files.
    for name, service in services.items():
        environment = set(service.get("environment") or {})
        assert not environment & SECRET_NAMES, (name, environment & SECRET_NAMES)
    secrets_mount = "/etc/cron-pipelines/secrets:/run/secrets/cron-pipelines:ro"
    assert secrets_mount in services["code-server"]["volumes"]
    launcher = _yaml("deploy/dagster.docker.yaml")["run_launcher"]["config"]
    assert secrets_mount in launcher["container_kwargs"]["volumes"]
    assert not set(launcher["env_vars"]) & SECRET_NAMES


def test_compose_passes_on_every_variable_the_docs_document() -> None:
    compose = _yaml("docker-compose.yaml")
    shared = compose["x-dagster-env"]
    for name in ("code-server", "daemon"):
        assert shared.items() <= compose["services"][name]["environment"].items()
    readme = (PROJECT / "docs" / "production.md").read_text()
    containers = re.search(r"\*\*Containers\*\*(.*?)\n## ", readme, re.S)
    assert containers, "docs/production.md has no **Containers** section"
    documented = {
        name
        for span in re.findall(r"`([^`]+)`", containers.group(1))
        for name in re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", span)
    }
    assert {"DAGSTER_PG_HOST", "DAGSTER_HOME", "DAGSTER_DOCKER_NETWORK"} <= documented  # the section was read
    dagster_variables = {name for name in documented if not name.startswith("PROXY_")}  # the proxy's own
    assert dagster_variables <= set(shared), f"documented but not passed on: {dagster_variables - set(shared)}"
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
    # The outbox lives in one volume the code server and the run containers share.
    volume, _secrets = launcher["config"]["container_kwargs"]["volumes"]
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
        assert "SMTP_PASSWORD_FILE" in launcher.env_vars and "SMTP_PASSWORD" not in launcher.env_vars  # type: ignore[attr-defined]
        assert launcher.container_kwargs["volumes"][0] == "cron_pipelines_data:/opt/dagster/data"  # type: ignore[attr-defined]
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
    for program in ("code-server", "webserver", "webserver-readonly", "daemon", "celery-worker"):
        # The Celery worker's program is included by start.sh when DELIVERY_EXECUTOR=celery.
        conf = (PROJECT / "deploy/celery/supervisord.conf").read_text() if program == "celery-worker" else supervisor
        section = conf.split(f"[program:{program}]", 1)[1].split("\n[", 1)[0]
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
    assert commands["celery-worker"][:6] == [
        "%(ENV_CRON_PIPELINES_BIN)s/celery",
        "-A",
        "cron_pipelines.deployment.celery_app",
        "worker",
        "-Q",
        "dagster",
    ]
    # Everything but the code server starts with the instance's environment only (no secrets).
    wrapper = "%(ENV_CRON_PIPELINES_DEPLOY_DIR)s/instance-env.sh"
    assert commands["code-server"][0] != wrapper
    for program in ("webserver", "webserver-readonly", "daemon"):
        assert commands[program][0] == wrapper, program
    assert (
        commands["webserver"][2:4] == ["-w", "%(ENV_DAGSTER_WORKSPACE)s"] and "--read-only" not in commands["webserver"]
    )
    assert commands["webserver-readonly"][2:5] == ["--read-only", "-w", "%(ENV_DAGSTER_WORKSPACE)s"]
    assert commands["daemon"][2:5] == ["run", "-w", "%(ENV_DAGSTER_WORKSPACE)s"]
    assert "\numask=077\n" in supervisor and "\numask 077\n" in (PROJECT / "deploy/start.sh").read_text()
    env = (PROJECT / "deploy/env.sh").read_text()
    assert "$project/deploy/workspace.yaml" in env
    assert 'DAGSTER_WEBSERVER_HOST="${DAGSTER_WEBSERVER_HOST:-127.0.0.1}"' in env
    # Dagster's telemetry uploader empties $DAGSTER_HOME/logs: supervisord's logs live elsewhere.
    log_dir = re.search(r'CRON_PIPELINES_LOG_DIR="\$\{CRON_PIPELINES_LOG_DIR:-([^}]+)\}"', env)
    assert log_dir and log_dir.group(1) not in ("$DAGSTER_HOME/logs", "$DAGSTER_HOME/logs/")


def test_the_proxy_configuration_is_valid_for_caddy(tmp_path: Path) -> None:
    tls = self_signed_localhost(tmp_path)
    environment = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "PROXY_BIND": "0.0.0.0", "PROXY_HOST": "dagster.example.com",
        "PROXY_TLS_CERT": str(tls.certificate), "PROXY_TLS_KEY": str(tls.private_key),
        "PROXY_OPERATOR_PORT": "8443", "PROXY_AUDITOR_PORT": "8444",
        "PROXY_OPERATOR_USER": "operator", "PROXY_AUDITOR_USER": "auditor",
        # bcrypt hashes as `caddy hash-password` prints them
        "PROXY_OPERATOR_PASSWORD_HASH": "$2a$14$SNECEVdKZtlf62M8fzcv/usf5RymTEZgVE/6.704k.Fxp1c.Ugwx2",
        "PROXY_AUDITOR_PASSWORD_HASH": "$2a$14$SNECEVdKZtlf62M8fzcv/usf5RymTEZgVE/6.704k.Fxp1c.Ugwx2",
        "DAGSTER_WEBSERVER_UPSTREAM": "127.0.0.1:3000", "DAGSTER_READONLY_WEBSERVER_UPSTREAM": "127.0.0.1:3001",
    }  # fmt: skip
    caddy = shutil.which("caddy")
    assert caddy, "caddy is not installed: run scripts/ensure-caddy.sh (make test does)"
    config = str(PROJECT / "deploy/proxy/Caddyfile")
    validated = subprocess.run(
        [caddy, "validate", "--config", config, "--adapter", "caddyfile"],
        env=environment,
        capture_output=True,
        text=True,
    )
    assert validated.returncode == 0 and "Valid configuration" in validated.stdout + validated.stderr, validated.stderr
    # Every site asks for a password and speaks TLS only, to loopback upstreams on one machine.
    adapted = subprocess.run(
        [caddy, "adapt", "--config", config, "--adapter", "caddyfile"], env=environment, capture_output=True, text=True
    )
    servers = json.loads(adapted.stdout)["apps"]["http"]["servers"]
    assert len(servers) == 2
    for server in servers.values():
        (port,) = server["listen"]
        assert port in ("0.0.0.0:8443", "0.0.0.0:8444")
        assert "authentication" in json.dumps(server["routes"]) and "http_basic" in json.dumps(server["routes"])
    # supervisord runs it through the same environment filter as the webservers.
    program = (PROJECT / "deploy/proxy/supervisord.conf").read_text()
    assert "command=%(ENV_CRON_PIPELINES_DEPLOY_DIR)s/instance-env.sh %(ENV_CRON_PIPELINES_CADDY)s run" in program


def test_helm_values_secure_the_ui_and_keep_secrets_by_reference() -> None:
    values = _yaml("deploy/helm/values.yaml")
    assert values["dagsterWebserver"]["enableReadOnly"] is True
    assert values["dagsterWebserver"]["envSecrets"] == []  # the webservers get no code-location secret
    ingress = values["ingress"]
    assert ingress["enabled"] is True
    assert ingress["annotations"]["nginx.ingress.kubernetes.io/auth-url"] == "https://$host/oauth2/auth"
    proxies = set()
    for host in ("dagsterWebserver", "readOnlyDagsterWebserver"):
        assert ingress[host]["tls"]["enabled"] is True and ingress[host]["tls"]["secretName"]
        (oauth2,) = ingress[host]["precedingPaths"]
        assert oauth2["path"] == "/oauth2"
        proxies.add(oauth2["serviceName"])
    assert len(proxies) == 2  # one oauth2-proxy, hence one admitted group, per host
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    urls = {entry["name"]: entry["value"] for entry in deployment["env"] if entry["name"].endswith("_URL")}
    assert urls["SQL_SERVICE_URL"].startswith("https://") and urls["MONGO_SERVICE_URL"].startswith("https://")
    assert not {entry["name"] for entry in deployment["env"]} & SECRET_NAMES  # secrets only from the Secret
    assert deployment["envSecrets"] == [{"name": "cron-pipelines-secrets"}]
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"] == [{"name": "cron-pipelines-secrets"}]


def test_deploy_scripts_are_executable() -> None:
    for script in ("deploy/start.sh", "deploy/ctl.sh", "deploy/instance-env.sh", "deploy/container-entrypoint.sh"):
        assert (PROJECT / script).stat().st_mode & 0o111, script
    assert Path(PROJECT / "deploy/env.sh").exists()


def test_helm_values_fan_deliveries_out_over_step_pods_within_the_run_s_mail_connections() -> None:
    (deployment,) = _yaml("deploy/helm/values.yaml")["dagster-user-deployments"]["deployments"]
    environment = {entry["name"]: entry["value"] for entry in deployment["env"]}
    environment["INTERNAL_JWT_SECRET"] = TEST_JWT_SECRET
    settings = load_settings(environment)
    assert (settings.delivery_shards, settings.delivery_executor) == (4, "k8s")
    job = build_definitions(settings).resolve_job_def("send_payment_reminders")
    assert job.executor_def.name == "shard_pods"
    # dagster-k8s took the executor's config when the job was built; the step pods' resources
    # are a valid Kubernetes container, the same as a run pod's.
    step_config = UserDefinedDagsterK8sConfig.from_dict(K8S_STEP_POD)
    container = k8s_model_from_dict(kubernetes.client.V1Container, {"name": "step", **step_config.container_config})
    run_config = _yaml("deploy/helm/values.yaml")["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    assert container.resources.limits == run_config["containerConfig"]["resources"]["limits"]
