"""Who reaches what on one machine (docs/production.md): both webservers on loopback only, the
read-only one refusing every mutation, the TLS proxy asking each role for its own password, no
secret in any process but the code server, and nothing the deployment writes readable by others."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import pytest

from cron_pipelines_tests.deploy.conftest import PostgresHome
from cron_pipelines_tests.deploy.stack import (
    AUDITOR,
    OPERATOR,
    Stack,
    listening_addresses,
    process_environment,
    proxy_settings,
    running_stack,
)
from cron_pipelines_tests.support.certificates import TlsFiles, self_signed_localhost
from cron_pipelines_tests.support.smtp_sink import SmtpSink
from cron_pipelines_tests.support.webserver import JOB_NAMES, LAUNCH_PARTITION, graphql, wait_until

JWT_SECRET = "access-test-key-Zq8Wm3Rt6Yp1Lx4Nc7Vb0"

BACKFILL = """mutation Backfill($partitionSet: String!, $partition: String!) {
  launchPartitionBackfill(backfillParams: {
    selector: {partitionSetName: $partitionSet,
               repositorySelector: {repositoryLocationName: "cron_pipelines", repositoryName: "__repository__"}},
    partitionNames: [$partition]
  }) { __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } }
}"""


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return self_signed_localhost(tmp_path)


@pytest.fixture
def stack(postgres_home: PostgresHome, smtp: SmtpSink, tls: TlsFiles) -> Iterator[Stack]:
    # A DAGSTER_HOME left open by an earlier install: deploy/start.sh closes it before starting.
    home = postgres_home.path
    (home / "history").mkdir()
    (home / "history" / "old-run.log").write_text("names and addresses")
    (home / "history").chmod(0o755)
    (home / "history" / "old-run.log").chmod(0o644)
    (home / "dagster.yaml").chmod(0o644)
    home.chmod(0o755)
    # A symbolic link out of DAGSTER_HOME: what it points to is not the deployment's to change.
    (home.parent / "shared.txt").write_text("not the deployment's")
    (home.parent / "shared.txt").chmod(0o644)
    (home / "shared-link").symlink_to(home.parent / "shared.txt")
    with running_stack(postgres_home, smtp, INTERNAL_JWT_SECRET=JWT_SECRET, **proxy_settings(tls)) as running:
        yield running


def test_the_ui_is_private_the_proxy_authenticates_and_auditors_cannot_act(stack: Stack, tls: TlsFiles) -> None:
    for url in (stack.url, stack.readonly_url):
        wait_until(lambda url=url: httpx.get(f"{url}/server_info", timeout=2).status_code == 200, 120, url)
    for url in (stack.url, stack.readonly_url):  # each webserver loads the code location on its own
        wait_until(lambda url=url: "send_payment_reminders" in str(graphql(url, JOB_NAMES)), 120, f"{url}'s location")

    # Loopback only: 127.0.0.1 in /proc/net/tcp's little-endian hex.
    for port in (stack.port, stack.readonly_port):
        assert listening_addresses(port) == {"0100007F"}, port

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
    assert process_environment(pids["code-server"]).get("INTERNAL_JWT_SECRET") == JWT_SECRET
    for program in ("webserver", "webserver-readonly", "daemon", "proxy"):
        environment = process_environment(pids[program])
        assert "INTERNAL_JWT_SECRET" not in environment, program
        assert JWT_SECRET not in str(environment), program
        if program == "proxy":  # not even the database's: test_proxy checks its whole environment
            assert not [name for name in environment if name.startswith(("DAGSTER_PG_", "PG"))], environment
        else:
            assert environment["DAGSTER_PG_DB"] == stack.environment["DAGSTER_PG_DB"], program  # what it does need

    # PII at rest: once the launched run is done, nothing the deployment wrote under DAGSTER_HOME
    # (run storage, compute logs, supervisord's logs) is readable by group or others.
    with dg.DagsterInstance.get() as instance:
        run_id = launched["run"]["runId"]
        run = wait_until(lambda: (r := instance.get_run_by_id(run_id)) and r.is_finished and r, 180, "the run")
        assert run.status == dg.DagsterRunStatus.SUCCESS
    # What was there before, left open by the fixture, is closed too (deploy/start.sh), and the
    # home itself is 0700; the file behind the symbolic link, outside DAGSTER_HOME, is untouched.
    home = Path(stack.environment["DAGSTER_HOME"])
    assert home.stat().st_mode & 0o777 == 0o700
    written = [path for path in home.rglob("*") if not path.is_symlink()]
    assert {home / "dagster.yaml", home / "history" / "old-run.log"} <= set(written)
    assert any(path.suffix in (".out", ".err") for path in written), "no compute log was written"
    readable = [f"{oct(path.stat().st_mode & 0o777)} {path}" for path in written if path.stat().st_mode & 0o077]
    assert not readable, readable
    assert (home.parent / "shared.txt").stat().st_mode & 0o777 == 0o644
