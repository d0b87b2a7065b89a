"""Dagster's default run launcher, made safe for one machine under supervisord.

Run workers are processes on this host, started by the code server. Dagster's own
launcher cannot tell whether one is still alive once the code server that started it
has been restarted, and it can only stop one through that code server. This launcher
finds the worker by the pid Dagster records when the run starts ("Started process for
run (pid: N)"), so that:
- run monitoring fails a run whose worker is gone, within a poll interval instead of
  `max_runtime_seconds`, and the day's other runs are not blocked behind it;
- Terminate still stops a run whose code server was restarted meanwhile: the worker is
  interrupted directly, and stops sending at once.
The Docker and Kubernetes launchers check their containers and pods themselves.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import dagster as dg

# The run launcher's health-check types: part of the RunLauncher interface, not exported by dagster's public API.
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

_STARTED_PROCESS = "Started process for run (pid: "


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The run worker's pid and the time Dagster recorded it, from the run's event log."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, ascending=False).records
    for record in records:
        entry = record.event_log_entry
        if entry.message.startswith(_STARTED_PROCESS) and entry.dagster_event is not None:
            data = entry.dagster_event.engine_event_data
            pid = data.metadata.get("pid") if data is not None else None
            if pid is not None and str(pid.value).isdigit():
                return int(str(pid.value)), entry.timestamp
    return None


def _process_started_at(pid: int) -> float | None:
    """When `pid` started (epoch seconds), or None when no such live process exists."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (FileNotFoundError, ProcessLookupError, StopIteration, IndexError):
        return None
    if fields[0] in ("Z", "X"):  # exited, waiting to be reaped
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def worker_alive(pid: int, recorded_at: float) -> bool:
    """The process with this pid is the run worker: alive, and started before its pid was recorded.

    A pid reused by a later process fails the second test."""
    started_at = _process_started_at(pid)
    return started_at is not None and started_at <= recorded_at + 1.0


class LocalRunLauncher(dg.DefaultRunLauncher):
    """DefaultRunLauncher plus a worker health check and a Terminate that works after code-server restarts."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        found = worker_pid(self._instance, run.run_id)
        if found is None:  # not started yet, or on a launcher that records none: starting timeouts apply
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker recorded yet")
        pid, recorded_at = found
        if worker_alive(pid, recorded_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker pid {pid} is gone (killed, or its code server was restarted and it died with it)",
        )

    def terminate(self, run_id: str) -> bool:
        try:
            if super().terminate(run_id):  # type: ignore[no-untyped-call]  # dagster leaves it untyped
                return True
        except Exception:  # the code server is down or restarting: the worker may still be alive
            pass
        # The code server that started the run does not know it any more: interrupt the worker itself.
        run = self._instance.get_run_by_id(run_id)
        found = worker_pid(self._instance, run_id)
        if run is None or run.is_finished or found is None or not worker_alive(*found):
            return False
        os.kill(found[0], signal.SIGINT)
        self._instance.report_engine_event(
            f"Interrupted run worker pid {found[0]} directly: its code server no longer knows the run.",
            run,
            cls=self.__class__,
        )
        return True
