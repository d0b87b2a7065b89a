"""ServiceServer and serve_demo_services: real sockets that open and close when told."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cron_pipelines.clients.tokens import TokenIssuer
from cron_pipelines_tests.support.keys import TEST_JWT_SECRET
from demo_services import DemoStore, ServiceServer, create_sql_app, seed_demo_data
from demo_services.auth import TokenVerifier


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _refuses_connections(url: str) -> bool:
    try:
        httpx.get(f"{url}/openapi.json", timeout=1)
    except httpx.ConnectError:
        return True
    return False


@pytest.fixture
def app(demo_store: DemoStore, token_issuer: TokenIssuer) -> FastAPI:
    return create_sql_app(demo_store, TokenVerifier.for_issuer(token_issuer, "sql-service"))


def test_port_zero_picks_a_free_port_known_once_started(app: FastAPI) -> None:
    server = ServiceServer(app)
    with pytest.raises(RuntimeError):
        server.url
    server.start()
    try:
        assert server.port != 0 and server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/openapi.json").status_code == 200
    finally:
        server.stop()
    assert _refuses_connections(f"http://127.0.0.1:{server.port}")


def test_a_given_port_is_used_and_freed(app: FastAPI) -> None:
    port = _free_port()
    with ServiceServer(app, port=port) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{server.url}/openapi.json").status_code == 200
    with ServiceServer(app, port=port) as again:  # the port is free to bind again
        assert again.port == port


def test_a_server_starts_once(app: FastAPI) -> None:
    with ServiceServer(app) as server, pytest.raises(RuntimeError):
        server.start()


def test_a_busy_port_fails_at_start(app: FastAPI) -> None:
    with ServiceServer(app) as server, pytest.raises(OSError):
        ServiceServer(app, port=server.port).start()


def test_serve_demo_services_serves_both_until_interrupted(tmp_path: Path, token_issuer: TokenIssuer) -> None:
    db_path = tmp_path / "demo.sqlite3"
    seed_demo_data(DemoStore(db_path), date.today(), users=0)
    sql_port, mongo_port = _free_port(), _free_port()
    script = (
        "from demo_services.auth import TokenVerifier\n"
        "from demo_services.server import serve_demo_services\n"
        f"serve_demo_services(db_path={str(db_path)!r}, sql_port={sql_port}, mongo_port={mongo_port},\n"
        f"    verifier_for=lambda service: TokenVerifier(audience=service, algorithm='HS256',\n"
        f"        verification_key={TEST_JWT_SECRET!r}))\n"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), *sys.path]))}
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=environment)
    try:
        sql_url, mongo_url = f"http://127.0.0.1:{sql_port}", f"http://127.0.0.1:{mongo_port}"
        deadline = time.monotonic() + 30
        while _refuses_connections(mongo_url) or _refuses_connections(sql_url):
            assert process.poll() is None and time.monotonic() < deadline, "the demo services did not start"
            time.sleep(0.1)
        dues = httpx.get(
            f"{sql_url}/v1/dues", headers={"Authorization": f"Bearer {token_issuer.token_for('sql-service')}"}
        )
        users = httpx.get(
            f"{mongo_url}/v1/users/inactive",
            params={"last_active_before": "2100-01-01T00:00:00Z"},
            headers={"Authorization": f"Bearer {token_issuer.token_for('mongo-service')}"},
        )
        assert dues.status_code == 200 and dues.json()["items"]
        assert users.status_code == 200 and users.json()["items"]
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert sql_url in stderr and mongo_url in stderr
    assert _refuses_connections(sql_url)
