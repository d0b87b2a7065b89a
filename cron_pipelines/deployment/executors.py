"""Where the steps of a sharded delivery run: DELIVERY_EXECUTOR (docs/production.md, "Scaling out").

- `multiprocess`: one process per step on the run worker's machine (the default).
- `celery`: each step is a task on Redis (CELERY_BROKER_URL), run by whichever Celery worker
  takes it; workers on several machines share the Dagster instance's PostgreSQL storage.
- `k8s`: one Kubernetes Job (pod) per step, launched by the run's pod.
- `in_process`: every shard one after the other in the run worker (for tests and debugging).

Only the sharded jobs use it: a job of one step gains nothing from a step executor.
"""

from __future__ import annotations

import dagster as dg

from cron_pipelines.settings import Settings

# Celery settings of both ends, on top of dagster-celery's defaults. A step's task is acknowledged
# when it ends, not when a worker takes it, and requeued if the process running it dies (an OOM
# kill, a lost pod): another worker runs the step again, and the ledger gives it only what the
# lost attempt had not claimed (docs/production.md, "Scaling out").
CELERY_SETTINGS = {"task_acks_late": True, "task_reject_on_worker_lost": True, "worker_prefetch_multiplier": 1}


# Each shard's pod gets what a run's pod gets (deploy/helm/values.yaml): memory per shard stays flat.
K8S_STEP_POD = {
    "container_config": {"resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}}
}


def delivery_executor(settings: Settings) -> dg.ExecutorDefinition:
    shards = settings.delivery_shards
    if settings.delivery_executor == "in_process":
        return dg.in_process_executor
    if settings.delivery_executor == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": shards}, name="shard_processes")
    if settings.delivery_executor == "celery":
        from dagster_celery import celery_executor  # the `deploy` extra

        return celery_executor.configured(
            {
                "broker": _string_source(settings, "CELERY_BROKER_URL", settings.celery_broker_url.get_secret_value()),
                "backend": _string_source(
                    settings, "CELERY_BACKEND_URL", settings.celery_backend_url.get_secret_value()
                ),
                "config_source": CELERY_SETTINGS,
            },
            name="shard_celery",
        )
    from dagster_k8s import k8s_job_executor  # the `deploy` extra

    return k8s_job_executor.configured({"max_concurrent": shards, "step_k8s_config": K8S_STEP_POD}, name="shard_pods")


def _string_source(settings: Settings, variable: str, value: str) -> str | dict[str, str]:
    """A secret read from the environment goes into the executor config by name, not by value.

    One read from a file goes by value: the executor's config is set here, in code, and
    Dagster keeps it with the definition in memory, not in the run storage."""
    secret = settings.secret(variable, value)
    return {"env": variable} if isinstance(secret.value, dg.EnvVar) else value
