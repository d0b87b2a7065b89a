"""`cron-pipelines health`: is everything this deployment needs reachable and alive right now?

Each check answers ok or not with a one-line detail and its duration: the instance's
storage, fresh daemon heartbeats, both services with a valid JWT, the SMTP server's
greeting (or a writable outbox).
"""

from __future__ import annotations

import smtplib
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cron_pipelines.settings import Settings

# The daemon writes a heartbeat every 20 s; Dagster's UI calls one older than 60 s stale.
HEARTBEAT_TOLERANCE_SECONDS = 60.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float


def _timed(name: str, check: Callable[[], str]) -> CheckResult:
    started = time.perf_counter()
    try:
        detail, ok = check(), True
    except Exception as exc:  # a health check reports every failure, it never raises
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return CheckResult(name, ok, detail, round(time.perf_counter() - started, 3))


def check_instance(instance: Any) -> CheckResult:
    def check() -> str:
        instance.get_runs(limit=1)
        return f"{type(instance.run_storage).__name__} reachable"

    return _timed("instance storage", check)


def check_daemon(instance: Any, now: float | None = None) -> CheckResult:
    def check() -> str:
        heartbeats = instance.get_daemon_heartbeats()
        required = instance.get_required_daemon_types()
        if not heartbeats:
            raise RuntimeError("no daemon heartbeat: is dagster-daemon running?")
        current = time.time() if now is None else now
        stale = sorted(
            daemon
            for daemon in required
            if daemon not in heartbeats or current - heartbeats[daemon].timestamp > HEARTBEAT_TOLERANCE_SECONDS
        )
        if stale:
            raise RuntimeError(f"stale or missing heartbeats: {', '.join(stale)}")
        oldest = max(current - heartbeats[daemon].timestamp for daemon in required)
        return f"{len(required)} daemons alive, oldest heartbeat {oldest:.0f} s ago"

    return _timed("daemon heartbeats", check)


def check_services(settings: Settings) -> list[CheckResult]:
    from cron_pipelines.definitions import use_embedded_demo
    from cron_pipelines.resources import build_resources

    use_embedded_demo(settings)
    resources = build_resources(settings)
    probes: dict[str, tuple[str, str, dict[str, Any]]] = {
        "sql_service": ("GET", "/v1/dues", {"status": "pending", "limit": 1}),
        "mongo_service": ("GET", "/v1/notifications", {"limit": 1}),
    }
    results = []
    for key, (method, path, params) in probes.items():
        resource = resources[key].model_copy(update={"max_attempts": 1})  # report, don't retry

        def check(
            resource: Any = resource, method: str = method, path: str = path, params: dict[str, Any] = params
        ) -> str:
            with resource.process_config_and_initialize_cm() as initialized:
                initialized.client.request(method, path, params=params)
                return f"{initialized.client.service} answered {method} {path} with a valid JWT"

        results.append(_timed(key.replace("_", "-"), check))
    return results


def check_mail(settings: Settings) -> CheckResult:
    if settings.mailer_backend == "outbox":

        def outbox() -> str:
            directory = Path(settings.outbox_dir)
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".health-"):
                pass
            return f"outbox {directory} is writable"

        return _timed("mail (outbox)", outbox)

    def smtp() -> str:
        timeout = min(settings.smtp_timeout_seconds, 10.0)
        context = ssl.create_default_context()
        if settings.smtp_security == "ssl":
            server: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=timeout, context=context
            )
        else:
            server = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        with server:
            code, greeting = server.ehlo()
            if code != 250:
                raise RuntimeError(f"EHLO answered {code}")
            if settings.smtp_security == "starttls":
                server.starttls(context=context)
            if settings.smtp_username:
                server.login(
                    settings.smtp_username, settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                )
            return f"{settings.smtp_host}:{settings.smtp_port} greeted: {greeting.decode(errors='replace').splitlines()[0]}"

    return _timed("mail (smtp)", smtp)


def run_health_checks(settings: Settings, instance: Any) -> list[CheckResult]:
    return [check_instance(instance), check_daemon(instance), *check_services(settings), check_mail(settings)]


def report(results: list[CheckResult]) -> dict[str, Any]:
    return {"healthy": all(result.ok for result in results), "checks": [asdict(result) for result in results]}
