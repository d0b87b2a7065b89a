"""The service resources served by the embedded stand-ins: the demo's resource set.

With no service URL configured, each process that needs a service (webserver, daemon,
each run worker) starts the stand-in in-process on loopback, over one shared SQLite
file seeded for today. Chosen where the definitions are built, as a local resource set
is in Dagster's fully featured example; the product's resources know nothing of it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cron_pipelines.clients.tokens import TokenIssuer
from cron_pipelines.resources.services import MongoServiceResource, SqlServiceResource
from demo_services.embedded import embedded_service_url


class _Embedded:
    """Starts this process's stand-in for the service on first use; its URL replaces base_url."""

    service_name: str
    demo_database: str
    demo_timezone: str

    def service_url(self, issuer: TokenIssuer) -> str:
        return embedded_service_url(self.service_name, Path(self.demo_database), issuer, timezone=self.demo_timezone)


class EmbeddedSqlServiceResource(_Embedded, SqlServiceResource):
    """sql-service, served by the embedded stand-in."""

    base_url: str = "embedded"
    demo_database: str = Field(description="SQLite file of the embedded demo services (DEMO_SERVICES_DB).")
    demo_timezone: str = Field(description="Time zone the demo data is seeded in (CRON_TIMEZONE).")


class EmbeddedMongoServiceResource(_Embedded, MongoServiceResource):
    """mongo-service, served by the embedded stand-in."""

    base_url: str = "embedded"
    demo_database: str = Field(description="SQLite file of the embedded demo services (DEMO_SERVICES_DB).")
    demo_timezone: str = Field(description="Time zone the demo data is seeded in (CRON_TIMEZONE).")
