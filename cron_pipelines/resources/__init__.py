"""Resources of the code location, built from the validated settings.

Each setting is defined once, in Settings; resources take its values as they are.
Secrets are passed by reference (cron_pipelines.secrets): an `EnvVar`, or the path of the
file they were read from, so the Dagster UI and run config show a name, never a value.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from cron_pipelines.clients.in_process import in_process_url
from cron_pipelines.clients.mongo_service import MONGO_SERVICE
from cron_pipelines.clients.sql_service import SQL_SERVICE
from cron_pipelines.resources.delivery import DeliveryResource
from cron_pipelines.resources.mailer import MailerResource
from cron_pipelines.resources.metrics import MetricsResource
from cron_pipelines.resources.services import (
    InternalJwtResource,
    MongoServiceResource,
    ServiceResource,
    SqlServiceResource,
)
from cron_pipelines.resources.webhook import OpsWebhookResource
from cron_pipelines.settings import Settings

__all__ = [
    "DeliveryResource",
    "InternalJwtResource",
    "MailerResource",
    "MetricsResource",
    "MongoServiceResource",
    "OpsWebhookResource",
    "ServiceResource",
    "SqlServiceResource",
    "build_resources",
]


def _plain(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _service_resources(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """The services at their URLs; with none set, the services this process serves itself (the demo)."""
    sql_url = settings.sql_service_url or in_process_url(SQL_SERVICE)
    mongo_url = settings.mongo_service_url or in_process_url(MONGO_SERVICE)
    return {
        "sql_service": SqlServiceResource(base_url=sql_url, **options),
        "mongo_service": MongoServiceResource(base_url=mongo_url, **options),
    }


def build_resources(settings: Settings) -> dict[str, Any]:
    auth = InternalJwtResource(
        algorithm=settings.internal_jwt_algorithm,
        secret=settings.secret(
            "INTERNAL_JWT_SECRET", settings.jwt_signing_key if settings.internal_jwt_algorithm == "HS256" else None
        ),
        private_key=settings.secret("INTERNAL_JWT_PRIVATE_KEY", _plain(settings.internal_jwt_private_key)),
        key_id=settings.internal_jwt_key_id,
        issuer=settings.internal_jwt_issuer,
    )
    service_options: dict[str, Any] = {
        "auth": auth,
        "connect_timeout_seconds": settings.service_connect_timeout_seconds,
        "read_timeout_seconds": settings.service_read_timeout_seconds,
        "max_attempts": settings.service_max_attempts,
        "request_deadline_seconds": settings.service_request_deadline_seconds,
        "max_response_bytes": settings.service_max_response_bytes,
        "max_pages": settings.service_max_pages,
        "step_deadline_seconds": settings.service_step_deadline_seconds,
    }
    return {
        **_service_resources(settings, service_options),
        "mailer": MailerResource(
            backend=settings.mailer_backend,
            mail_from=settings.mail_from,
            outbox_dir=str(settings.outbox_dir),
            smtp_host=settings.smtp_host,
            smtp_port=settings.smtp_port,
            smtp_security=settings.smtp_security,
            smtp_username=settings.smtp_username,
            smtp_password=settings.secret("SMTP_PASSWORD", _plain(settings.smtp_password)),
            smtp_timeout_seconds=settings.smtp_timeout_seconds,
            smtp_ca_file=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
            max_connections=settings.mail_max_connections,
            rate_limit_per_second=settings.mail_rate_limit_per_second,
            unsubscribe_base_url=settings.unsubscribe_base_url,
            unsubscribe_signing_key=settings.secret(
                "UNSUBSCRIBE_SIGNING_KEY", _plain(settings.unsubscribe_signing_key)
            ),
            unsubscribe_issuer=settings.internal_jwt_issuer,
        ),
        "delivery": DeliveryResource(
            batch_size=settings.delivery_batch_size,
            max_attempts=settings.mail_max_attempts,
            source_chunk_size=settings.source_chunk_size,
        ),
        "ops_webhook": OpsWebhookResource(
            url=settings.secret("OPS_ALERT_WEBHOOK_URL", _plain(settings.ops_alert_webhook_url)),
            signing_secret=settings.secret("OPS_ALERT_WEBHOOK_SECRET", _plain(settings.ops_alert_webhook_secret)),
        ),
        "metrics": MetricsResource(pushgateway_url=settings.prometheus_pushgateway_url),
    }
