"""The code location's definitions, one folder per business area.

Each job is one module here (`defs/<area>/<job>.py`): its assets, its job, its schedule
time and its sensors, with their names as constants, and a `definitions(options)` that
returns them as a `dg.Definitions`. `build_definitions` finds every such module and merges
them, so adding a job is adding a module (and its test). They are built from the settings,
because the business time zone shapes every partition and schedule. A module an area's
jobs share is private (`_dues.py`); any other module without `definitions` is refused,
so a file meant as a job is never ignored without a word.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import dagster as dg

from cron_pipelines.defs.services_data import SERVICES_DATA
from cron_pipelines.factory.daily import DailyOptions
from cron_pipelines.resources import build_resources
from cron_pipelines.settings import Settings


class DefsLayoutError(Exception):
    """A module under defs/ that is neither a job module nor an area's private helper."""


def job_modules(package: ModuleType | None = None) -> list[ModuleType]:
    """Every job module of the business-area folders of `package` (this one): it has `definitions(options)`."""
    root = package or importlib.import_module(__name__)
    modules = []
    for area in pkgutil.iter_modules(root.__path__, f"{root.__name__}."):
        if not area.ispkg:
            continue
        package = importlib.import_module(area.name)
        for module_info in pkgutil.iter_modules(package.__path__, f"{area.name}."):
            if module_info.name.rpartition(".")[2].startswith("_"):
                continue  # shared by the area's jobs
            module = importlib.import_module(module_info.name)
            if not callable(getattr(module, "definitions", None)):
                raise DefsLayoutError(
                    f"{module_info.name} has no `definitions(options)`: a job module needs one "
                    "(returning its assets, job, schedule and sensors); a module the area's jobs share is "
                    "named with a leading underscore"
                )
            modules.append(module)
    return modules


def build_definitions(settings: Settings) -> dg.Definitions:
    options = DailyOptions.from_settings(settings)
    return dg.Definitions.merge(
        dg.Definitions(assets=SERVICES_DATA, resources=build_resources(settings)),
        *(module.definitions(options) for module in job_modules()),
    )
