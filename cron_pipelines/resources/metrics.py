"""Prometheus metrics of one run, pushed to a Pushgateway when the run ends.

Runs are batch jobs, so their metrics are pushed rather than scraped: each run
collects into a registry of its own and pushes it, grouped by Dagster job (and
shard, for one step of a fanned-out delivery), when
PROMETHEUS_PUSHGATEWAY_URL is set. A push that fails is logged, never fatal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from dagster import ConfigurableResource, InitResourceContext
from prometheus_client import CollectorRegistry, Counter, Histogram, push_to_gateway
from pydantic import Field, PrivateAttr

from cron_pipelines.clients.http import ServiceClient
from cron_pipelines.delivery.stats import DeliveryStats

logger = logging.getLogger("cron_pipelines.metrics")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class RunMetrics:
    """The metrics one run collects; also the request observer of its service clients."""

    def __init__(self, job: str) -> None:
        self.job = job
        # The shards whose steps this process ran. A shard's step in a process of its own pushes its
        # own group, or the shards would overwrite each other; in-process, one push has them all.
        self.shards: set[str] = set()
        self.registry = CollectorRegistry()
        self.notifications = Counter(
            "cron_pipelines_notifications",
            "Notifications handled, by kind and outcome.",
            ["job", "kind", "outcome"],
            registry=self.registry,
        )
        self.requests = Counter(
            "cron_pipelines_service_requests",
            "Requests to the internal services, by answer status.",
            ["service", "endpoint", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "cron_pipelines_service_request_duration_seconds",
            "Latency of requests to the internal services.",
            ["service", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "cron_pipelines_service_retries",
            "Requests retried after a transient failure.",
            ["service", "endpoint"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "cron_pipelines_run_duration_seconds",
            "Wall time of a run, from resource set-up to tear-down.",
            ["job"],
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )

    # -- the service clients' observer --------------------------------------------------

    def request_finished(self, *, service: str, endpoint: str, status: str, seconds: float) -> None:
        self.requests.labels(service, endpoint, status).inc()
        self.request_seconds.labels(service, endpoint).observe(seconds)

    def request_retried(self, *, service: str, endpoint: str) -> None:
        self.retries.labels(service, endpoint).inc()

    # -- the rest ------------------------------------------------------------------------

    def count_notifications(self, counts_by_kind: Mapping[str, Mapping[str, int]]) -> None:
        for kind, counts in counts_by_kind.items():
            for outcome, count in counts.items():
                self.notifications.labels(self.job, kind, outcome).inc(count)

    def push(self, gateway_url: str) -> None:
        push_to_gateway(
            gateway_url,
            job="cron_pipelines",
            grouping_key={
                "dagster_job": self.job,
                **({"shard": next(iter(self.shards))} if len(self.shards) == 1 else {}),
            },
            registry=self.registry,
            timeout=10,
        )


class MetricsResource(ConfigurableResource):
    """Collects a run's Prometheus metrics and pushes them to `pushgateway_url` at the end of the run."""

    pushgateway_url: str | None = Field(None, description="PROMETHEUS_PUSHGATEWAY_URL; unset: nothing is pushed.")

    _run: RunMetrics | None = PrivateAttr(default=None)
    _started: float = PrivateAttr(default=0.0)
    _deliveries: list[DeliveryStats] = PrivateAttr(default_factory=list)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._run = RunMetrics(job=context.run.job_name if context.run else "unknown")
        self._started = time.perf_counter()

    @property
    def run(self) -> RunMetrics:
        if self._run is None:
            raise RuntimeError("metrics resource used outside of a run")
        return self._run

    def observe(self, *clients: ServiceClient) -> None:
        """Count these clients' requests, latencies and retries in this run's metrics."""
        for client in clients:
            client.observer = self.run

    def label_shard(self, shard: str) -> None:
        """This step delivers one shard of a fanned-out delivery (`2_of_4`): its metrics are pushed as that shard's."""
        self.run.shards.add(shard)

    def track(self, stats: DeliveryStats) -> None:
        """Count these notifications when the run ends, whether it succeeds or fails."""
        self._deliveries.append(stats)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._run is None:
            return
        for stats in self._deliveries:
            self._run.count_notifications(stats.counts_by_kind)
        self._deliveries.clear()
        self._run.run_seconds.labels(self._run.job).observe(time.perf_counter() - self._started)
        if self.pushgateway_url:
            try:
                self._run.push(self.pushgateway_url)
            except OSError as exc:  # metrics are for watching runs, not a reason to fail one
                (context.log or logger).warning("could not push metrics to %s: %s", self.pushgateway_url, exc)
        self._run = None
