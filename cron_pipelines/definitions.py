"""The code location (`cron_pipelines.definitions:defs`), built from the environment when Dagster asks for it.

Where each deployment's resource set is chosen: with service URLs set, the real services;
with none, the embedded demo services (the `demo` extra), served by each process itself.
"""

import dagster as dg

from cron_pipelines.clients.in_process import serve_in_process
from cron_pipelines.defs import build_definitions
from cron_pipelines.settings import Settings, SettingsError, load_settings


def use_embedded_demo(settings: Settings) -> None:
    """With no service URL set, this process serves the stand-in services itself, on the demo's SQLite file."""
    if settings.uses_real_services:
        return
    try:
        from demo_services.embedded import embedded_services  # the `demo` extra
    except ImportError as exc:
        raise SettingsError(
            "SQL_SERVICE_URL, MONGO_SERVICE_URL: unset, so the embedded demo services are used, but they are not "
            f"installed ({exc.name} is missing): set the URLs, or install the `demo` extra"
        ) from None
    serve_in_process(embedded_services(settings.demo_services_db_path, timezone=settings.cron_timezone))


def definitions_for(settings: Settings) -> dg.Definitions:
    use_embedded_demo(settings)
    return build_definitions(settings)


@dg.definitions
def defs() -> dg.Definitions:
    return definitions_for(load_settings())
