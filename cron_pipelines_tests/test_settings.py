"""The settings model: docs/services.md, Configuration defaults, and start-up errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cron_pipelines.settings import DEMO_JWT_SECRET, SettingsError, load_settings
from cron_pipelines_tests.support.keys import private_key_pem

REAL_SERVICES = {"SQL_SERVICE_URL": "https://sql.internal", "MONGO_SERVICE_URL": "https://mongo.internal/"}
STRONG_SECRET = "s" * 40


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
    settings = load_settings({"INTERNAL_JWT_SECRET": STRONG_SECRET, "SMTP_USERNAME": "u", "SMTP_PASSWORD": password})
    assert STRONG_SECRET not in repr(settings) and password not in repr(settings)
    assert STRONG_SECRET not in str(settings.model_dump()) and password not in str(settings.model_dump())
