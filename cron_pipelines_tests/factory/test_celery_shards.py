"""Shards on Celery: real Redis, two real Celery workers, PostgreSQL run storage, aiosmtpd.

The run worker is `cron-pipelines run` (the daemon's run worker does the same); its
celery executor puts each step on Redis, and the workers run them against the
instance in PostgreSQL, as workers on other machines would.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis

from cron_pipelines_tests.factory.test_sharded_delivery import DELIVER_STEP, JOB, D, _seed
from cron_pipelines_tests.support.job_world import JobWorld, job_environment
from cron_pipelines_tests.support.postgres import fresh_database
from cron_pipelines_tests.support.services import ServiceWorld
from cron_pipelines_tests.support.smtp_sink import SmtpSink

REPOSITORY = Path(__file__).resolve().parents[2]
REDIS_PORT = int(os.environ.get("CRON_PIPELINES_TEST_REDIS_PORT", "6379"))
REDIS_DB = 11  # the tests' own database on the shared server, emptied before each test


def _terminated_with_this_process() -> None:
    """In the worker, before exec: SIGTERM when the test process dies, however it dies.

    A worker outliving an interrupted test run would take the next run's tasks from the
    shared Redis queue and fail them with the old code (prctl PR_SET_PDEATHSIG, Linux).
    """
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class CeleryWorkers:
    """Celery worker processes of cron_pipelines.deployment.celery_app, each one step at a time."""

    def __init__(self, world: JobWorld, log_dir: Path) -> None:
        self._world = world  # a worker starts with the world's settings of the moment, as the run does
        self._log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self._log_dir / f"{name}.log", "wb")  # noqa: SIM115 - the worker holds it until it exits
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "cron_pipelines.deployment.celery_app",
                "worker",
                "-Q",
                "dagster",
                "-n",
                f"{name}@%h",
                "--concurrency",
                "1",
                "--prefetch-multiplier",
                "1",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            env={**os.environ, **self._world.environment},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_terminated_with_this_process,
        )
        self.processes[name] = process
        return process

    def start_two(self) -> None:
        """Two workers, each running one step at a time, ready to take tasks."""
        self.start("w1")
        self.start("w2")
        self.wait_ready()

    def log(self, name: str) -> str:
        return (self._log_dir / f"{name}.log").read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name in self.processes:
            while "ready." not in self.log(name):
                assert time.monotonic() < deadline, self.log(name)[-3000:]
                time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def celery_world(
    services: ServiceWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[JobWorld, CeleryWorkers]]:
    broker = f"redis://127.0.0.1:{REDIS_PORT}/{REDIS_DB}"
    redis.Redis(port=REDIS_PORT, db=REDIS_DB).flushdb()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPOSITORY / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    # Counts and ids only: ten thousand messages' bytes are not kept.
    with SmtpSink(keep_messages=False) as smtp, fresh_database() as database:
        for name, value in database.items():
            monkeypatch.setenv(name, value)
        environment = job_environment(
            services,
            smtp,
            str(dagster_home),
            DELIVERY_SHARDS="3",
            DELIVERY_EXECUTOR="celery",
            MAIL_MAX_CONNECTIONS="3",
            CELERY_BROKER_URL=broker,
            CELERY_BACKEND_URL=broker,
            **database,
        )
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            world = JobWorld(services, smtp, environment, instance)
            workers = CeleryWorkers(world, tmp_path)
            try:
                yield world, workers
            finally:
                workers.stop()


def _shard_step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """Which process ran each shard's (last) step attempt."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return {
        record.event_log_entry.step_key: record.event_log_entry.dagster_event.pid
        for record in records
        if record.event_log_entry.step_key.startswith(DELIVER_STEP) and record.event_log_entry.dagster_event
    }


def test_ten_thousand_reminders_in_three_shards_over_two_celery_workers_each_once(
    celery_world: tuple[JobWorld, CeleryWorkers],
) -> None:
    world, workers = celery_world
    expected = _seed(world, users=5_000, dues_per_user=2)
    workers.start_two()

    _run_to_success(world, timeout=600)

    assert world.smtp.count == len(expected) == 10_000 and world.smtp.duplicate_ids == 0
    assert sorted(key.decode() for key in world.smtp.notification_ids) == expected
    assert {record["status"] for record in world.ledger().values()} == {"sent"}
    run = world.instance.get_runs(dg.RunsFilter(job_name=JOB))[0]
    pids = _shard_step_workers(world.instance, run.run_id)
    assert sorted(pids) == [f"{DELIVER_STEP}[{n}_of_3]" for n in range(3)]
    worker_children = {int(pid) for name in workers.processes for pid in _children(workers.processes[name].pid)}
    assert set(pids.values()) <= worker_children and len(set(pids.values())) == 2  # both workers took shards
    materializations = world.instance.fetch_materializations(dg.AssetKey("payment_reminders"), limit=10).records
    assert len(materializations) == 1
    summary = {name: value.value for name, value in materializations[0].asset_materialization.metadata.items()}
    assert (summary["claimed"], summary["sent"], summary["failed"], summary["left_claimed"]) == (10_000,) * 2 + (0, 0)
    assert sum(shard["sent"] for shard in summary["shards"]) == 10_000


def _run_to_success(world: JobWorld, *, timeout: float) -> None:
    """`cron-pipelines run` for D, whose celery executor hands the steps to the workers."""
    process = world.run_in_subprocess(JOB, D)
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output


def _children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def _running_shard_steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """Shard steps started and not finished: step key → pid of the process running it."""
    started = _shard_step_workers(instance, run_id)
    finished = {
        record.event_log_entry.step_key
        for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
    }
    return {step: pid for step, pid in started.items() if step not in finished}


def test_a_worker_process_killed_mid_shard_is_rerun_by_celery_and_no_key_goes_twice(
    celery_world: tuple[JobWorld, CeleryWorkers],
) -> None:
    world, workers = celery_world
    expected, process, run = _mid_delivery(world, workers)
    running = _running_shard_steps(world.instance, run.run_id)
    assert running, "no shard step was running"
    killed_step, pid = sorted(running.items())[0]
    os.kill(pid, signal.SIGKILL)  # the process running the step dies: no cleanup, as an OOM kill
    output, _ = process.communicate(timeout=300)

    assert process.returncode == 0, output
    starts = [
        record.event_log_entry.step_key
        for record in world.instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records
    ]
    assert starts.count(killed_step) == 2  # Celery gave the step to a worker again
    assert world.smtp.duplicate_ids == 0  # no key twice
    mailed = {key.decode() for key in world.smtp.notification_ids}
    ledger = world.ledger()
    claimed = {key for key, record in ledger.items() if record["status"] == "claimed"}
    sent = {key for key, record in ledger.items() if record["status"] == "sent"}
    # The crash rules: only what the killed process had claimed is left `claimed` (at most three
    # batches, for stuck_claims_sensor and `settle`); everything else was sent exactly once.
    assert 0 < len(claimed) <= 300
    assert sent | claimed == set(expected) and sent <= mailed <= sent | claimed
    summary = {
        name: value.value
        for name, value in world.instance.fetch_materializations(dg.AssetKey("payment_reminders"), limit=1)
        .records[0]
        .asset_materialization.metadata.items()
    }
    # The shards that finished own every key but those the killed attempt claimed: those are `duplicate`.
    assert summary["sent"] + summary["duplicate"] == len(expected) and summary["duplicate"] >= len(claimed)


def _mid_delivery(world: JobWorld, workers: CeleryWorkers) -> tuple[list[str], subprocess.Popen[str], dg.DagsterRun]:
    """900 reminders in 3 shards on two workers, slowed so that shards are mid-delivery when this returns."""
    expected = _seed(world, users=900)
    world.smtp.latency = 0.005  # each shard takes seconds
    workers.start_two()
    process = world.run_in_subprocess(JOB, D)
    _wait_for_count(world.smtp, 60)
    return expected, process, world.instance.get_runs(dg.RunsFilter(job_name=JOB))[0]


def _wait_for_count(smtp: SmtpSink, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while smtp.count < count:
        assert time.monotonic() < deadline, f"only {smtp.count} messages arrived"
        time.sleep(0.05)


def test_terminate_stops_the_shards_running_on_celery_workers(celery_world: tuple[JobWorld, CeleryWorkers]) -> None:
    world, workers = celery_world
    expected, process, run = _mid_delivery(world, workers)
    assert _running_shard_steps(world.instance, run.run_id)
    # Terminate: the run is marked CANCELING and its run worker signalled; the steps on the
    # workers get no signal, and stop because they watch their run's status.
    world.instance.report_run_canceling(run)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    stopped_at = world.smtp.count
    time.sleep(2)

    assert world.smtp.count == stopped_at < len(expected), output
    assert "this shard stops sending now" in "".join(workers.log(name) for name in workers.processes) or any(
        "this shard stops sending now" in (record.event_log_entry.user_message or "")
        for record in world.instance.get_records_for_run(run.run_id).records
    )
    ledger = world.ledger()
    assert [key for key, record in ledger.items() if record["status"] == "claimed"] == []
    mailed = {key.decode() for key in world.smtp.notification_ids}
    assert {key for key, record in ledger.items() if record["status"] == "sent"} == mailed
    assert {record["status"] for key, record in ledger.items() if key not in mailed} <= {"released"}

    world.smtp.latency = 0
    world.configure(DELIVERY_EXECUTOR="in_process")
    assert world.run(JOB, D).success
    assert world.smtp.duplicate_ids == 0 and world.smtp.count == len(expected)  # the rest, each once


def test_the_rate_limit_and_connection_cap_hold_for_the_run_across_shards_on_celery_workers(
    celery_world: tuple[JobWorld, CeleryWorkers],
) -> None:
    world, workers = celery_world
    world.configure(MAIL_RATE_LIMIT_PER_SECOND="30")  # 10 a second for each of the 3 shards
    expected = _seed(world, users=150)
    workers.start_two()

    _run_to_success(world, timeout=300)

    assert world.smtp.count == len(expected) and world.smtp.duplicate_ids == 0
    arrivals = sorted(world.smtp.arrivals)
    # 30 a second for the run: no 2-second window holds more than 60 (+ one burst slot per shard).
    assert max(sum(1 for t in arrivals if start <= t < start + 2.0) for start in arrivals) <= 63
    assert world.smtp.sessions <= 3  # MAIL_MAX_CONNECTIONS=3 for the run: one session per shard
