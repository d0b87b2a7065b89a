"""The code location's definitions, one folder per business area.

Each job is one module here (`defs/<area>/<job>.py`): its assets, its job, its schedule
time and its sensors, with their names as constants, and a `definitions(options)` that
returns them as a `dg.Definitions`. `build_definitions` finds every such module and merges
them, so adding a job is adding a module (and its test). They are built from the settings,
because the business time zone shapes every partition and schedule.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import dagster as dg

from cron_pipelines.defs.daily import DailyOptions
from cron_pipelines.defs.services_data import SERVICES_DATA
from cron_pipelines.resources import build_resources
from cron_pipelines.settings import Settings


def job_modules() -> list[ModuleType]:
    """Every module of a business-area folder that defines something: it has `definitions(options)`."""
    modules = []
    for area in pkgutil.iter_modules(__path__, f"{__name__}."):
        if not area.ispkg:
            continue
        package = importlib.import_module(area.name)
        for module_info in pkgutil.iter_modules(package.__path__, f"{area.name}."):
            module = importlib.import_module(module_info.name)
            if callable(getattr(module, "definitions", None)):
                modules.append(module)
    return modules


def build_definitions(settings: Settings) -> dg.Definitions:
    options = DailyOptions.from_settings(settings)
    return dg.Definitions.merge(
        dg.Definitions(assets=SERVICES_DATA, resources=build_resources(settings)),
        *(module.definitions(options) for module in job_modules()),
    )
