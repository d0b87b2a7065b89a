"""Both stand-ins running on loopback, as one value: for tests, the benchmark and the embedded demo."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from cron_pipelines.clients.tokens import TokenIssuer
from cron_pipelines.delivery.channels.email.unsubscribe import UnsubscribeTokens
from demo_services.auth import TokenVerifier
from demo_services.faults import FaultInjector, RequestLog
from demo_services.mongo_app import SERVICE as MONGO_SERVICE
from demo_services.mongo_app import create_mongo_app
from demo_services.server import ServiceServer, serving
from demo_services.sql_app import SERVICE as SQL_SERVICE
from demo_services.sql_app import create_sql_app
from demo_services.store import DemoStore

# The key the stand-ins' /unsubscribe endpoint verifies with; runs that should link to it set
# UNSUBSCRIBE_SIGNING_KEY to this and UNSUBSCRIBE_BASE_URL to `unsubscribe_url`.
UNSUBSCRIBE_TEST_KEY = "unsubscribe-test-key-Hq7Lm2Xv9Rt4Bz6"


@dataclass
class ServiceWorld:
    """The running stand-ins, their shared store, their fault injectors and request logs."""

    store: DemoStore
    sql_url: str
    mongo_url: str
    sql_faults: FaultInjector
    mongo_faults: FaultInjector
    sql_requests: RequestLog
    mongo_requests: RequestLog
    issuer: TokenIssuer
    unsubscribe_url: str  # the one-click endpoint, accepting tokens signed with UNSUBSCRIBE_TEST_KEY
    mongo_app: FastAPI

    def speak_contract(self, version: str) -> None:
        """Make mongo-service answer as a service of that contract version would ("1.1": no §9)."""
        self.mongo_app.state.contract_version = version

    def auth_headers(self, service: str) -> dict[str, str]:
        """Headers carrying a valid token for `service` ("sql-service" or "mongo-service")."""
        return {"Authorization": f"Bearer {self.issuer.token_for(service)}"}


@contextmanager
def start_service_world(store: DemoStore, issuer: TokenIssuer, *, host: str = "127.0.0.1") -> Iterator[ServiceWorld]:
    """Serve both stand-ins on free loopback ports, accepting tokens from `issuer`; stop them on exit."""
    sql_faults, mongo_faults = FaultInjector(), FaultInjector()
    sql_requests, mongo_requests = RequestLog(), RequestLog()
    sql_app = create_sql_app(
        store, TokenVerifier.for_issuer(issuer, SQL_SERVICE), faults=sql_faults, request_log=sql_requests
    )
    mongo_app = create_mongo_app(
        store,
        TokenVerifier.for_issuer(issuer, MONGO_SERVICE),
        faults=mongo_faults,
        request_log=mongo_requests,
        unsubscribe=UnsubscribeTokens(UNSUBSCRIBE_TEST_KEY, issuer.issuer),
    )
    with serving(ServiceServer(sql_app, host), ServiceServer(mongo_app, host)) as (sql, mongo):
        yield ServiceWorld(
            store=store,
            sql_url=sql.url,
            mongo_url=mongo.url,
            sql_faults=sql_faults,
            mongo_faults=mongo_faults,
            sql_requests=sql_requests,
            mongo_requests=mongo_requests,
            issuer=issuer,
            unsubscribe_url=f"{mongo.url}/unsubscribe/",
            mongo_app=mongo_app,
        )
