"""The mailer resource: message composition plus the configured transport (outbox or SMTP)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from cron_pipelines.notifications.composition import MessageComposer
from cron_pipelines.notifications.transports import MailTransport, OutboxTransport, SmtpSettings, SmtpTransport


class MailerResource(ConfigurableResource):
    """Sends notification emails through `backend`: `outbox` (files) or `smtp`."""

    backend: str = Field("outbox", description="`outbox` (one .eml file per message) or `smtp`.")
    mail_from: str = Field("Cron Pipelines <no-reply@localhost>", description="From header (MAIL_FROM).")
    outbox_dir: str | None = Field(None, description="Folder of the outbox backend (MAIL_OUTBOX_DIR).")
    smtp_host: str = "localhost"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_security: str = Field("none", description="none, starttls or ssl.")
    smtp_username: str | None = None
    smtp_password: str | None = Field(None, repr=False)
    smtp_timeout_seconds: float = Field(30.0, gt=0)
    max_connections: int = Field(4, ge=1, le=64, description="Parallel SMTP sessions (MAIL_MAX_CONNECTIONS).")
    rate_limit_per_second: float | None = Field(None, gt=0, description="MAIL_RATE_LIMIT_PER_SECOND.")
    max_attempts: int = Field(
        5, ge=1, description="Claims of one notification before a failing one is skipped (MAIL_MAX_ATTEMPTS)."
    )
    delivery_batch_size: int = Field(
        100,
        ge=1,
        le=500,
        description="Notifications claimed per request, and outcomes recorded at least this often (DELIVERY_BATCH_SIZE).",
    )

    @cached_property
    def composer(self) -> MessageComposer:
        return MessageComposer(self.mail_from)

    def open_transport(self) -> MailTransport:
        """A transport for one run or step; the caller closes it."""
        if self.backend == "outbox":
            if not self.outbox_dir:
                raise ValueError("the outbox backend needs outbox_dir")
            return OutboxTransport(Path(self.outbox_dir))
        if self.backend == "smtp":
            if self.smtp_security not in ("none", "starttls", "ssl"):
                raise ValueError(f"unknown smtp_security {self.smtp_security!r}")
            settings = SmtpSettings(
                host=self.smtp_host,
                port=self.smtp_port,
                security=self.smtp_security,  # type: ignore[arg-type]
                username=self.smtp_username,
                password=self.smtp_password,
                timeout=self.smtp_timeout_seconds,
            )
            return SmtpTransport(
                settings, max_connections=self.max_connections, rate_limit_per_second=self.rate_limit_per_second
            )
        raise ValueError(f"unknown mailer backend {self.backend!r}")
