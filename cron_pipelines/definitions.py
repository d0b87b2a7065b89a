"""The code location (`cron_pipelines.definitions:defs`), configured from the environment."""

from cron_pipelines.assembly import build_definitions
from cron_pipelines.settings import load_settings

defs = build_definitions(load_settings())
