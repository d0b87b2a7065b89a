"""A fresh PostgreSQL database per test, created and dropped on the local server."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from psycopg2 import sql

SERVER = {
    "host": os.environ.get("CRON_PIPELINES_TEST_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("CRON_PIPELINES_TEST_PG_PORT", "5432")),
    "user": os.environ.get("CRON_PIPELINES_TEST_PG_USER", "postgres"),
    "password": os.environ.get("CRON_PIPELINES_TEST_PG_PASSWORD", ""),
}


def _admin():
    connection = psycopg2.connect(dbname="postgres", **SERVER)
    connection.autocommit = True
    return connection


@contextmanager
def fresh_database() -> Iterator[dict[str, str]]:
    """A new empty database; yields the DAGSTER_PG_* variables that point deploy/dagster.yaml at it."""
    name = f"cron_pipelines_test_{uuid.uuid4().hex[:12]}"
    connection = _admin()
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()
    try:
        yield {
            "DAGSTER_PG_HOST": SERVER["host"],
            "DAGSTER_PG_PORT": str(SERVER["port"]),
            "DAGSTER_PG_USER": SERVER["user"],
            "DAGSTER_PG_PASSWORD": SERVER["password"],
            "DAGSTER_PG_DB": name,
        }
    finally:
        connection = _admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        finally:
            connection.close()


def restart_postgres() -> None:
    """Restart the local cluster (Debian's pg_ctlcluster) and wait until it answers again.

    Every open connection is dropped, as a failover or a maintenance restart does."""
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            _admin().close()
            return
        except psycopg2.OperationalError:
            time.sleep(0.2)
    raise AssertionError("PostgreSQL did not come back within 60 s")
