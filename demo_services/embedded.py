"""The demo services served in-process, for `dagster dev` with no service URL configured.

Every process that needs them (webserver, daemon, each run worker) starts its own
pair of loopback servers on one shared SQLite file, so runs, re-runs and backfills
in separate processes see one consistent world. The file is seeded for today the
first time it is created.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from cron_pipelines.clients.tokens import TokenIssuer
from demo_services.auth import TokenVerifier
from demo_services.mongo_app import SERVICE as MONGO_SERVICE
from demo_services.mongo_app import create_mongo_app
from demo_services.seed import seed_demo_data
from demo_services.server import ServiceServer
from demo_services.sql_app import create_sql_app
from demo_services.store import DemoStore

_lock = threading.Lock()
_servers: dict[tuple[str, Path, TokenVerifier], ServiceServer] = {}


def open_demo_store(path: Path, *, timezone: str, reseed: bool = False) -> tuple[DemoStore, dict[str, int]]:
    """The demo store at `path`, seeded for today in `timezone` when new (or when `reseed`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two processes starting at once must not both seed: serialise on a lock file.
    with open(path.with_name(path.name + ".lock"), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        store = DemoStore(path)
        if reseed:
            store.reset()
        seeded: dict[str, int] = {}
        if not any(store.table_counts().values()):
            seeded = seed_demo_data(store, datetime.now(ZoneInfo(timezone)).date(), timezone=timezone)
    return store, seeded


def embedded_service_url(service: str, db_path: Path, issuer: TokenIssuer, *, timezone: str) -> str:
    """The URL of this process's embedded `service`, started on first use."""
    verifier = TokenVerifier.for_issuer(issuer, service)
    key = (service, db_path.resolve(), verifier)
    with _lock:
        server = _servers.get(key)
        if server is None:
            store, _ = open_demo_store(db_path, timezone=timezone)
            app = (create_sql_app if service != MONGO_SERVICE else create_mongo_app)(store, verifier)
            server = _servers[key] = ServiceServer(app).start()
        return server.url


def embedded_services(db_path: Path, *, timezone: str) -> Callable[[str, TokenIssuer], str]:
    """What `cron_pipelines.clients.in_process` starts a service with: this process's embedded stand-in."""
    return lambda service, issuer: embedded_service_url(service, db_path, issuer, timezone=timezone)
