"""The code location (`cron_pipelines.definitions:defs`), built from the environment when Dagster asks for it."""

import dagster as dg

from cron_pipelines.defs import build_definitions
from cron_pipelines.settings import load_settings


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
