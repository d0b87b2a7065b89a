"""The settings model: docs/services.md, Configuration defaults, and start-up errors that name the variable."""

from __future__ import annotations

import os
import re
from pathlib import Path

import dagster as dg
import pytest

from cron_pipelines.secrets import Secret, read_secret_file
from cron_pipelines.settings import DEMO_JWT_SECRET, SettingsError, load_settings
from cron_pipelines_tests.support.keys import private_key_pem

REAL_SERVICES = {"SQL_SERVICE_URL": "https://sql.internal", "MONGO_SERVICE_URL": "https://mongo.internal/"}
STRONG_SECRET = "k3Yq-9vTz_Lw2pHs8RbN4xJd6FmC0aQe"


def test_defaults_follow_the_contract() -> None:
    settings = load_settings({"DAGSTER_HOME": "/srv/dagster"})
    assert settings.sql_service_url is None and settings.mongo_service_url is None
    assert not settings.uses_real_services
    assert settings.jwt_signing_key == DEMO_JWT_SECRET
    assert settings.internal_jwt_issuer == "cron-pipelines"
    assert settings.internal_jwt_algorithm == "HS256"
    assert settings.mailer_backend == "outbox"
    assert settings.outbox_dir == Path("/srv/dagster/outbox")
    assert settings.demo_services_db_path == Path("/srv/dagster/demo_services.sqlite3")
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == ("localhost", 25, "none")
    assert settings.mail_from == "Cron Pipelines <no-reply@localhost>"
    assert settings.cron_timezone == "UTC"
    assert settings.ops_alert_email is None


def test_values_are_read_and_normalised() -> None:
    settings = load_settings(
        {
            **REAL_SERVICES,
            "INTERNAL_JWT_SECRET": STRONG_SECRET,
            "SMTP_PORT": "587",
            "SMTP_SECURITY": "starttls",
            "CRON_TIMEZONE": "Asia/Kolkata",
            "MAIL_OUTBOX_DIR": "/tmp/out",
            "OPS_ALERT_EMAIL": "ops@example.com",
            "SMTP_HOST": "",
            "MAILER_BACKEND": "smtp",
        }
    )
    assert settings.mongo_service_url == "https://mongo.internal"
    assert settings.smtp_port == 587 and settings.smtp_security == "starttls"
    assert settings.smtp_host == "localhost"  # empty means unset
    assert settings.outbox_dir == Path("/tmp/out")
    assert settings.jwt_signing_key == STRONG_SECRET


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"SMTP_PORT": "abc"}, "SMTP_PORT='abc': Input should be a valid integer"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT='70000'"),
        ({"MAILER_BACKEND": "pigeon"}, "MAILER_BACKEND='pigeon': Input should be 'smtp' or 'outbox'"),
        ({"SMTP_SECURITY": "tls"}, "SMTP_SECURITY='tls'"),
        ({"INTERNAL_JWT_SECRET": "short"}, "INTERNAL_JWT_SECRET: must be at least 32 bytes"),
        (
            {**REAL_SERVICES, "SQL_SERVICE_URL": "ftp://sql"},
            "SQL_SERVICE_URL='ftp://sql': must be an http:// or https:// URL",
        ),
        ({"SQL_SERVICE_URL": "not a url", "MONGO_SERVICE_URL": "http://m"}, "SQL_SERVICE_URL='not a url'"),
        ({"SQL_SERVICE_URL": "http://sql"}, "set both (real services) or neither"),
        (REAL_SERVICES, "INTERNAL_JWT_SECRET: the demo key is refused"),
        ({**REAL_SERVICES, "INTERNAL_JWT_SECRET": DEMO_JWT_SECRET}, "INTERNAL_JWT_SECRET: the demo key is refused"),
        ({"INTERNAL_JWT_ALGORITHM": "HS512"}, "INTERNAL_JWT_ALGORITHM='HS512'"),
        ({"INTERNAL_JWT_ALGORITHM": "RS256"}, "INTERNAL_JWT_PRIVATE_KEY: required"),
        (
            {"INTERNAL_JWT_ALGORITHM": "RS256", "INTERNAL_JWT_PRIVATE_KEY": "garbage", "INTERNAL_JWT_KEY_ID": "k"},
            "not a readable unencrypted PEM",
        ),
        ({"CRON_TIMEZONE": "Mars/Olympus"}, "CRON_TIMEZONE='Mars/Olympus': is not an IANA time zone"),
        ({"MAIL_FROM": "Ops <ops@example.com>\r\nBcc: x@example.com"}, "MAIL_FROM="),
        ({"MAIL_FROM": "nobody"}, "MAIL_FROM='nobody'"),
        ({"OPS_ALERT_EMAIL": "not-an-address"}, "OPS_ALERT_EMAIL='not-an-address'"),
        ({"SMTP_USERNAME": "mailer"}, "SMTP_PASSWORD: required when SMTP_USERNAME is set"),
        ({"MAIL_MAX_CONNECTIONS": "0"}, "MAIL_MAX_CONNECTIONS='0'"),
        (
            {"DELIVERY_SHARDS": "5", "MAIL_MAX_CONNECTIONS": "4"},
            "DELIVERY_SHARDS: 5 shards need at least as many mail connections, and MAIL_MAX_CONNECTIONS",
        ),
        ({"DELIVERY_SHARDS": "0"}, "DELIVERY_SHARDS='0'"),
        ({"DELIVERY_EXECUTOR": "bullmq"}, "DELIVERY_EXECUTOR='bullmq'"),
    ],
)
def test_invalid_values_fail_naming_the_variable(environment: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(environment)
    assert expected in str(raised.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"SMTP_PORT": "abc", "MAILER_BACKEND": "pigeon", "CRON_TIMEZONE": "Nowhere"})
    message = str(raised.value)
    assert "SMTP_PORT" in message and "MAILER_BACKEND" in message and "CRON_TIMEZONE" in message


@pytest.mark.parametrize(("algorithm", "wrong"), [("RS256", "ES256"), ("ES256", "EdDSA"), ("EdDSA", "RS256")])
def test_private_key_must_match_the_algorithm(algorithm: str, wrong: str) -> None:
    good = {
        "INTERNAL_JWT_ALGORITHM": algorithm,
        "INTERNAL_JWT_PRIVATE_KEY": private_key_pem(algorithm),
        "INTERNAL_JWT_KEY_ID": "k1",
    }
    assert load_settings({**REAL_SERVICES, **good}).jwt_signing_key == good["INTERNAL_JWT_PRIVATE_KEY"]
    with pytest.raises(SettingsError, match=f"INTERNAL_JWT_PRIVATE_KEY: {algorithm} needs"):
        load_settings({**good, "INTERNAL_JWT_PRIVATE_KEY": private_key_pem(wrong)})


def test_secrets_never_appear_in_errors_or_repr() -> None:
    secret = "short-but-secret"
    password = "smtp-password-value"
    with pytest.raises(SettingsError) as raised:
        load_settings({"INTERNAL_JWT_SECRET": secret, "SMTP_PASSWORD": password, "SMTP_PORT": "x"})
    assert secret not in str(raised.value) and password not in str(raised.value)
    settings = load_settings(
        {"INTERNAL_JWT_SECRET": STRONG_SECRET, "SMTP_USERNAME": "u", "SMTP_PASSWORD": password, "SMTP_SECURITY": "ssl"}
    )
    assert STRONG_SECRET not in repr(settings) and password not in repr(settings)
    assert STRONG_SECRET not in str(settings.model_dump()) and password not in str(settings.model_dump())


# -- transport and keys: refused unless the operator opts in by name ----------------------------


def test_smtp_auth_without_tls_is_refused_unless_allowed_by_name() -> None:
    plaintext = {"SMTP_USERNAME": "mailer", "SMTP_PASSWORD": "pw", "SMTP_SECURITY": "none"}
    with pytest.raises(SettingsError, match="SMTP_SECURITY: none would send SMTP_USERNAME/SMTP_PASSWORD in clear"):
        load_settings(plaintext)
    assert load_settings({**plaintext, "SMTP_ALLOW_PLAINTEXT_AUTH": "true"}).smtp_allow_plaintext_auth
    for security in ("starttls", "ssl"):
        assert load_settings({**plaintext, "SMTP_SECURITY": security}).smtp_username == "mailer"
    assert load_settings({"SMTP_SECURITY": "none"}).smtp_username is None  # no AUTH, nothing to protect


@pytest.mark.parametrize("host", ["sql.internal", "10.0.0.7", "[fd00::1]", "localhost.example.com"])
def test_plain_http_beyond_loopback_is_refused_unless_allowed_by_name(host: str) -> None:
    urls = {"SQL_SERVICE_URL": f"http://{host}:8080", "MONGO_SERVICE_URL": "https://mongo.internal"}
    with pytest.raises(SettingsError) as raised:
        load_settings({**urls, "INTERNAL_JWT_SECRET": STRONG_SECRET})
    assert "SQL_SERVICE_URL: http:// to a host beyond this machine" in str(raised.value)
    assert "MONGO_SERVICE_URL" not in str(raised.value)
    allowed = load_settings({**urls, "INTERNAL_JWT_SECRET": STRONG_SECRET, "SERVICE_ALLOW_PLAINTEXT_HTTP": "1"})
    assert allowed.sql_service_url == f"http://{host}:8080"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "[::1]", "sql.localhost"])
def test_plain_http_on_loopback_is_accepted(host: str) -> None:
    urls = {"SQL_SERVICE_URL": f"http://{host}:8080", "MONGO_SERVICE_URL": f"http://{host}:8081"}
    assert load_settings({**urls, "INTERNAL_JWT_SECRET": STRONG_SECRET}).uses_real_services


@pytest.mark.parametrize(
    "variant",
    [
        DEMO_JWT_SECRET.upper(),
        DEMO_JWT_SECRET + " ",
        " " + DEMO_JWT_SECRET,
        DEMO_JWT_SECRET + "\n",
        DEMO_JWT_SECRET.title(),
    ],
)
def test_every_variant_of_the_demo_key_is_refused_with_real_services(variant: str) -> None:
    with pytest.raises(SettingsError, match="INTERNAL_JWT_SECRET: the demo key is refused"):
        load_settings({**REAL_SERVICES, "INTERNAL_JWT_SECRET": variant})


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("a" * 32, "fewer than 8 distinct characters"),
        ("ab" * 20, "fewer than 8 distinct characters"),
        ("abcdefgh" * 5, "a short pattern repeated"),
        ("0123456789" * 4, "a short pattern repeated"),
    ],
)
def test_obviously_weak_keys_are_refused(secret: str, reason: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({**REAL_SERVICES, "INTERNAL_JWT_SECRET": secret})
    assert f"INTERNAL_JWT_SECRET: {'is ' if 'pattern' in reason else 'has '}{reason}" in str(raised.value)
    assert secret not in str(raised.value)


def test_secrets_are_read_from_files_and_kept_out_of_the_environment_they_came_from(tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt"
    secret_file.write_text(STRONG_SECRET + "\n")
    password_file = tmp_path / "smtp"
    password_file.write_text("smtp-pass")
    settings = load_settings(
        {
            **REAL_SERVICES,
            "INTERNAL_JWT_SECRET_FILE": str(secret_file),
            "SMTP_USERNAME": "mailer",
            "SMTP_PASSWORD_FILE": str(password_file),
            "SMTP_SECURITY": "starttls",
        }
    )
    assert settings.jwt_signing_key == STRONG_SECRET  # the trailing newline is not part of it
    assert settings.smtp_password is not None and settings.smtp_password.get_secret_value() == "smtp-pass"


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"INTERNAL_JWT_SECRET_FILE": "/nonexistent/jwt"}, "INTERNAL_JWT_SECRET_FILE: cannot read '/nonexistent/jwt'"),
        (
            {"INTERNAL_JWT_SECRET_FILE": "/dev/null", "INTERNAL_JWT_SECRET": STRONG_SECRET},
            "set either INTERNAL_JWT_SECRET or INTERNAL_JWT_SECRET_FILE, not both",
        ),
        ({"SMTP_PASSWORD_FILE": "/dev/null"}, "SMTP_PASSWORD_FILE: '/dev/null' is empty"),
    ],
)
def test_unusable_secret_files_are_refused_naming_the_variable(environment: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(expected)):
        load_settings(environment)


def test_a_secret_file_reaches_resources_as_its_path_and_the_environment_is_left_as_it_was(
    tmp_path: Path, monkeypatch
) -> None:
    secret_file = tmp_path / "jwt"
    secret_file.write_text(STRONG_SECRET + "\n")
    monkeypatch.delenv("INTERNAL_JWT_SECRET", raising=False)
    for variable, value in {**REAL_SERVICES, "INTERNAL_JWT_SECRET_FILE": str(secret_file)}.items():
        monkeypatch.setenv(variable, value)
    settings = load_settings()
    # A child process would otherwise see both INTERNAL_JWT_SECRET and its _FILE, and refuse to start.
    assert "INTERNAL_JWT_SECRET" not in os.environ
    secret = settings.secret("INTERNAL_JWT_SECRET", settings.jwt_signing_key)
    assert secret == Secret(file=str(secret_file)) and secret.reveal() == STRONG_SECRET
    assert load_settings().jwt_signing_key == STRONG_SECRET  # a second load, as a child's, works


def test_a_secret_from_the_environment_reaches_resources_by_its_name(monkeypatch) -> None:
    for variable, value in {**REAL_SERVICES, "INTERNAL_JWT_SECRET": STRONG_SECRET}.items():
        monkeypatch.setenv(variable, value)
    settings = load_settings()
    assert settings.secret("INTERNAL_JWT_SECRET", settings.jwt_signing_key) == Secret(
        value=dg.EnvVar("INTERNAL_JWT_SECRET")
    )


def test_only_one_trailing_newline_is_stripped_from_a_secret_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_bytes(b"smtp-pass\n\n")
    assert read_secret_file(str(secret_file)) == "smtp-pass\n"
    secret_file.write_bytes(b"smtp-pass\r\n")
    assert read_secret_file(str(secret_file)) == "smtp-pass"


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"OPS_ALERT_WEBHOOK_URL": "http://hooks.example.com/x"}, "OPS_ALERT_WEBHOOK_URL: must be https://"),
        ({"OPS_ALERT_WEBHOOK_URL": "https://hooks.example.com/x y"}, "OPS_ALERT_WEBHOOK_URL: must be an https:// URL"),
        (
            {"OPS_ALERT_WEBHOOK_URL": "https://hooks.example.com/x", "OPS_ALERT_WEBHOOK_SECRET": "short"},
            "OPS_ALERT_WEBHOOK_SECRET: must be at least 32 bytes",
        ),
        (
            {"OPS_ALERT_WEBHOOK_SECRET": STRONG_SECRET},
            "OPS_ALERT_WEBHOOK_SECRET: set, but OPS_ALERT_WEBHOOK_URL is not",
        ),
    ],
)
def test_the_alert_webhook_is_refused_unless_it_is_safe(environment: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(environment)
    assert expected in str(raised.value)
    assert "hooks.example.com/x" not in str(raised.value)  # the URL is a secret: never echoed


def test_the_alert_webhook_url_may_come_from_a_file_and_loopback_may_be_plain_http(tmp_path: Path) -> None:
    url_file = tmp_path / "hook"
    url_file.write_text("https://hooks.slack.com/services/T0/B0/token\n")
    settings = load_settings({"OPS_ALERT_WEBHOOK_URL_FILE": str(url_file)})
    assert settings.secret("OPS_ALERT_WEBHOOK_URL", "x") == Secret(file=str(url_file))
    assert load_settings({"OPS_ALERT_WEBHOOK_URL": "http://127.0.0.1:9000/hook"}).ops_alert_webhook_url is not None
