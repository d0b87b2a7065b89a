"""The TLS proxy's rules (deploy/proxy/Caddyfile), against the real Caddy in front of the real
webservers, as deploy/start.sh runs them: only the UI's own pages act (no GraphQL over GET, no
cross-site or foreign-origin request) while the operator's own requests and the UI's websocket
pass; Caddy holds no secret, listens on TCP only, answers no other name and never says it is Caddy."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from cron_pipelines.settings import SECRET_VARIABLES
from cron_pipelines_tests.deploy.conftest import PROJECT, PostgresHome
from cron_pipelines_tests.deploy.stack import (
    AUDITOR,
    OPERATOR,
    Stack,
    caddy,
    listening_addresses,
    process_environment,
    proxy_settings,
    running_stack,
    sockets,
)
from cron_pipelines_tests.support.certificates import TlsFiles, self_signed_localhost
from cron_pipelines_tests.support.postgres import fresh_database
from cron_pipelines_tests.support.smtp_sink import SmtpSink
from cron_pipelines_tests.support.webserver import JOB_NAMES, LAUNCH_PARTITION, wait_until

JWT_SECRET = "proxy-test-key-Hv5Kq9Wd2Zr7Tm4Jb1Xc8"
SMTP_LOGIN = ("mailer", "proxy-test-smtp-password-Pw7Rk2")
# PostgreSQL on loopback trusts the test's connections and ignores this password; it is there
# so that the deployment's environment holds one the proxy must not get.
DATABASE_PASSWORD = "proxy-test-db-password-Nf6Ys3"

RUN_COUNT = "{ runsOrError { __typename ... on Runs { count } } }"
RUN_STATUS = "query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"
# What the UI's run page subscribes to; a run that does not exist still gets an answer.
RUN_LOGS = """subscription Logs($runId: ID!) {
  pipelineRunLogs(runId: $runId) { __typename ... on PipelineRunLogsSubscriptionFailure { missingRunId } }
}"""
# The headers a browser adds to the UI's own requests (fetch metadata), and to a link followed
# from another site's page, e.g. a run's link in an alert mail read in a web mail.
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
LINK_FROM_ANOTHER_SITE = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


@dataclass(frozen=True)
class Site:
    name: str
    port: int
    role: tuple[str, str]

    @property
    def origin(self) -> str:
        """scheme://host:port, as a browser names the page it shows from this site."""
        return f"https://localhost:{self.port}"


@dataclass(frozen=True)
class Proxy:
    stack: Stack
    tls: TlsFiles
    operator: Site
    auditor: Site

    @property
    def sites(self) -> tuple[Site, Site]:
        return self.operator, self.auditor

    def request(self, site: Site, method: str, path: str, **arguments: object) -> httpx.Response:
        arguments.setdefault("auth", site.role)
        return httpx.request(method, f"{site.origin}{path}", verify=self.tls.client_context(), timeout=30, **arguments)

    def post(self, site: Site, query: str, headers: dict[str, str] | None = None, **variables: str) -> httpx.Response:
        return self.request(site, "POST", "/graphql", json={"query": query, "variables": variables}, headers=headers)

    def data(self, site: Site, query: str, headers: dict[str, str] | None = None, **variables: str) -> dict:
        answer = self.post(site, query, headers, **variables)
        assert answer.status_code == 200, (answer.status_code, answer.text)
        return answer.json()["data"]

    def run_count(self) -> int:
        return self.data(self.operator, RUN_COUNT)["runsOrError"]["count"]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """One deployment for the module (deploy/start.sh with the proxy), as conftest's postgres_home makes one."""
    directory = tmp_path_factory.mktemp("proxy")
    home = directory / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    tls = self_signed_localhost(directory)
    with fresh_database() as database, SmtpSink(credentials=SMTP_LOGIN) as smtp:
        database["DAGSTER_PG_PASSWORD"] = database["DAGSTER_PG_PASSWORD"] or DATABASE_PASSWORD
        environment = {**os.environ, **database, "DAGSTER_HOME": str(home)}
        for name in ("SQL_SERVICE_URL", "MONGO_SERVICE_URL", "MAILER_BACKEND"):
            environment.pop(name, None)
        secrets = {
            "INTERNAL_JWT_SECRET": JWT_SECRET,
            "SMTP_USERNAME": SMTP_LOGIN[0],
            "SMTP_PASSWORD": SMTP_LOGIN[1],
            "SMTP_ALLOW_PLAINTEXT_AUTH": "true",  # a sink on loopback
        }
        settings = proxy_settings(tls)
        with running_stack(PostgresHome(home, environment), smtp, **secrets, **settings) as stack:
            running = Proxy(
                stack,
                tls,
                Site("operator", int(settings["PROXY_OPERATOR_PORT"]), OPERATOR),
                Site("auditor", int(settings["PROXY_AUDITOR_PORT"]), AUDITOR),
            )
            for site in running.sites:  # each webserver loads the code location on its own
                wait_until(lambda site=site: "send_payment_reminders" in running.post(site, JOB_NAMES).text, 180, site)
            yield running


def _wait_for_success(proxy: Proxy, run_id: str) -> None:
    def finished() -> str | None:
        status = proxy.data(proxy.operator, RUN_STATUS, SAME_ORIGIN, runId=run_id)["runOrError"]["status"]
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

    assert wait_until(finished, 180, f"run {run_id}") == "SUCCESS"


def _refused(answer: httpx.Response, reason: str) -> bool:
    return answer.status_code == 403 and answer.text.startswith(f"Refused: {reason}") and "server" not in answer.headers


def test_graphql_over_get_is_refused_on_both_sites(proxy: Proxy) -> None:
    today = datetime.now(UTC).date().isoformat()
    launch = {"query": LAUNCH_PARTITION, "variables": json.dumps({"job": "maintenance", "partition": today})}
    # The webserver itself runs a mutation sent as GET: only the proxy stands in the way.
    direct = httpx.get(f"{proxy.stack.url}/graphql", params=launch, timeout=30).json()["data"]["launchRun"]
    assert direct["__typename"] == "LaunchRunSuccess", direct
    _wait_for_success(proxy, direct["run"]["runId"])
    before = proxy.run_count()

    for site in proxy.sites:
        # The tester's request: a link, an <img> or a script on any page could send it.
        for headers in ({}, {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, SAME_ORIGIN):
            answer = proxy.request(site, "GET", "/graphql", params=launch, headers=headers)
            assert answer.status_code == 403 and "server" not in answer.headers, (site, headers, answer.text)
        assert _refused(proxy.request(site, "GET", "/graphql", params=launch), "GraphQL over GET")
        assert proxy.request(site, "HEAD", "/graphql", params=launch).status_code == 403
        # Queries too (the UI never sends GraphQL as GET), and GraphiQL's page, which is a GET.
        answer = proxy.request(site, "GET", "/graphql", params={"query": JOB_NAMES})
        assert _refused(answer, "GraphQL over GET") and "send_payment_reminders" not in answer.text
        assert _refused(proxy.request(site, "GET", "/graphql", headers={"Accept": "text/html"}), "GraphQL over GET")
        # A websocket's opening GET passes only as a websocket: Upgrade alone is not enough.
        answer = proxy.request(site, "GET", "/graphql", params=launch, headers={"Upgrade": "websocket"})
        assert _refused(answer, "GraphQL over GET"), answer.text
    assert proxy.run_count() == before


def test_cross_site_and_foreign_origin_requests_are_refused_on_both_sites(proxy: Proxy) -> None:
    today = datetime.now(UTC).date().isoformat()
    before = proxy.run_count()
    for site, other in ((proxy.operator, proxy.auditor), (proxy.auditor, proxy.operator)):
        forged = [
            ({"Sec-Fetch-Site": "cross-site"}, "a request from another site"),
            ({**SAME_ORIGIN, "Sec-Fetch-Site": "cross-site"}, "a request from another site"),
            # A form on another site's page, posted: a navigation, but not a GET.
            (LINK_FROM_ANOTHER_SITE, "a request from another site"),
            ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, "a request from another"),
            ({"Origin": "https://evil.example"}, "a request from another origin"),
            ({"Origin": "null"}, "a request from another origin"),  # a sandboxed frame, a data: URL
            ({"Origin": ""}, "a request from another origin"),
            ({"Origin": f"http://localhost:{site.port}"}, "a request from another origin"),  # not TLS
            ({"Origin": "https://localhost"}, "a request from another origin"),  # not this port
            # The other role's site is another origin: the auditors' pages cannot act on the operators'.
            ({"Origin": other.origin, "Sec-Fetch-Site": "same-site"}, "a request from another origin"),
        ]
        for headers, reason in forged:
            answer = proxy.post(site, LAUNCH_PARTITION, headers, job="maintenance", partition=today)
            assert _refused(answer, reason), (site, headers, answer.status_code, answer.text)
            answer = proxy.post(site, JOB_NAMES, headers)
            assert _refused(answer, reason) and "send_payment_reminders" not in answer.text, (site, headers)
        # Refused before the password is asked for: a forged request never gets a password prompt.
        answer = proxy.request(
            site, "POST", "/graphql", json={"query": JOB_NAMES}, headers={"Origin": "https://evil.example"}, auth=None
        )
        assert _refused(answer, "a request from another origin")
        # Another site's page may link to a page of the UI (it only shows it), not load one itself.
        page = proxy.request(site, "GET", "/runs", headers=LINK_FROM_ANOTHER_SITE)
        assert page.status_code == 200 and "<html" in page.text.lower() and "server" not in page.headers
        embedded = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
        assert _refused(proxy.request(site, "GET", "/runs", headers=embedded), "a request from another site")
    assert proxy.run_count() == before


def test_the_operator_s_own_requests_still_work(proxy: Proxy) -> None:
    # As curl or a script sends them (no Origin, no fetch metadata) and as the UI's pages do.
    for site in proxy.sites:
        for headers in ({}, SAME_ORIGIN, {**SAME_ORIGIN, "Origin": site.origin}, {"Origin": site.origin}):
            assert "send_payment_reminders" in str(proxy.data(site, JOB_NAMES, headers)), (site, headers)
        for headers in ({}, {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}):
            page = proxy.request(site, "GET", "/", headers=headers)
            assert page.status_code == 200 and "<html" in page.text.lower(), (site, headers)
    # A launch as the UI's Launch button sends it: a same-origin POST with the page's Origin.
    today = datetime.now(UTC).date().isoformat()
    ui = {**SAME_ORIGIN, "Origin": proxy.operator.origin}
    launched = proxy.data(proxy.operator, LAUNCH_PARTITION, ui, job="maintenance", partition=today)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    _wait_for_success(proxy, launched["run"]["runId"])
    # The auditors' same-origin POST reaches the read-only webserver, which refuses to act.
    ui = {**SAME_ORIGIN, "Origin": proxy.auditor.origin}
    audited = proxy.data(proxy.auditor, LAUNCH_PARTITION, ui, job="maintenance", partition=today)["launchRun"]
    assert audited["__typename"] == "UnauthorizedError", audited


def _status_and_headers(answer: bytes) -> tuple[int, dict[str, str]]:
    """The status and the headers (names in lower case) of a raw HTTP/1.1 answer."""
    status_line, *lines = answer.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers


class WebSocket:
    """The client side of RFC 6455, enough for the UI's GraphQL subscriptions (graphql-ws)."""

    def __init__(self, connection: ssl.SSLSocket, received: bytes) -> None:
        self.connection = connection
        self.buffer = received

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.connection.recv(65536)
            assert chunk, "the websocket was closed"
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, message: dict) -> None:
        payload = json.dumps(message).encode()
        size = len(payload)
        length = bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big")
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.connection.sendall(bytes([0x81]) + length + mask + masked)  # one final text frame, masked

    def receive(self) -> dict:
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size == 126:
                size = int.from_bytes(self._read(2), "big")
            elif size == 127:
                size = int.from_bytes(self._read(8), "big")
            payload = self._read(size)
            opcode = first & 0x0F
            assert opcode != 0x8, f"the websocket was closed: {payload!r}"
            if opcode == 0x1:
                message = json.loads(payload)
                if message.get("type") != "ka":  # keep-alive
                    return message


def _open_websocket(proxy: Proxy, site: Site, headers: dict[str, str]) -> tuple[int, dict[str, str], WebSocket]:
    """The opening handshake to /graphql over TLS (HTTP/1.1, as browsers open a websocket)."""
    raw = socket.create_connection(("127.0.0.1", site.port), timeout=30)
    connection = proxy.tls.client_context().wrap_socket(raw, server_hostname="localhost")
    credentials = base64.b64encode(":".join(site.role).encode()).decode()
    lines = {
        "Host": f"localhost:{site.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "graphql-ws",
        "Authorization": f"Basic {credentials}",
        **headers,
    }
    request = "GET /graphql HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in lines.items()) + "\r\n"
    connection.sendall(request.encode())
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"closed during the handshake: {received!r}"
        received += chunk
    status, answer_headers = _status_and_headers(received)
    return status, answer_headers, WebSocket(connection, received.split(b"\r\n\r\n", 1)[1])


def test_the_ui_s_websocket_passes_and_another_origin_s_does_not(proxy: Proxy) -> None:
    for site in proxy.sites:
        # What the UI's page opens: same origin, its Origin, fetch metadata of a websocket.
        ui = {"Origin": site.origin, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "websocket"}
        status, headers, websocket = _open_websocket(proxy, site, ui)
        try:
            # The one answer that still names its servers: Caddy writes a 101 straight onto the
            # connection it hands over, past its header rules (and past header_down), as of 2.6-2.11.
            assert status == 101 and headers["sec-websocket-protocol"] == "graphql-ws", (site, status, headers)
            websocket.send({"type": "connection_init", "payload": {}})
            assert websocket.receive()["type"] == "connection_ack"
            start = {"query": RUN_LOGS, "variables": {"runId": "no-such-run"}}
            websocket.send({"id": "1", "type": "start", "payload": start})
            message = websocket.receive()
            assert message["type"] == "data" and message["id"] == "1", message
            logs = message["payload"]["data"]["pipelineRunLogs"]
            assert logs == {"__typename": "PipelineRunLogsSubscriptionFailure", "missingRunId": "no-such-run"}
        finally:
            websocket.connection.close()
        # Another site's page opening the same websocket (cross-site websocket hijacking).
        for forged in ({"Origin": "https://evil.example"}, {"Origin": site.origin, "Sec-Fetch-Site": "cross-site"}):
            status, headers, websocket = _open_websocket(proxy, site, forged)
            websocket.connection.close()
            assert status == 403 and "server" not in headers, (site, forged, status, headers)


def test_caddy_holds_only_what_the_caddyfile_reads(proxy: Proxy) -> None:
    pids = proxy.stack.pids(("code-server", "webserver", "proxy"))
    caddy_pid = pids["proxy"]
    assert os.path.realpath(f"/proc/{caddy_pid}/exe") == os.path.realpath(caddy())  # Caddy itself, exec'd
    environment = process_environment(caddy_pid)
    what_caddy_needs = {"PATH", "HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"}
    upstreams = {"DAGSTER_WEBSERVER_UPSTREAM", "DAGSTER_READONLY_WEBSERVER_UPSTREAM"}
    unexpected = {name for name in environment if name not in what_caddy_needs | upstreams} - {
        name for name in environment if name.startswith("PROXY_")
    }
    assert not unexpected, unexpected
    assert environment["DAGSTER_WEBSERVER_UPSTREAM"] == f"127.0.0.1:{proxy.stack.port}"
    assert environment["PROXY_OPERATOR_PORT"] == str(proxy.operator.port)
    # The deployment does hold these secrets (the code server and the webserver use them), Caddy none.
    database_password = process_environment(pids["webserver"])["DAGSTER_PG_PASSWORD"]
    code_server = process_environment(pids["code-server"])
    assert database_password and code_server["DAGSTER_PG_PASSWORD"] == database_password
    assert (code_server["INTERNAL_JWT_SECRET"], code_server["SMTP_PASSWORD"]) == (JWT_SECRET, SMTP_LOGIN[1])
    secrets = {"DAGSTER_PG_PASSWORD", "PGPASSWORD", *SECRET_VARIABLES}
    assert not secrets & set(environment), secrets & set(environment)
    values = "\n".join(environment.values())
    for secret in (database_password, JWT_SECRET, SMTP_LOGIN[1]):
        assert secret not in values


def test_no_http3_caddy_listens_on_tcp_only(proxy: Proxy) -> None:
    for site in proxy.sites:
        assert listening_addresses(site.port) == {"0100007F"}, site  # TCP, PROXY_BIND=127.0.0.1
        assert sockets(site.port, "udp") == set(), site  # no QUIC listener, IPv4 or IPv6
        answer = proxy.post(site, JOB_NAMES)
        assert answer.status_code == 200 and "alt-svc" not in answer.headers  # HTTP/3 is never offered


def _tls_exchange(port: int, server_name: str | None, host: str, tls: TlsFiles) -> bytes:
    """One HTTP/1.1 request with the given SNI (None: none) and Host header; the raw answer.

    The certificate is checked against the test's CA but not against the name: a handshake that
    fails is the proxy's refusal, not the client's."""
    context = tls.client_context()
    context.check_hostname = False
    credentials = base64.b64encode(":".join(OPERATOR).encode()).decode()
    request = f"GET /server_info HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {credentials}\r\n"
    request += "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as connection:
            connection.sendall(request.encode())
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
    return answer


def test_other_names_are_refused(proxy: Proxy) -> None:
    for site in proxy.sites:
        # The right name in the handshake, another in the Host header: 421, and no webserver behind.
        for host in ("evil.example", f"evil.example:{site.port}", "127.0.0.1", f"localhost.evil.example:{site.port}"):
            answer = _tls_exchange(site.port, "localhost", host, proxy.tls)
            status, headers = _status_and_headers(answer)
            assert status == 421 and "server" not in headers, (site, host, answer)
            assert b"dagster" not in answer.lower()
            answer = proxy.request(site, "POST", "/graphql", json={"query": JOB_NAMES}, headers={"Host": host})
            assert answer.status_code == 421 and "send_payment_reminders" not in answer.text
        # Another name in the handshake (SNI): no certificate, the handshake fails.
        for server_name in ("evil.example", "localhost.evil.example", "dagster.example.com"):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                _tls_exchange(site.port, server_name, server_name, proxy.tls)
        # No name at all (a client dialling the address): this certificate is also for 127.0.0.1, so
        # the handshake may succeed, but the request is still for a name this proxy does not serve.
        try:
            answer = _tls_exchange(site.port, None, f"127.0.0.1:{site.port}", proxy.tls)
        except (ssl.SSLError, ConnectionError):
            continue
        status, headers = _status_and_headers(answer)
        assert status == 421 and "server" not in headers and b"dagster" not in answer.lower(), answer


def test_no_answer_names_the_server(proxy: Proxy) -> None:
    # The webserver says what it is; through the proxy, nothing does: a page, a refusal, a wrong password.
    assert "server" in httpx.get(f"{proxy.stack.url}/server_info", timeout=30).headers
    for site in proxy.sites:
        answers = {
            "page": proxy.request(site, "GET", "/server_info"),
            "graphql": proxy.post(site, JOB_NAMES),
            "no password": proxy.request(site, "GET", "/server_info", auth=None),
            "wrong password": proxy.request(site, "GET", "/server_info", auth=(site.role[0], "guess")),
            "refused": proxy.request(site, "GET", "/graphql"),
            "misdirected": proxy.request(site, "GET", "/server_info", headers={"Host": "evil.example"}),
        }
        statuses = {name: answer.status_code for name, answer in answers.items()}
        assert statuses == {
            "page": 200,
            "graphql": 200,
            "no password": 401,
            "wrong password": 401,
            "refused": 403,
            "misdirected": 421,
        }, statuses
        for name, answer in answers.items():
            assert "server" not in answer.headers, (site, name, answer.headers)
        assert answers["no password"].headers["www-authenticate"].startswith("Basic")
    # And a webserver that is down: 502 from Caddy, still nameless.
    proxy.stack.supervisorctl("stop", "webserver-readonly")
    try:
        answer = proxy.request(proxy.auditor, "GET", "/server_info")
        assert answer.status_code == 502 and "server" not in answer.headers, (answer.status_code, answer.headers)
        assert answer.text.strip() == "502 Bad Gateway"
    finally:
        proxy.stack.supervisorctl("start", "webserver-readonly")
        wait_until(lambda: "send_payment_reminders" in proxy.post(proxy.auditor, JOB_NAMES).text, 180, "the auditors")
