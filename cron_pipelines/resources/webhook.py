"""The ops-alert webhook's resource: where alerts are posted, and the key that signs them."""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar

import httpx
from dagster import ConfigurableResource
from pydantic import Field

from cron_pipelines.delivery.channels.webhook.message import WebhookComposer
from cron_pipelines.delivery.channels.webhook.transport import WebhookTransport
from cron_pipelines.secrets import Secret


class OpsWebhookResource(ConfigurableResource):
    """OPS_ALERT_WEBHOOK_URL (a secret: a chat tool's hook URL holds its token) and OPS_ALERT_WEBHOOK_SECRET."""

    url: Secret = Field(description="Where alerts are posted (OPS_ALERT_WEBHOOK_URL); unset: no webhook alert.")
    signing_secret: Secret = Field(description="Signs each body's X-Signature-256 (OPS_ALERT_WEBHOOK_SECRET).")
    # The whole post's deadline; one post at a time, unpaced: an alert is one message.
    timeout_seconds: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 1
    rate_limit_per_second: ClassVar[float | None] = None

    @property
    def configured(self) -> bool:
        return self.url.reveal() is not None

    @property
    def origin(self) -> str:
        """The URL without its path: what the ledger records as the recipient (the path may be the hook's token)."""
        url = httpx.URL(self.url.reveal() or "")
        return f"{url.scheme}://{url.netloc.decode()}"

    @cached_property
    def channel(self) -> WebhookComposer:
        return WebhookComposer(self.signing_secret.reveal())

    def open_transport(self, connections: int, rate: float | None) -> WebhookTransport:
        url = self.url.reveal()
        if url is None:
            raise RuntimeError("OPS_ALERT_WEBHOOK_URL is unset: there is no webhook to post to")
        return WebhookTransport(url, timeout=self.timeout_seconds)
