"""defs/ holds business-area folders of job modules; a module that is neither job nor private helper is refused."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cron_pipelines.defs import DefsLayoutError, job_modules


@pytest.fixture
def defs_package(tmp_path: Path) -> Iterator[Path]:
    """A throwaway defs package on sys.path: `fake_defs/area/`."""
    area = tmp_path / "fake_defs" / "area"
    area.mkdir(parents=True)
    (tmp_path / "fake_defs" / "__init__.py").write_text("")
    (area / "__init__.py").write_text("")
    (area / "job.py").write_text("def definitions(options):\n    return None\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield area
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.startswith("fake_defs")]:
            del sys.modules[name]


def test_every_job_module_of_the_real_areas_is_found() -> None:
    names = {module.__name__.rpartition(".")[2] for module in job_modules()}
    assert names == {
        "payment_reminders", "overdue_dues", "inactivity_warnings", "deactivations", "verify_employees",
        "ledger_health", "ops_alerts",
    }  # fmt: skip


def test_a_private_helper_is_skipped_and_a_module_without_definitions_is_refused(defs_package: Path) -> None:
    (defs_package / "_shared.py").write_text("HELPER = 1\n")
    assert [module.__name__ for module in job_modules(importlib.import_module("fake_defs"))] == ["fake_defs.area.job"]
    (defs_package / "forgotten.py").write_text("import dagster as dg\n\n@dg.asset\ndef forgotten():\n    ...\n")
    with pytest.raises(DefsLayoutError, match=r"fake_defs.area.forgotten has no `definitions\(options\)`"):
        job_modules(importlib.import_module("fake_defs"))
