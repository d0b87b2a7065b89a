"""The README's first command, `make dev`, on a fresh DAGSTER_HOME: the UI comes up with every job,
schedule and sensor running on the embedded demo services, and a run launched through the UI's
GraphQL API (what the Launch button sends) delivers its emails to the outbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path

import dagster as dg
import httpx
import pytest

from cron_pipelines.defs import build_definitions
from cron_pipelines.settings import load_settings
from cron_pipelines_tests.support.smtp_sink import free_port
from cron_pipelines_tests.support.webserver import LAUNCH_PARTITION, graphql, wait_until

PROJECT = Path(__file__).resolve().parents[1]
REPOSITORY = '{repositoryName: "__repository__", repositoryLocationName: "cron_pipelines"}'
STATES = f"""{{
  schedulesOrError(repositorySelector: {REPOSITORY}) {{ ... on Schedules {{ results {{ name scheduleState {{ status }} }} }} }}
  sensorsOrError(repositorySelector: {REPOSITORY}) {{ ... on Sensors {{ results {{ name sensorState {{ status }} }} }} }}
  repositoriesOrError {{ ... on RepositoryConnection {{ nodes {{ jobs {{ name }} }} }} }}
}}"""
RUN_STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


class DevServer:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.url = f"http://127.0.0.1:{free_port()}"
        environment = {
            name: value
            for name, value in os.environ.items()
            # The embedded defaults: no service URL, the outbox, everything under DAGSTER_HOME.
            if name
            not in {"SQL_SERVICE_URL", "MONGO_SERVICE_URL", "MAILER_BACKEND", "MAIL_OUTBOX_DIR", "DEMO_SERVICES_DB"}
        }
        environment["DAGSTER_HOME"] = str(home)
        self.log = home.parent / "make-dev.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", "dev", f"VENV={sys.prefix}", f"DEV_PORT={self.url.rsplit(':', 1)[1]}"],
                cwd=PROJECT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def graphql(self, query: str, **variables: object) -> dict:
        return graphql(self.url, query, **variables)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)  # what Ctrl-C in the terminal does, to the whole group
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[DevServer]:
    server = DevServer(tmp_path / "dagster_home")
    try:
        yield server
    finally:
        server.stop()


def test_make_dev_serves_every_definition_running_and_delivers_to_the_outbox(dev_server: DevServer) -> None:
    try:
        _exercise(dev_server)
    except BaseException:
        print(dev_server.log.read_text(errors="replace")[-5000:])  # shown by pytest on failure
        raise


def _exercise(dev_server: DevServer) -> None:
    wait_until(lambda: httpx.get(f"{dev_server.url}/server_info", timeout=2).status_code == 200, 180, "the UI")
    states = wait_until(
        lambda: dev_server.graphql(STATES)["schedulesOrError"]["results"] and dev_server.graphql(STATES),
        120,
        "the code location",
    )
    assert (dev_server.home / "dagster.yaml").read_text() == (PROJECT / "deploy" / "dagster.dev.yaml").read_text()

    defs = build_definitions(load_settings({"DAGSTER_HOME": str(dev_server.home)}))
    (repository,) = states["repositoriesOrError"]["nodes"]
    served_jobs = {job["name"] for job in repository["jobs"]}
    assert {job.name for job in defs.jobs} <= served_jobs  # type: ignore[union-attr]
    schedules = {
        schedule["name"]: schedule["scheduleState"]["status"] for schedule in states["schedulesOrError"]["results"]
    }
    sensors = {sensor["name"]: sensor["sensorState"]["status"] for sensor in states["sensorsOrError"]["results"]}
    assert schedules == {schedule.name: "RUNNING" for schedule in defs.schedules}  # type: ignore[union-attr]
    assert sensors == {sensor.name: "RUNNING" for sensor in defs.sensors}  # type: ignore[union-attr]

    today = datetime.now(UTC).date().isoformat()  # CRON_TIMEZONE defaults to UTC
    launched = dev_server.graphql(LAUNCH_PARTITION, job="send_payment_reminders", partition=today)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    wait_until(
        lambda: dev_server.graphql(RUN_STATUS, id=run_id)["runOrError"]["status"] in {"SUCCESS", "FAILURE", "CANCELED"},
        180,
        "the run to end",
    )
    assert dev_server.graphql(RUN_STATUS, id=run_id)["runOrError"]["status"] == "SUCCESS"

    # The run's summary and the outbox agree: every reminder it sent is one .eml file.
    with dg.DagsterInstance.from_config(str(dev_server.home)) as instance:
        (record,) = instance.fetch_materializations(dg.AssetKey("payment_reminders"), limit=10).records
        assert record.run_id == run_id
        sent = record.asset_materialization.metadata["sent"].value  # type: ignore[union-attr]
    reminders = [
        message
        for message in (message_from_bytes(path.read_bytes()) for path in (dev_server.home / "outbox").glob("*.eml"))
        if message["X-Notification-Kind"] == "payment_reminder"
    ]
    assert sent > 0  # the demo data has dues 7, 3, 1 and 0 days ahead
    # `sent` counts keys: a digest is one file carrying one X-Notification-Id per key.
    keys = [key for message in reminders for key in message.get_all("X-Notification-Id")]
    assert len(keys) == len(set(keys)) == sent
    assert len(reminders) < sent  # the demo's digest readers got one email for several dues
    # `dg dev`, quietly: no "use dg dev", no complaint about a dagster.yaml in the working folder
    # or about the virtual environment.
    log = dev_server.log.read_text(errors="replace").split("dg dev -p", 1)[1]
    assert "superseded" not in log and "dagster.yaml" not in log and "does not match" not in log
