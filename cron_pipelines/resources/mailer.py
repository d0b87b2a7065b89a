"""The mailer resource: message composition plus the configured transport (outbox or SMTP)."""

from __future__ import annotations

import ssl
from functools import cached_property
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from cron_pipelines.delivery.channels.base import Transport
from cron_pipelines.delivery.channels.email.composer import MessageComposer
from cron_pipelines.delivery.channels.email.outbox import OutboxTransport
from cron_pipelines.delivery.channels.email.smtp import SmtpSecurity, SmtpSettings, SmtpTransport
from cron_pipelines.delivery.channels.email.unsubscribe import UnsubscribeLinks, UnsubscribeTokens
from cron_pipelines.secrets import Secret
from cron_pipelines.settings import MailerBackend


class MailerResource(ConfigurableResource):
    """Sends notification emails through `backend`: `outbox` (files) or `smtp`.

    The email channel's resource: its composer and its transports. Its values come from
    Settings (MAILER_BACKEND, MAIL_*, SMTP_*), where each is defined and validated."""

    backend: MailerBackend = Field(description="`outbox` (one .eml file per message) or `smtp` (MAILER_BACKEND).")
    mail_from: str = Field(description="From header (MAIL_FROM).")
    outbox_dir: str = Field(description="Folder of the outbox backend (MAIL_OUTBOX_DIR).")
    smtp_host: str = Field(description="SMTP_HOST.")
    smtp_port: int = Field(description="SMTP_PORT.")
    smtp_security: SmtpSecurity = Field(description="none, starttls or ssl (SMTP_SECURITY).")
    smtp_username: str | None = Field(description="SMTP_USERNAME.")
    smtp_password: Secret = Field(description="SMTP_PASSWORD.")
    smtp_timeout_seconds: float = Field(description="SMTP_TIMEOUT_SECONDS.")
    smtp_ca_file: str | None = Field(
        description="PEM file of the CA(s) that sign the relay's certificate (SMTP_CA_FILE); none: the system's trust store."
    )
    max_connections: int = Field(description="Parallel SMTP sessions (MAIL_MAX_CONNECTIONS).")
    rate_limit_per_second: float | None = Field(description="MAIL_RATE_LIMIT_PER_SECOND.")
    unsubscribe_base_url: str | None = Field(
        description="One-click unsubscribe endpoint of optional emails (UNSUBSCRIBE_BASE_URL); none: no header."
    )
    unsubscribe_signing_key: Secret = Field(description="UNSUBSCRIBE_SIGNING_KEY.")
    unsubscribe_issuer: str = Field(description="`iss` of unsubscribe tokens (INTERNAL_JWT_ISSUER).")

    @cached_property
    def channel(self) -> MessageComposer:
        return MessageComposer(self.mail_from, self.unsubscribe_links)

    @property
    def unsubscribe_links(self) -> UnsubscribeLinks | None:
        signing_key = self.unsubscribe_signing_key.reveal()
        if self.unsubscribe_base_url is None or signing_key is None:
            return None
        tokens = UnsubscribeTokens(signing_key, self.unsubscribe_issuer)
        return UnsubscribeLinks(self.unsubscribe_base_url, tokens)

    def open_transport(self, connections: int, rate: float | None) -> Transport:
        """A transport for one step with these SMTP sessions and messages per second (all of MAIL_MAX_CONNECTIONS
        and MAIL_RATE_LIMIT_PER_SECOND, or a shard's share); the caller closes it."""
        if self.backend == "outbox":
            return OutboxTransport(Path(self.outbox_dir))
        if self.backend == "smtp":
            settings = SmtpSettings(
                host=self.smtp_host,
                port=self.smtp_port,
                security=self.smtp_security,
                username=self.smtp_username,
                password=self.smtp_password.reveal(),
                timeout=self.smtp_timeout_seconds,
                ssl_context=ssl.create_default_context(cafile=self.smtp_ca_file) if self.smtp_ca_file else None,
                sender=self.channel.sender,
            )
            return SmtpTransport(
                settings,
                max_connections=connections,
                rate_limit_per_second=rate,
            )
        raise ValueError(f"unknown mailer backend {self.backend!r}")
