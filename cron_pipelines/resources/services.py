"""Dagster resources for the two internal services, on the one client core.

Each resource holds configuration only; a run opens one pooled client per service
in `setup_for_execution` and closes it at teardown. With no service URL set, `base_url`
names a service this process serves itself (clients/in_process.py: the embedded demo).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, cast

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from cron_pipelines.clients.http import Backoff, ServiceClient
from cron_pipelines.clients.in_process import resolve
from cron_pipelines.clients.mongo_service import MONGO_SERVICE, MongoServiceClient
from cron_pipelines.clients.sql_service import SQL_SERVICE, SqlServiceClient
from cron_pipelines.clients.tokens import Algorithm, TokenIssuer
from cron_pipelines.secrets import Secret


class InternalJwtResource(ConfigurableResource):
    """How cron_pipelines signs its internal service tokens (docs/services.md, "Talking to a service").

    Its values come from Settings, where each is defined and validated (INTERNAL_JWT_*)."""

    algorithm: Algorithm = Field(description="INTERNAL_JWT_ALGORITHM.")
    secret: Secret = Field(description="HS256 key (INTERNAL_JWT_SECRET).")
    private_key: Secret = Field(description="PEM private key (INTERNAL_JWT_PRIVATE_KEY).")
    key_id: str | None = Field(description="`kid` header (INTERNAL_JWT_KEY_ID).")
    issuer: str = Field(description="`iss` claim (INTERNAL_JWT_ISSUER).")

    def build_issuer(self) -> TokenIssuer:
        signing_key = (self.secret if self.algorithm == "HS256" else self.private_key).reveal()
        return TokenIssuer(
            algorithm=self.algorithm,
            signing_key=signing_key or "",
            issuer=self.issuer,
            key_id=self.key_id,
        )


class ServiceResource(ConfigurableResource):
    """Configuration shared by both service resources; subclasses name the service.

    Its values come from Settings (SERVICE_*), where each is defined and validated."""

    service_name: ClassVar[str]
    client_class: ClassVar[Callable[..., ServiceClient]]

    auth: InternalJwtResource
    base_url: str = Field(
        description="Service base URL (SQL_SERVICE_URL, MONGO_SERVICE_URL), or in-process://<service> (the demo)."
    )
    connect_timeout_seconds: float = Field(description="SERVICE_CONNECT_TIMEOUT_SECONDS.")
    read_timeout_seconds: float = Field(description="SERVICE_READ_TIMEOUT_SECONDS.")
    max_attempts: int = Field(description="Tries per request for transient failures (SERVICE_MAX_ATTEMPTS).")
    request_deadline_seconds: float = Field(
        description="One deadline per try: connect, headers and body (SERVICE_REQUEST_DEADLINE_SECONDS)."
    )
    max_response_bytes: int = Field(description="Cap on an answer's decompressed size (SERVICE_MAX_RESPONSE_BYTES).")
    max_pages: int = Field(description="Pages one listing may take at most (SERVICE_MAX_PAGES).")
    step_deadline_seconds: float = Field(
        description="Time a step may lose to failing service calls, all services together (SERVICE_STEP_DEADLINE_SECONDS)."
    )

    _client: ServiceClient | None = PrivateAttr(default=None)

    def open_client(self) -> ServiceClient:
        """A new client for this service; the caller closes it."""
        issuer = self.auth.build_issuer()
        return self.client_class(
            base_url=resolve(self.base_url, issuer),
            issuer=issuer,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            request_deadline=self.request_deadline_seconds,
            max_response_bytes=self.max_response_bytes,
            max_pages=self.max_pages,
            backoff=Backoff(max_attempts=self.max_attempts),
        )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._client = self.open_client()
        run = context.run
        if run is not None:
            partition = run.tags.get("dagster/partition")
            self._client.log_context = {
                "run_id": run.run_id,
                "job": run.job_name,
                **({"partition": partition} if partition else {}),
            }

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _open(self) -> ServiceClient:
        if self._client is None:
            raise RuntimeError(f"{self.service_name} resource used outside of a run (no client open)")
        return self._client

    @property
    def client(self) -> ServiceClient:
        return self._open()


class SqlServiceResource(ServiceResource):
    """sql-service: dues and employee verifications."""

    service_name: ClassVar[str] = SQL_SERVICE
    client_class: ClassVar[Callable[..., ServiceClient]] = SqlServiceClient

    @property
    def client(self) -> SqlServiceClient:
        return cast(SqlServiceClient, self._open())


class MongoServiceResource(ServiceResource):
    """mongo-service: user activity, verification attempts and the notification ledger."""

    service_name: ClassVar[str] = MONGO_SERVICE
    client_class: ClassVar[Callable[..., ServiceClient]] = MongoServiceClient

    @property
    def client(self) -> MongoServiceClient:
        return cast(MongoServiceClient, self._open())
