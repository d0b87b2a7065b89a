"""The deployment on one machine, as an operator starts it: deploy/start.sh, supervisord, PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from cron_pipelines_tests.deploy.conftest import PROJECT, PostgresHome
from cron_pipelines_tests.support.smtp_sink import SmtpSink, free_port
from cron_pipelines_tests.support.webserver import graphql, wait_until

PROGRAMS = ("code-server", "webserver", "webserver-readonly", "daemon")


def alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


class Stack:
    """deploy/start.sh with free ports, its logs under DAGSTER_HOME, and a slow real SMTP server."""

    def __init__(self, home: PostgresHome, smtp: SmtpSink, **environment: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.readonly_port = free_port()
        self.readonly_url = f"http://127.0.0.1:{self.readonly_port}"
        self.log_dir = home.path / "supervisor" / "logs"  # deploy/env.sh's default, under DAGSTER_HOME
        self.environment = {
            **home.environment,
            "DAGSTER_CODE_SERVER_PORT": str(free_port()),
            "DAGSTER_WEBSERVER_PORT": str(self.port),
            "DAGSTER_READONLY_WEBSERVER_PORT": str(self.readonly_port),
            "CRON_PIPELINES_BIN": str(Path(sys.executable).parent),
            # supervisord's control socket: a short path, as a Unix socket needs.
            "CRON_PIPELINES_RUN_DIR": tempfile.mkdtemp(prefix="cron-pipelines-"),
            # A slow mail server (one session, latency per command) makes each run last
            # seconds, so two runs of one partition would overlap without the queue's limit.
            "MAILER_BACKEND": "smtp",
            "SMTP_HOST": smtp.host,
            "SMTP_PORT": str(smtp.port),
            "MAIL_MAX_CONNECTIONS": "1",
            **environment,
        }
        self.process = subprocess.Popen(
            [str(PROJECT / "deploy" / "start.sh")],
            env=self.environment,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def graphql(self, query: str, **variables: str) -> dict:
        return graphql(self.url, query, **variables)

    def supervisorctl(self, *args: str) -> str:
        """deploy/ctl.sh, as an operator runs it: only DAGSTER_HOME and the overridden settings set."""
        return subprocess.run(
            [str(PROJECT / "deploy" / "ctl.sh"), *args],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout

    def pids(self, programs: tuple[str, ...] = PROGRAMS) -> dict[str, int]:
        return {program: int(self.supervisorctl("pid", program).strip()) for program in programs}

    def stop(self) -> int:
        """SIGTERM to supervisord (what systemd or Ctrl-C does): it stops its programs, then exits."""
        os.kill(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=90)

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(self.log_dir.glob("*.log")))


@contextmanager
def running_stack(home: PostgresHome, smtp: SmtpSink, **environment: str) -> Iterator[Stack]:
    stack = Stack(home, smtp, **environment)
    try:
        yield stack
    except BaseException:
        print(stack.logs())  # shown by pytest on failure: every program's own log
        raise
    finally:
        if stack.process.poll() is None:
            try:
                stack.stop()
            except subprocess.TimeoutExpired:
                os.killpg(stack.process.pid, signal.SIGKILL)
        shutil.rmtree(stack.environment["CRON_PIPELINES_RUN_DIR"], ignore_errors=True)


class ServicesProcess:
    """The stand-in services in a process of their own, on fixed ports: a test can kill and restart them."""

    def __init__(self, database: Path, jwt_secret: str) -> None:
        self.database = database
        self.jwt_secret = jwt_secret
        self.sql_port, self.mongo_port = free_port(), free_port()
        self.sql_url = f"http://127.0.0.1:{self.sql_port}"
        self.mongo_url = f"http://127.0.0.1:{self.mongo_port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> ServicesProcess:
        environment = {**os.environ, "INTERNAL_JWT_SECRET": self.jwt_secret}
        for name in ("SQL_SERVICE_URL", "MONGO_SERVICE_URL"):
            environment.pop(name, None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cron_pipelines.cli",
                "demo-services",
                "--db",
                str(self.database),
                "--sql-port",
                str(self.sql_port),
                "--mongo-port",
                str(self.mongo_port),
            ],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for url in (self.sql_url, self.mongo_url):
            wait_until(lambda url=url: httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200, 60, url)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def environment(self) -> dict[str, str]:
        return {
            "SQL_SERVICE_URL": self.sql_url,
            "MONGO_SERVICE_URL": self.mongo_url,
            "INTERNAL_JWT_SECRET": self.jwt_secret,
        }

    def __enter__(self) -> ServicesProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
