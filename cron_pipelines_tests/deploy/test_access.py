"""Who reaches what on one machine (README, "Production"): both webservers on loopback only, the
read-only one refusing every mutation, the TLS proxy asking each role for its own password, no
secret in any process but the code server, and nothing the deployment writes readable by others."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import pytest

from cron_pipelines_tests.deploy.conftest import PostgresHome
from cron_pipelines_tests.deploy.stack import Stack, running_stack
from cron_pipelines_tests.support.certificates import TlsFiles, self_signed_localhost
from cron_pipelines_tests.support.smtp_sink import SmtpSink, free_port
from cron_pipelines_tests.support.webserver import JOB_NAMES, LAUNCH_PARTITION, graphql, wait_until

JWT_SECRET = "access-test-key-Zq8Wm3Rt6Yp1Lx4Nc7Vb0"
OPERATOR = ("operator", "operator-password-1")
AUDITOR = ("auditor", "auditor-password-2")

BACKFILL = """mutation Backfill($partitionSet: String!, $partition: String!) {
  launchPartitionBackfill(backfillParams: {
    selector: {partitionSetName: $partitionSet,
               repositorySelector: {repositoryLocationName: "cron_pipelines", repositoryName: "__repository__"}},
    partitionNames: [$partition]
  }) { __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } }
}"""


def caddy() -> str:
    # make test installs it (scripts/ensure-caddy.sh); without it this test cannot say anything.
    path = shutil.which("caddy")
    assert path, "caddy is not installed: run scripts/ensure-caddy.sh (make test does)"
    return path


def password_hash(password: str) -> str:
    return subprocess.run(
        [caddy(), "hash-password", "--plaintext", password], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return self_signed_localhost(tmp_path)


@pytest.fixture
def stack(postgres_home: PostgresHome, smtp: SmtpSink, tls: TlsFiles) -> Iterator[Stack]:
    proxy = {
        "PROXY_TLS_CERT": str(tls.certificate),
        "PROXY_TLS_KEY": str(tls.private_key),
        "PROXY_BIND": "127.0.0.1",
        "PROXY_HOST": "localhost",
        "PROXY_OPERATOR_PORT": str(free_port()),
        "PROXY_AUDITOR_PORT": str(free_port()),
        "PROXY_OPERATOR_USER": OPERATOR[0],
        "PROXY_OPERATOR_PASSWORD_HASH": password_hash(OPERATOR[1]),
        "PROXY_AUDITOR_USER": AUDITOR[0],
        "PROXY_AUDITOR_PASSWORD_HASH": password_hash(AUDITOR[1]),
        "CRON_PIPELINES_CADDY": caddy(),
    }
    with running_stack(postgres_home, smtp, INTERNAL_JWT_SECRET=JWT_SECRET, **proxy) as running:
        yield running


def _listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on `port` (IPv4 and IPv6), from /proc/net."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                addresses.add(address)
    return addresses


def _environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode(errors="replace").split("=", 1) for entry in entries if b"=" in entry)


def test_the_ui_is_private_the_proxy_authenticates_and_auditors_cannot_act(stack: Stack, tls: TlsFiles) -> None:
    for url in (stack.url, stack.readonly_url):
        wait_until(lambda url=url: httpx.get(f"{url}/server_info", timeout=2).status_code == 200, 120, url)
    for url in (stack.url, stack.readonly_url):  # each webserver loads the code location on its own
        wait_until(lambda url=url: "send_payment_reminders" in str(graphql(url, JOB_NAMES)), 120, f"{url}'s location")

    # Loopback only: 127.0.0.1 in /proc/net/tcp's little-endian hex.
    for port in (stack.port, stack.readonly_port):
        assert _listening_addresses(port) == {"0100007F"}, port

    # The read-only webserver refuses launches and backfills on the server side; the full one accepts.
    today = datetime.now(UTC).date().isoformat()
    refused = graphql(stack.readonly_url, LAUNCH_PARTITION, job="maintenance", partition=today)["launchRun"]
    assert refused["__typename"] == "UnauthorizedError", refused
    for url, expected in ((stack.readonly_url, "UnauthorizedError"), (stack.url, "LaunchBackfillSuccess")):
        answer = graphql(url, BACKFILL, partitionSet="maintenance_partition_set", partition=today)
        assert answer["launchPartitionBackfill"]["__typename"] == expected, answer

    # The proxy: TLS only, one password per role, each role to its own webserver.
    verify = tls.client_context()
    operator_url = f"https://localhost:{stack.environment['PROXY_OPERATOR_PORT']}"
    auditor_url = f"https://localhost:{stack.environment['PROXY_AUDITOR_PORT']}"
    wait_until(lambda: httpx.get(f"{operator_url}/server_info", verify=verify).status_code == 401, 60, "the proxy")
    for url, wrong in ((operator_url, None), (operator_url, AUDITOR), (operator_url, ("operator", "guess")),
                       (auditor_url, None), (auditor_url, OPERATOR)):  # fmt: skip
        answer = httpx.post(f"{url}/graphql", json={"query": JOB_NAMES}, auth=wrong, verify=verify)
        assert answer.status_code == 401 and "send_payment_reminders" not in answer.text, (url, wrong)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://localhost:{stack.environment['PROXY_OPERATOR_PORT']}/server_info").raise_for_status()

    def through(url: str, role: tuple[str, str], query: str, **variables: str) -> dict:
        answer = httpx.post(
            f"{url}/graphql", json={"query": query, "variables": variables}, auth=role, verify=verify, timeout=30
        )
        answer.raise_for_status()
        return answer.json()["data"]

    assert "send_payment_reminders" in str(through(operator_url, OPERATOR, JOB_NAMES))
    launched = through(operator_url, OPERATOR, LAUNCH_PARTITION, job="maintenance", partition=today)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    audited = through(auditor_url, AUDITOR, LAUNCH_PARTITION, job="maintenance", partition=today)["launchRun"]
    assert audited["__typename"] == "UnauthorizedError", audited

    # Secrets only where used: the code server holds the service key, no other process does.
    pids = stack.pids(("code-server", "webserver", "webserver-readonly", "daemon", "proxy"))
    assert _environment(pids["code-server"]).get("INTERNAL_JWT_SECRET") == JWT_SECRET
    for program in ("webserver", "webserver-readonly", "daemon", "proxy"):
        environment = _environment(pids[program])
        assert "INTERNAL_JWT_SECRET" not in environment, program
        assert JWT_SECRET not in str(environment), program
        assert environment["DAGSTER_PG_DB"] == stack.environment["DAGSTER_PG_DB"], program  # what it does need

    # PII at rest: once the launched run is done, nothing the deployment wrote under DAGSTER_HOME
    # (run storage, compute logs, supervisord's logs) is readable by group or others.
    with dg.DagsterInstance.get() as instance:
        run_id = launched["run"]["runId"]
        run = wait_until(lambda: (r := instance.get_run_by_id(run_id)) and r.is_finished and r, 180, "the run")
        assert run.status == dg.DagsterRunStatus.SUCCESS
    home = Path(stack.environment["DAGSTER_HOME"])
    prepared_by_the_test = {home / "dagster.yaml"}
    written = [path for path in home.rglob("*") if path not in prepared_by_the_test]
    assert any(path.suffix in (".out", ".err") for path in written), "no compute log was written"
    readable = [f"{oct(path.stat().st_mode & 0o777)} {path}" for path in written if path.stat().st_mode & 0o077]
    assert not readable, readable
