"""Deployment tests run on a fresh PostgreSQL database each, with deploy/dagster.yaml as the instance."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cron_pipelines_tests.support.postgres import fresh_database

PROJECT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PostgresHome:
    """A DAGSTER_HOME with deploy/dagster.yaml, and the environment pointing it at a fresh database."""

    path: Path
    environment: dict[str, str]


@pytest.fixture
def postgres_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresHome]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with fresh_database() as database:
        environment = {**database, "DAGSTER_HOME": str(home)}
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        for name in ("SQL_SERVICE_URL", "MONGO_SERVICE_URL", "MAILER_BACKEND"):
            monkeypatch.delenv(name, raising=False)
        yield PostgresHome(home, {**os.environ})
