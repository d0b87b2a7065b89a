"""The Celery app of the shard workers (docs/production.md, "Scaling out"), dagster-celery's own task on our broker:

    celery -A cron_pipelines.deployment.celery_app worker -Q dagster --concurrency 2 --prefetch-multiplier 1

A worker takes the steps of sharded runs (DELIVERY_EXECUTOR=celery) from CELERY_BROKER_URL,
and runs each against the Dagster instance its run names, which workers on other machines
reach as the daemon does (PostgreSQL). It builds the code location from its own environment:
it must hold the same variables as the daemon's, or the run's steps would not be found.
"""

from dagster_celery.config import DEFAULT_CONFIG, dict_wrapper
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from cron_pipelines.deployment.executors import CELERY_SETTINGS
from cron_pipelines.settings import load_settings

_settings = load_settings()
app = make_app(
    {
        "broker": _settings.celery_broker_url.get_secret_value(),
        "backend": _settings.celery_backend_url.get_secret_value(),
        "config_source": dict_wrapper({**DEFAULT_CONFIG, **CELERY_SETTINGS}),
    }
)
execute_plan = create_task(app)
