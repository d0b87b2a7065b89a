"""Dagster resources for the two internal services, on the one client core.

Each resource holds configuration only; a run opens one pooled client per service
in `setup_for_execution` and closes it at teardown. The embedded demo services are a
variant of these resources, chosen where the definitions are built (demo_services.resources).
"""

from __future__ import annotations

from typing import ClassVar

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from cron_pipelines.clients.http import Backoff, ServiceClient
from cron_pipelines.clients.mongo_service import MONGO_SERVICE, MongoServiceClient
from cron_pipelines.clients.sql_service import SQL_SERVICE, SqlServiceClient
from cron_pipelines.clients.tokens import TokenIssuer


class InternalJwtResource(ConfigurableResource):
    """How cron_pipelines signs its internal service tokens (contract §2)."""

    algorithm: str = Field("HS256", description="HS256, RS256, ES256 or EdDSA.")
    secret: str | None = Field(None, repr=False, description="HS256 key (INTERNAL_JWT_SECRET).")
    private_key: str | None = Field(None, repr=False, description="PEM private key for RS256/ES256/EdDSA.")
    key_id: str | None = Field(None, description="`kid` header for asymmetric keys.")
    issuer: str = Field("cron-pipelines", description="`iss` claim.")

    def build_issuer(self) -> TokenIssuer:
        signing_key = self.secret if self.algorithm == "HS256" else self.private_key
        return TokenIssuer(
            algorithm=self.algorithm,  # type: ignore[arg-type]  # TokenIssuer validates it
            signing_key=signing_key or "",
            issuer=self.issuer,
            key_id=self.key_id,
        )


class ServiceResource(ConfigurableResource):
    """Configuration shared by both service resources; subclasses name the service."""

    service_name: ClassVar[str]
    client_class: ClassVar[type[ServiceClient]]

    auth: InternalJwtResource
    base_url: str = Field(description="Service base URL (SQL_SERVICE_URL, MONGO_SERVICE_URL).")
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    max_attempts: int = Field(5, ge=1, description="Tries per request for transient failures.")
    request_deadline_seconds: float = Field(
        60.0, gt=0, description="One deadline per try: connect, headers and body (SERVICE_REQUEST_DEADLINE_SECONDS)."
    )
    max_response_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, description="Cap on an answer's decompressed size (SERVICE_MAX_RESPONSE_BYTES)."
    )
    backoff_base_seconds: float = Field(0.2, gt=0)
    page_size: int = Field(1000, ge=1, le=1000)

    _client: ServiceClient | None = PrivateAttr(default=None)

    def open_client(self) -> ServiceClient:
        """A new client for this service; the caller closes it."""
        issuer = self.auth.build_issuer()
        return self.client_class(
            base_url=self.service_url(issuer),
            issuer=issuer,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            request_deadline=self.request_deadline_seconds,
            max_response_bytes=self.max_response_bytes,
            backoff=Backoff(max_attempts=self.max_attempts, base_delay=self.backoff_base_seconds),
            page_size=self.page_size,
        )

    def service_url(self, issuer: TokenIssuer) -> str:
        """Where the service answers (the demo variant starts it here)."""
        return self.base_url

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


class SqlServiceResource(ServiceResource):
    """sql-service: dues and employee verifications."""

    service_name: ClassVar[str] = SQL_SERVICE
    client_class: ClassVar[type[ServiceClient]] = SqlServiceClient

    @property
    def client(self) -> SqlServiceClient:
        return self._open()  # type: ignore[return-value]


class MongoServiceResource(ServiceResource):
    """mongo-service: user activity, verification attempts and the notification ledger."""

    service_name: ClassVar[str] = MONGO_SERVICE
    client_class: ClassVar[type[ServiceClient]] = MongoServiceClient

    @property
    def client(self) -> MongoServiceClient:
        return self._open()  # type: ignore[return-value]
