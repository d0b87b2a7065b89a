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
from cron_pipelines_tests.support.certificates import TlsFiles
from cron_pipelines_tests.support.smtp_sink import SmtpSink, free_port
from cron_pipelines_tests.support.webserver import graphql, wait_until

PROGRAMS = ("code-server", "webserver", "webserver-readonly", "daemon")
# The proxy's two roles (deploy/proxy/Caddyfile): user name and password.
OPERATOR = ("operator", "operator-password-1")
AUDITOR = ("auditor", "auditor-password-2")


def alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def caddy() -> str:
    # make test installs it (scripts/ensure-caddy.sh); without it a proxy test cannot say anything.
    path = shutil.which("caddy")
    assert path, "caddy is not installed: run scripts/ensure-caddy.sh (make test does)"
    return path


def password_hash(password: str) -> str:
    return subprocess.run(
        [caddy(), "hash-password", "--plaintext", password], capture_output=True, text=True, check=True
    ).stdout.strip()


def proxy_settings(tls: TlsFiles) -> dict[str, str]:
    """The PROXY_* variables that make deploy/start.sh run the TLS proxy on loopback, on free ports."""
    return {
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


def sockets(port: int, protocol: str = "tcp") -> set[tuple[str, str]]:
    """(local address, state) of each socket bound to `port`, IPv4 and IPv6, from /proc/net/<protocol>(6).

    Addresses are /proc's little-endian hex (127.0.0.1 is 0100007F); TCP's state 0A is LISTEN."""
    found = set()
    for table in (f"/proc/net/{protocol}", f"/proc/net/{protocol}6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if int(port_hex, 16) == port:
                found.add((address, state))
    return found


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on `port` (IPv4 and IPv6)."""
    return {address for address, state in sockets(port) if state == "0A"}


def process_environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode(errors="replace").split("=", 1) for entry in entries if b"=" in entry)


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
