"""The environment this code location runs on (docs/services.md, "Configuration", plus this project's own knobs).

Read and validated once when the definitions load, so a wrong value stops the code
location with a message naming the variable, instead of failing the first run at 03:00.
Secrets are SecretStr: they never appear in a repr, a log line or run metadata.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import zoneinfo
from collections.abc import Mapping
from datetime import date
from email.utils import parseaddr
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dagster import EnvVar
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from cron_pipelines.clients.tokens import MIN_HS256_SECRET_BYTES, Algorithm
from cron_pipelines.delivery.channels.email.smtp import SmtpSecurity
from cron_pipelines.safe_text import printable
from cron_pipelines.secrets import Secret, SecretFileError, read_secret_file

# Public by design: it only opens the embedded demo services, and it is refused as
# soon as a real service URL is configured.
DEMO_JWT_SECRET = "cron-pipelines-demo-only-secret-never-use-in-production"

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_PRIVATE_KEY_TYPES = {
    "RS256": (rsa.RSAPrivateKey, "an RSA private key"),
    "ES256": (ec.EllipticCurvePrivateKey, "an EC P-256 private key"),
    "EdDSA": (ed25519.Ed25519PrivateKey, "an Ed25519 private key"),
}


def is_demo_key(secret: str) -> bool:
    """The public demo key, however it is cased or padded."""
    return secret.strip().casefold() == DEMO_JWT_SECRET.casefold()


MIN_DISTINCT_KEY_CHARACTERS = 8


def key_weakness(secret: str) -> str | None:
    """Why `secret` is obviously guessable, or None. Not an entropy proof: it catches the
    keys people type by hand (one repeated character, a short pattern repeated)."""
    if len(set(secret)) < MIN_DISTINCT_KEY_CHARACTERS:
        return f"has fewer than {MIN_DISTINCT_KEY_CHARACTERS} distinct characters"
    for period in range(1, len(secret) // 2 + 1):
        if len(secret) % period == 0 and secret == secret[:period] * (len(secret) // period):
            return "is a short pattern repeated"
    return None


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SettingsError(Exception):
    """The environment is invalid; the message lists each variable and what is wrong with it."""


def check_mail_address(value: str, variable: str) -> str:
    """A `Name <address>` or bare address that is safe to put in a header."""
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError(f"{variable} contains control characters")
    _, address = parseaddr(value)
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{variable} is not a valid e-mail address: {exc}") from None
    return value


MailerBackend = Literal["smtp", "outbox"]
# Where the steps of a sharded delivery run (docs/production.md, "Scaling out").
DeliveryExecutor = Literal["in_process", "multiprocess", "celery", "k8s"]


class Settings(BaseModel):
    """Every variable this code location reads; field names are the variable names, lower-cased.

    The one definition of each setting: its type, its default and its limits. Resources
    are built from a Settings and take its values as they are (cron_pipelines.resources).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    # The variables load_settings read from the process environment: those secrets are handed
    # to resources as EnvVar, so the UI and run config show names, not values.
    _process_variables: frozenset[str] = PrivateAttr(default=frozenset())
    # Secrets read from `NAME_FILE` of the process environment: NAME → the file's path.
    _secret_files: dict[str, str] = PrivateAttr(default_factory=dict)

    # Where Dagster keeps its state; the demo services and the outbox live under it too.
    dagster_home: Path = Field(default_factory=lambda: Path.cwd() / ".dagster_home")
    dagster_webserver_url: str = "http://localhost:3000"

    sql_service_url: str | None = None
    mongo_service_url: str | None = None
    demo_services_db: Path | None = None
    service_connect_timeout_seconds: float = Field(5.0, gt=0)
    service_read_timeout_seconds: float = Field(30.0, gt=0)
    service_max_attempts: int = Field(5, ge=1, le=20)
    # Opt-in to http:// service URLs beyond loopback: the bearer tokens cross the network in clear text.
    service_allow_plaintext_http: bool = False
    service_request_deadline_seconds: float = Field(60.0, gt=0)
    service_max_response_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    service_max_pages: int = Field(10_000, ge=1)
    # What one step may lose to failing service calls (failed tries and the waits between them),
    # carried over to its retries: docs/delivery.md, gives the worst case it bounds.
    service_step_deadline_seconds: float = Field(180.0, gt=0)

    internal_jwt_secret: SecretStr | None = None
    internal_jwt_issuer: str = Field("cron-pipelines", min_length=1)
    internal_jwt_algorithm: Algorithm = "HS256"
    internal_jwt_private_key: SecretStr | None = None
    internal_jwt_key_id: str | None = None

    mailer_backend: MailerBackend = "outbox"
    mail_outbox_dir: Path | None = None
    smtp_host: str = "localhost"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: SmtpSecurity = "none"
    smtp_timeout_seconds: float = Field(30.0, gt=0)
    # The CA(s) of a relay with a private certificate; unset: the system's trust store (/etc/ssl/certs,
    # or SSL_CERT_FILE where OpenSSL is told so).
    smtp_ca_file: Path | None = None
    # Opt-in to SMTP AUTH without TLS: the password crosses the network in clear text.
    smtp_allow_plaintext_auth: bool = False
    mail_from: str = "Cron Pipelines <no-reply@localhost>"
    mail_max_connections: int = Field(4, ge=1, le=64)
    mail_rate_limit_per_second: float | None = Field(None, gt=0)
    mail_max_attempts: int = Field(5, ge=1, le=100)
    # 50: two batches are claimed and not yet recorded at once, so a hard crash leaves at most 100.
    delivery_batch_size: int = Field(50, ge=1, le=500)
    # Source records decided together where a job reads in chunks (deactivations, verifications).
    source_chunk_size: int = Field(100, ge=1, le=1000)

    cron_timezone: str = "UTC"
    partitions_start_date: date = date(2026, 1, 1)
    ops_alert_email: str | None = None
    # Failure alerts as a Slack-compatible webhook (contract §9), so a mail outage is still reported.
    ops_alert_webhook_url: SecretStr | None = None
    ops_alert_webhook_secret: SecretStr | None = None

    # One-click unsubscribe (docs/services.md, "Recipients"): both, or no header at all.
    unsubscribe_base_url: str | None = None
    unsubscribe_signing_key: SecretStr | None = None

    prometheus_pushgateway_url: str | None = None

    # Sharded deliveries (docs/production.md, "Scaling out"): S steps per notification job, run by this executor.
    delivery_shards: int = Field(1, ge=1, le=64)
    delivery_executor: DeliveryExecutor = "multiprocess"
    celery_broker_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    celery_backend_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")

    step_max_retries: int = Field(3, ge=0, le=10)
    step_retry_delay_seconds: float = Field(30.0, ge=0)
    schedule_catchup_days: int = Field(3, ge=1, le=31)
    verification_sensor_lookback_hours: int = Field(24, ge=1)

    @field_validator("sql_service_url", "mongo_service_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @field_validator("prometheus_pushgateway_url")
    @classmethod
    def _pushgateway_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://\S+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("unsubscribe_base_url")
    @classmethod
    def _unsubscribe_url(cls, value: str | None) -> str | None:
        # It goes into a mail header: printable ASCII only; https, as mail clients require
        # (http only to loopback, for a local try-out).
        if value is not None and not re.fullmatch(r"https?://[\x21-\x7e]+", value):
            raise ValueError("must be an https:// URL of printable ASCII characters")
        if value is not None and value.startswith("http://") and not is_loopback_url(value):
            raise ValueError("must be https:// (mail clients refuse plain-http unsubscribe links)")
        return value

    @field_validator("smtp_ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        try:
            ssl.create_default_context(cafile=str(value))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"is not a readable PEM file of CA certificates ({printable(exc, 120)})") from None
        return value

    @field_validator("dagster_webserver_url")
    @classmethod
    def _webserver_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://\S+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("cron_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        return check_mail_address(value, "the sender")

    @field_validator("ops_alert_email")
    @classmethod
    def _ops_alert_email(cls, value: str | None) -> str | None:
        return check_mail_address(value, "the alert recipient") if value is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems: list[str] = []
        if (self.sql_service_url is None) != (self.mongo_service_url is None):
            problems.append("SQL_SERVICE_URL, MONGO_SERVICE_URL: set both (real services) or neither (embedded demo)")
        if self.internal_jwt_algorithm == "HS256":
            secret = self.internal_jwt_secret.get_secret_value() if self.internal_jwt_secret else None
            if secret is not None and len(secret.encode()) < MIN_HS256_SECRET_BYTES:
                problems.append(f"INTERNAL_JWT_SECRET: must be at least {MIN_HS256_SECRET_BYTES} bytes")
            if self.uses_real_services and (secret is None or is_demo_key(secret)):
                problems.append(
                    "INTERNAL_JWT_SECRET: the demo key is refused when SQL_SERVICE_URL/MONGO_SERVICE_URL are set"
                )
            elif secret is not None and not is_demo_key(secret) and (weakness := key_weakness(secret)):
                problems.append(f"INTERNAL_JWT_SECRET: {weakness}; generate one with `openssl rand -base64 48`")
        else:
            problems.extend(self._private_key_problems())
        problems.extend(self._webhook_problems())
        if self.unsubscribe_base_url is not None and self.unsubscribe_signing_key is None:
            problems.append("UNSUBSCRIBE_SIGNING_KEY: required when UNSUBSCRIBE_BASE_URL is set")
        if self.unsubscribe_signing_key is not None:
            key = self.unsubscribe_signing_key.get_secret_value()
            if len(key.encode()) < MIN_HS256_SECRET_BYTES:
                problems.append(f"UNSUBSCRIBE_SIGNING_KEY: must be at least {MIN_HS256_SECRET_BYTES} bytes")
            elif weakness := key_weakness(key):
                problems.append(f"UNSUBSCRIBE_SIGNING_KEY: {weakness}")
        if self.delivery_shards > self.mail_max_connections:
            problems.append(
                f"DELIVERY_SHARDS: {self.delivery_shards} shards need at least as many mail connections, "
                f"and MAIL_MAX_CONNECTIONS (the total for a run) is {self.mail_max_connections}"
            )
        if self.smtp_username is not None and self.smtp_password is None:
            problems.append("SMTP_PASSWORD: required when SMTP_USERNAME is set")
        if self.smtp_username is not None and self.smtp_security == "none" and not self.smtp_allow_plaintext_auth:
            problems.append(
                "SMTP_SECURITY: none would send SMTP_USERNAME/SMTP_PASSWORD in clear text; use starttls or ssl, "
                "or set SMTP_ALLOW_PLAINTEXT_AUTH=true for a relay on this machine or a link you trust"
            )
        if not self.service_allow_plaintext_http:
            for variable, url in (
                ("SQL_SERVICE_URL", self.sql_service_url),
                ("MONGO_SERVICE_URL", self.mongo_service_url),
            ):
                if url is not None and url.startswith("http://") and not is_loopback_url(url):
                    problems.append(
                        f"{variable}: http:// to a host beyond this machine would send the service tokens in clear "
                        "text; use https://, or set SERVICE_ALLOW_PLAINTEXT_HTTP=true for a private network you trust"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _webhook_problems(self) -> list[str]:
        problems = []
        if self.ops_alert_webhook_url is not None:
            url = self.ops_alert_webhook_url.get_secret_value()
            if not re.fullmatch(r"https?://[\x21-\x7e]+", url):
                problems.append("OPS_ALERT_WEBHOOK_URL: must be an https:// URL of printable ASCII characters")
            elif url.startswith("http://") and not is_loopback_url(url):
                problems.append(
                    "OPS_ALERT_WEBHOOK_URL: must be https:// (the alert would cross the network in clear text)"
                )
        if self.ops_alert_webhook_secret is not None:
            secret = self.ops_alert_webhook_secret.get_secret_value()
            if len(secret.encode()) < MIN_HS256_SECRET_BYTES:
                problems.append(f"OPS_ALERT_WEBHOOK_SECRET: must be at least {MIN_HS256_SECRET_BYTES} bytes")
            if self.ops_alert_webhook_url is None:
                problems.append("OPS_ALERT_WEBHOOK_SECRET: set, but OPS_ALERT_WEBHOOK_URL is not")
        return problems

    def _private_key_problems(self) -> list[str]:
        algorithm = self.internal_jwt_algorithm
        problems = []
        if not self.internal_jwt_key_id:
            problems.append(f"INTERNAL_JWT_KEY_ID: required with INTERNAL_JWT_ALGORITHM={algorithm}")
        if self.internal_jwt_private_key is None:
            return [*problems, f"INTERNAL_JWT_PRIVATE_KEY: required with INTERNAL_JWT_ALGORITHM={algorithm}"]
        pem = self.internal_jwt_private_key.get_secret_value().encode()
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            return [*problems, "INTERNAL_JWT_PRIVATE_KEY: not a readable unencrypted PEM private key"]
        key_type, description = _PRIVATE_KEY_TYPES[algorithm]
        wrong_curve = isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1)
        if not isinstance(key, key_type) or (algorithm == "ES256" and wrong_curve):
            problems.append(f"INTERNAL_JWT_PRIVATE_KEY: {algorithm} needs {description}")
        return problems

    # -- derived values ------------------------------------------------------

    @property
    def uses_real_services(self) -> bool:
        return self.sql_service_url is not None or self.mongo_service_url is not None

    @property
    def jwt_signing_key(self) -> str:
        """The HS256 secret or the PEM private key, whichever the algorithm signs with."""
        if self.internal_jwt_algorithm == "HS256":
            return self.internal_jwt_secret.get_secret_value() if self.internal_jwt_secret else DEMO_JWT_SECRET
        assert self.internal_jwt_private_key is not None  # guaranteed by validation
        return self.internal_jwt_private_key.get_secret_value()

    def secret(self, variable: str, value: str | None) -> Secret:
        """`value` for a resource, by reference where it came from the process: EnvVar(variable), or the
        path of `variable`_FILE, so the secret stays out of the run config Dagster stores and shows."""
        if value is None:
            return Secret()
        if variable in self._secret_files:
            return Secret(file=self._secret_files[variable])
        if variable in self._process_variables:
            return Secret(value=EnvVar(variable))
        return Secret(value=value)

    @property
    def demo_services_db_path(self) -> Path:
        return self.demo_services_db or self.dagster_home / "demo_services.sqlite3"

    @property
    def outbox_dir(self) -> Path:
        return self.mail_outbox_dir or self.dagster_home / "outbox"


_SECRET_FIELDS = frozenset(
    {
        "internal_jwt_secret",
        "internal_jwt_private_key",
        "smtp_password",
        "unsubscribe_signing_key",
        "ops_alert_webhook_url",
        "ops_alert_webhook_secret",
    }
)


def _describe(error: ErrorDetails) -> list[str]:
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a cross-field check: its message already names the variables
        return message.splitlines()
    variable = str(error["loc"][0]).upper()
    if str(error["loc"][0]) in _SECRET_FIELDS:
        return [f"{variable}: {message}"]
    return [f"{variable}={error.get('input')!r}: {message}"]


# Secrets may come from a file instead (`<NAME>_FILE`, the Docker and Kubernetes convention), so
# they need not sit in a container's environment, where `docker inspect` shows them.
SECRET_VARIABLES = (
    "INTERNAL_JWT_SECRET",
    "INTERNAL_JWT_PRIVATE_KEY",
    "SMTP_PASSWORD",
    "UNSUBSCRIBE_SIGNING_KEY",
    # A chat tool's webhook URL holds its token.
    "OPS_ALERT_WEBHOOK_URL",
    "OPS_ALERT_WEBHOOK_SECRET",
    # A broker URL may hold its password.
    "CELERY_BROKER_URL",
    "CELERY_BACKEND_URL",
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `environ` (default: the process environment), or SettingsError listing every problem.

    A secret may come from `<NAME>_FILE`: it is read here to be validated, and resources are given
    the file's path (Settings.secret), so each process reads it itself and the environment that
    Dagster's child processes inherit stays as it was.
    """
    source = os.environ if environ is None else environ
    # An empty variable counts as unset, as in most deployment tools' env files.
    values = {name: source[name.upper()] for name in Settings.model_fields if source.get(name.upper())}
    file_secrets, problems = _secrets_from_files(source)
    if problems:
        raise SettingsError("invalid configuration:\n" + "\n".join(f"  - {line}" for line in problems))
    values.update({name.lower(): value for name, value in file_secrets.items()})
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        lines = "\n".join(f"  - {line}" for error in exc.errors() for line in _describe(error))
        raise SettingsError(f"invalid configuration:\n{lines}") from None
    # A file can be read again by any process; a variable only where this environment is the process's.
    settings._secret_files = {name: source[f"{name}_FILE"] for name in file_secrets}
    if environ is None:
        settings._process_variables = frozenset(name.upper() for name in values) - set(file_secrets)
    return settings


def _secrets_from_files(source: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    secrets: dict[str, str] = {}
    problems: list[str] = []
    for name in SECRET_VARIABLES:
        path = source.get(f"{name}_FILE")
        if not path:
            continue
        if source.get(name):
            problems.append(f"{name}_FILE: set either {name} or {name}_FILE, not both")
            continue
        try:
            secrets[name] = read_secret_file(path)
        except SecretFileError as exc:
            problems.append(f"{name}_FILE: {exc}")
    return secrets, problems
