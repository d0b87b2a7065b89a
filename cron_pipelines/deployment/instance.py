"""The production Dagster instance: Dagster's own, with connections that survive a PostgreSQL restart.

The webserver keeps a pool of database connections. After PostgreSQL restarts (an upgrade,
a failover) every pooled connection is dead, and without a check the next launches fail
with OperationalError, one of them leaving a run NOT_STARTED that is retried later although
the operator was told it failed. SQLAlchemy's pessimistic disconnect handling checks a
connection as it leaves the pool and replaces a dead one. Every process of the deployment
builds this instance (webserver, daemon, code server, run workers), so all get the check.
"""

from __future__ import annotations

import contextlib
from typing import Any

import dagster as dg
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.pool import Pool


def ping_on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Raise DisconnectionError for a dead connection: the pool then reconnects and checks again."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT 1")
    except Exception as exc:
        raise sqlalchemy.exc.DisconnectionError() from exc
    finally:
        with contextlib.suppress(Exception):  # the connection is already gone
            cursor.close()


class ProductionInstance(dg.DagsterInstance):
    """DagsterInstance, unchanged but for the connection check; configured by dagster.yaml as usual."""

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}  # no settings of its own

    @staticmethod
    def config_defaults(base_dir: str) -> Any:
        # An instance class's config defaults are InstanceRef's: not exported by dagster's public API.
        from dagster._core.instance.ref import InstanceRef

        return InstanceRef.config_defaults(base_dir)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not event.contains(Pool, "checkout", ping_on_checkout):
            event.listen(Pool, "checkout", ping_on_checkout)
        super().__init__(*args, **kwargs)
