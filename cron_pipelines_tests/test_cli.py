"""`cron-pipelines run` and `cron-pipelines audit` as an operator and an auditor use them: real processes,
the embedded demo, a real Dagster instance in DAGSTER_HOME."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cron_pipelines.cli import mask_recipient
from cron_pipelines.models.notification import NotificationKind


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DAGSTER_HOME": str(home)}
    for name in ("SQL_SERVICE_URL", "MONGO_SERVICE_URL", "MAILER_BACKEND"):
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "cron_pipelines.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text((Path(__file__).parents[1] / "deploy" / "dagster.dev.yaml").read_text())
    return home


@pytest.fixture(scope="module")
def reminder_run(home: Path) -> str:
    today = datetime.now(UTC).date().isoformat()
    result = _cli(home, "run", "send_payment_reminders", "--date", today)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"send_payment_reminders {today} succeeded run_id=" in result.stdout
    run_id = result.stdout.split("run_id=")[1].split()[0]
    # The run's request log: a JSON line per service request on stderr.
    requests = [json.loads(line) for line in result.stderr.splitlines() if '"cron_pipelines.requests"' in line]
    assert requests and {line["run_id"] for line in requests} == {run_id}
    return run_id


def test_run_goes_through_the_instance_and_the_ledger(home: Path, reminder_run: str) -> None:
    today = datetime.now(UTC).date().isoformat()
    again = _cli(home, "run", "send_payment_reminders", "--date", today)
    assert again.returncode == 0
    counts = json.loads(again.stdout.splitlines()[0].split(" ", 4)[4])
    assert counts["payment_reminders"]["sent"] == 0 and counts["payment_reminders"]["duplicate"] > 0
    assert (home / "storage").exists()  # the runs are in this instance's history


def test_what_a_run_writes_under_dagster_home_is_private_whatever_the_umask(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "dagster.yaml").write_text((Path(__file__).parents[1] / "deploy" / "dagster.dev.yaml").read_text())
    today = datetime.now(UTC).date().isoformat()
    environment = {**os.environ, "DAGSTER_HOME": str(home)}
    for name in ("SQL_SERVICE_URL", "MONGO_SERVICE_URL", "MAILER_BACKEND"):
        environment.pop(name, None)
    result = subprocess.run(
        [
            "sh",
            "-c",
            f'umask 022 && exec "{sys.executable}" -m cron_pipelines.cli run send_payment_reminders --date {today}',
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    written = [path for path in home.rglob("*") if path.name != "dagster.yaml"]
    assert any(path.suffix == ".eml" for path in written) and any("storage" in path.parts for path in written)
    assert (home.stat().st_mode & 0o777) == 0o700
    readable = [
        f"{path.relative_to(home)} {oct(path.stat().st_mode & 0o777)}"
        for path in written
        if not path.is_symlink() and path.stat().st_mode & 0o077
    ]
    assert readable == []


def test_audit_a_user_shows_kind_status_masked_recipient_and_the_run(home: Path, reminder_run: str) -> None:
    result = _cli(home, "audit", "--user", "usr_pending_in_7d", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    (row,) = [r for r in rows if r["run_id"] == reminder_run]
    assert row["kind"] == "payment_reminder" and row["status"] == "sent"
    assert row["idempotency_key"].startswith("payment_reminder:due_pending_in_7d:")
    assert "***@" in row["recipient"]
    assert row["run_status"] == "SUCCESS" and row["run_job"] == "send_payment_reminders"
    assert row["run_trigger"] == "cli"
    assert row["run_url"] == f"http://localhost:3000/runs/{reminder_run}"
    assert row["message_id"] and row["sent_at"]

    assert "cron_pipelines.requests" not in result.stderr  # audit answers on stdout only
    table = _cli(home, "audit", "--user", "usr_pending_in_7d")
    assert "payment_reminder" in table.stdout and reminder_run in table.stdout
    shown = _cli(home, "audit", "--user", "usr_pending_in_7d", "--json", "--show-recipients")
    assert "***" not in json.loads(shown.stdout)[0]["recipient"]


def test_audit_by_key_and_by_run(home: Path, reminder_run: str) -> None:
    by_run = json.loads(_cli(home, "audit", "--run", reminder_run, "--json").stdout)
    assert by_run and {row["run_id"] for row in by_run} == {reminder_run}
    skipped = [row for row in by_run if row["status"] == "skipped"]
    assert {row["error"] for row in skipped} >= {"missing e-mail address"}
    key = by_run[0]["idempotency_key"]
    (only,) = json.loads(_cli(home, "audit", "--key", key, "--json").stdout)
    assert only["idempotency_key"] == key
    nothing = _cli(home, "audit", "--key", "payment_reminder:none:2026-01-01:7")
    assert nothing.returncode == 3 and "no notifications match" in nothing.stdout


def test_bad_configuration_is_reported_not_raised(home: Path) -> None:
    environment = {**os.environ, "DAGSTER_HOME": str(home), "MAILER_BACKEND": "pigeon"}
    result = subprocess.run(
        [sys.executable, "-m", "cron_pipelines.cli", "audit"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "MAILER_BACKEND='pigeon'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("address", "masked"), [("asha@example.com", "a***@example.com"), (None, ""), ("x", "***")])
def test_mask_recipient(address: str | None, masked: str) -> None:
    assert mask_recipient(address) == masked


def test_audit_filters_by_kind_status_and_day(home: Path, reminder_run: str) -> None:
    today = datetime.now(UTC).date().isoformat()
    sent = json.loads(
        _cli(home, "audit", "--kind", "payment_reminder", "--status", "sent", "--since", today, "--json").stdout
    )
    assert sent and {(row["kind"], row["status"]) for row in sent} == {("payment_reminder", "sent")}
    assert reminder_run in {row["run_id"] for row in sent}
    everything = json.loads(_cli(home, "audit", "--since", today, "--json").stdout)
    assert {row["status"] for row in everything} >= {"sent", "skipped"} and len(everything) > len(sent)
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    assert _cli(home, "audit", "--since", tomorrow).returncode == 3  # nothing claimed yet


def test_run_over_a_date_range_runs_each_day_once(home: Path, reminder_run: str) -> None:
    today = datetime.now(UTC).date()
    first = (today - timedelta(days=2)).isoformat()
    result = _cli(home, "run", "send_payment_reminders", "--from", first, "--to", today.isoformat())
    assert result.returncode == 0, result.stderr
    days = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("send_payment_reminders ")]
    assert days == [(today - timedelta(days=offset)).isoformat() for offset in (2, 1, 0)]
    today_counts = json.loads(result.stdout.splitlines()[-2].split(" ", 4)[4])
    assert today_counts["payment_reminders"]["sent"] == 0  # today's reminders went out in the first run


def test_preview_renders_every_kind_to_messages_the_strict_parser_accepts(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "preview"
    result = _cli(home, "preview", "all", "--out", str(out))
    assert result.returncode == 0, result.stderr
    kinds = [kind.value for kind in NotificationKind]
    assert sorted(path.name for path in out.iterdir()) == sorted(
        f"{k}.en.{ext}" for k in kinds for ext in ("eml", "html")
    )
    for kind in kinds:
        message = email.message_from_bytes((out / f"{kind}.en.eml").read_bytes(), policy=email.policy.strict)
        assert not message.defects and message["X-Notification-Kind"] == kind
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert html == (out / f"{kind}.en.html").read_text(encoding="utf-8")
        assert "{{" not in text + html and "{%" not in text + html  # every placeholder rendered
        assert f"{kind + '.en':<34} {message['Subject']}" in result.stdout
        optional = kind not in ("account_deactivated", "verification_result", "ops_alert")
        assert (message["List-Unsubscribe"] is not None) is optional, kind
        assert ("Unsubscribe</a>" in html) is optional, kind


def test_preview_of_a_german_digest(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "preview"
    result = _cli(home, "preview", "payment_reminder", "--locale", "de-DE", "--digest", "--out", str(out))

    assert result.returncode == 0, result.stderr
    message = email.message_from_bytes(
        (out / "payment_reminder.digest.de-DE.eml").read_bytes(), policy=email.policy.strict
    )
    assert not message.defects
    assert len(message.get_all("X-Notification-Id")) == 3
    assert str(message["Subject"]).startswith("Anstehende Zahlungen: 3, insgesamt ")
    assert "\u00a0€" in str(message["Subject"])  # Babel's euro figures for de-DE
    assert 'lang="de"' in (out / "payment_reminder.digest.de-DE.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (("payment_reminder", "--locale", "xx-QQ"), "unknown locale: xx-QQ"),
        (("ops_alert", "--digest"), "ops_alert has no digest"),
    ],
)
def test_preview_refuses_an_unknown_locale_and_a_digest_of_a_kind_without_one(
    home: Path, tmp_path: Path, arguments: tuple[str, ...], complaint: str
) -> None:
    result = _cli(home, "preview", *arguments, "--out", str(tmp_path / "preview"))

    assert result.returncode == 2 and complaint in result.stderr
    assert not (tmp_path / "preview").exists()
