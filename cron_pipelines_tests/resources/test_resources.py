"""Resources on the embedded demo: what `make dev` runs when no service URL is set."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import dagster as dg
import pytest
from pydantic import ValidationError

from cron_pipelines.definitions import definitions_for, use_embedded_demo
from cron_pipelines.models.payloads import Due
from cron_pipelines.resources import MailerResource, build_resources
from cron_pipelines.settings import load_settings


@pytest.fixture
def demo_settings(tmp_path: Path):
    return load_settings({"DAGSTER_HOME": str(tmp_path)})


def test_with_no_url_the_embedded_demo_is_served_seeded_and_shared(demo_settings, tmp_path: Path) -> None:
    use_embedded_demo(demo_settings)
    resources = build_resources(demo_settings)
    with resources["sql_service"].process_config_and_initialize_cm() as sql:
        dues = [item for item in sql.client.iter_dues(statuses=["pending"])]
        first_url = str(sql.client._http.base_url)
    assert (tmp_path / "demo_services.sqlite3").exists()
    assert any(isinstance(item, Due) and item.id == "due_pending_in_7d" for item in dues)
    assert first_url.startswith("http://127.0.0.1:")
    with resources["sql_service"].process_config_and_initialize_cm() as again:
        assert str(again.client._http.base_url) == first_url  # one embedded server per process
        assert len(list(again.client.iter_dues(statuses=["pending"]))) == len(dues)  # seeded once


def test_each_job_runs_on_the_embedded_demo_and_fills_the_outbox(demo_settings, tmp_path: Path) -> None:
    defs = definitions_for(demo_settings)
    today = datetime.now(UTC).date().isoformat()
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        for job in (
            "mark_overdue_dues",
            "send_payment_reminders",
            "notify_inactive_users",
            "deactivate_inactive_users",
            "verify_employees",
            "maintenance",
        ):
            assert defs.resolve_job_def(job).execute_in_process(partition_key=today, instance=instance).success, job
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    kinds = {email.message_from_bytes(f.read_bytes(), policy=policy.default)["X-Notification-Kind"] for f in files}
    assert kinds == {
        "payment_reminder",
        "overdue_notice",
        "inactivity_warning",
        "account_deactivated",
        "verification_result",
        "verification_reminder",
    }
    ids = [email.message_from_bytes(f.read_bytes(), policy=policy.default)["X-Notification-Id"] for f in files]
    assert len(ids) == len(set(ids))
    assert "payment_reminder:due_pending_in_7d:" in " ".join(ids)
    assert not any("due_header_injection" in key or "due_no_email" in key for key in ids)


def test_resources_take_each_setting_from_the_settings_and_refuse_what_they_do_not_define() -> None:
    mailer = build_resources(load_settings({"DAGSTER_HOME": "/tmp/unused", "SMTP_PORT": "2525"}))["mailer"]
    assert (mailer.smtp_port, mailer.backend, mailer.max_connections) == (2525, "outbox", 4)
    with pytest.raises(ValidationError, match="backend"):  # typed like the setting: a Literal, not any string
        MailerResource.model_validate({**mailer.model_dump(), "backend": "pigeon"})
    with pytest.raises(ValidationError, match="smtp_port"):  # no default of its own: the setting's is the one
        MailerResource(**{name: value for name, value in mailer.model_dump().items() if name != "smtp_port"})
