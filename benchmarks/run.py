"""End-to-end benchmark of send_payment_reminders at scale, against the best plain script.

  python -m benchmarks.run --size 100000                 # project vs baseline on loopback
  python -m benchmarks.run --size 100000 --repeat 3      # 3 alternating rounds, the ratio of the medians
  python -m benchmarks.run --sizes 10000,100000,300000   # how time and memory grow
  python -m benchmarks.run --size 4000 --smtp-latency 0.02 --connections 1,2,4,8 [--rate-limit 100]
  python -m benchmarks.run --size 100000 --preferences   # 10% opted out, 10% on digest (v1.1)
  python -m benchmarks.run --size 100000 --shards 1,2,4   # delivery fanned out, multiprocess executor

Each side gets its own copy of the seeded data (N pending dues due at D+3, distinct
users), served by the stand-in services in a separate process; mail goes to a counting
SMTP server in another process. The project side is `cron-pipelines run` in its own
process, through Dagster with real JWTs, ledger claims and outcomes; its peak RSS is
that process's own (wait4). Prints a table, or JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cron_pipelines.clients.tokens import TokenIssuer
from cron_pipelines.settings import Settings
from cron_pipelines_tests.support.smtp_sink import free_port
from demo_services.store import DemoStore

PROJECT = Path(__file__).resolve().parents[1]
# The same work on both sides: the plain script claims as many at a time as the project does.
DEFAULT_BATCH_SIZE = Settings.model_fields["delivery_batch_size"].default
SECRET = "benchmark-secret-0123456789abcdef0123456789"
D = datetime.now(UTC).date()


@dataclass
class Measurement:
    side: str
    size: int
    connections: int
    shards: int
    seconds: float
    per_second: float
    peak_rss_mb: float | None
    cpu_seconds: float
    emails_received: int
    expected_emails: int
    duplicate_emails: int
    http_requests: dict[str, int]
    dagster_events: int | None = None
    max_emails_per_second: int | None = None
    largest_step_process_rss_mb: float | None = None  # sharded: the biggest shard process's peak
    # CPU the stand-in services and the SMTP sink used meanwhile: on 2 cores they share the machine.
    peers_cpu_seconds: float | None = None
    steady_emails_per_second: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    repetition: int = 1  # with --repeat: which round of the sitting


def opted_out(n: int) -> bool:
    """With --preferences: every tenth user opted out of payment reminders..."""
    return n % 10 == 3


def on_digest(n: int) -> bool:
    """...and another tenth reads them as a digest."""
    return n % 10 == 7


def seed(path: Path, size: int, *, preferences: bool = False) -> None:
    store = DemoStore(path)
    batch = 50_000
    due_date = (D + timedelta(days=3)).isoformat()
    for start in range(0, size, batch):
        numbers = range(start, min(start + batch, size))
        store.add_users(
            {
                "id": f"usr_{n:07d}",
                "email": f"user{n}@example.com",
                "full_name": f"User {n}",
                "status": "active",
                "last_login_at": "2026-11-01T10:00:00Z",
                "created_at": "2025-01-01T00:00:00Z",
            }
            for n in numbers
        )
        store.add_dues(
            {
                "id": f"due_{n:07d}",
                "user_id": f"usr_{n:07d}",
                "amount_cents": 125000,
                "currency": "INR",
                "due_date": due_date,
                "status": "pending",
                "description": "Membership fee",
            }
            for n in numbers
        )
    with sqlite3.connect(path) as connection:
        if preferences:  # written directly: the store's own methods take one user per transaction
            connection.executemany(
                "INSERT INTO opt_outs VALUES (?, 'payment_reminder', 'support', '2026-11-01T00:00:00Z')",
                ((f"usr_{n:07d}",) for n in range(size) if opted_out(n)),
            )
            connection.executemany(
                "INSERT INTO notification_preferences VALUES (?, 1)",
                ((f"usr_{n:07d}",) for n in range(size) if on_digest(n)),
            )
            connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def copy_database(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def _wait_ready(process: subprocess.Popen, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def _environment(**extra: str) -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("SQL_", "MONGO_", "SMTP_", "MAIL"))
    }
    return {**environment, "INTERNAL_JWT_SECRET": SECRET, **extra}


@contextmanager
def services(database: Path) -> Iterator[tuple[str, str, int]]:
    sql_port, mongo_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cron_pipelines.cli",
            "demo-services",
            "--db",
            str(database),
            "--sql-port",
            str(sql_port),
            "--mongo-port",
            str(mongo_port),
        ],
        env=_environment(DAGSTER_HOME=str(database.parent)),
        stderr=subprocess.DEVNULL,
    )
    try:
        sql_url, mongo_url = f"http://127.0.0.1:{sql_port}", f"http://127.0.0.1:{mongo_port}"
        _wait_ready(process, f"{sql_url}/openapi.json")
        _wait_ready(process, f"{mongo_url}/openapi.json")
        yield sql_url, mongo_url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def smtp_sink(latency: float) -> Iterator[tuple[int, str, int]]:
    port, status_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.smtp_sink",
            "--port",
            str(port),
            "--status-port",
            str(status_port),
            "--latency",
            str(latency),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield port, f"http://127.0.0.1:{status_port}/", process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def request_counts(sql_url: str, mongo_url: str) -> dict[str, int]:
    issuer = TokenIssuer(algorithm="HS256", signing_key=SECRET)
    counts: dict[str, int] = {}
    for service, url in (("sql-service", sql_url), ("mongo-service", mongo_url)):
        answer = httpx.get(
            f"{url}/_admin/request-counts", headers={"Authorization": f"Bearer {issuer.token_for(service)}"}
        ).json()
        counts.update(
            {f"{service} {endpoint}": count for endpoint, count in answer.items() if "/_admin/" not in endpoint}
        )
    return counts


# Runs a module, then prints the process's own peak RSS (VmHWM). rusage's ru_maxrss would also
# count the benchmark's own pages, which the child holds between fork and exec.
_REPORTING_PEAK = """
import atexit, re, resource, runpy, sys
atexit.register(lambda: print("peak_rss_kb=" + re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)))
atexit.register(lambda: print("children_peak_rss_kb=%d" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-c", _REPORTING_PEAK, module, *args]


def _run_measured(command: list[str], environment: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS (MB) of that process alone, CPU seconds of it and its children, and its output."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    peak = re.search(r"^peak_rss_kb=(\d+)$", output, re.MULTILINE)
    rss = int(peak.group(1)) / 1024 if peak else usage.ru_maxrss / 1024  # py-spy wraps the profiled run
    return seconds, rss, usage.ru_utime + usage.ru_stime, output


def measure(
    side: str,
    pristine: Path,
    work: Path,
    size: int,
    *,
    connections: int,
    latency: float,
    rate_limit: float | None,
    shards: int = 1,
    profile: Path | None = None,
    expected_emails: int | None = None,
    repetition: int = 1,
) -> Measurement:
    database = work / f"{side}-{size}-{connections}-{shards}-{repetition}.sqlite3"
    copy_database(pristine, database)
    with (
        services(database) as (sql_url, mongo_url, services_pid),
        smtp_sink(latency) as (smtp_port, status_url, sink_pid),
    ):
        before = request_counts(sql_url, mongo_url)
        peers_before = _process_cpu_seconds(services_pid) + _process_cpu_seconds(sink_pid)
        events = None
        step_rss = None
        if side == "project":
            home = work / f"dagster_home-{size}-{connections}-{shards}-{repetition}"
            home.mkdir()
            shutil.copy(PROJECT / "deploy" / "dagster.dev.yaml", home / "dagster.yaml")
            environment = _environment(
                DAGSTER_HOME=str(home),
                SQL_SERVICE_URL=sql_url,
                MONGO_SERVICE_URL=mongo_url,
                MAILER_BACKEND="smtp",
                SMTP_HOST="127.0.0.1",
                SMTP_PORT=str(smtp_port),
                MAIL_FROM="Cron Pipelines <no-reply@example.com>",
                MAIL_MAX_CONNECTIONS=str(connections),
                STEP_MAX_RETRIES="0",
                DELIVERY_SHARDS=str(shards),
                DELIVERY_EXECUTOR="multiprocess",
                **({"MAIL_RATE_LIMIT_PER_SECOND": str(rate_limit)} if rate_limit else {}),
            )
            command = _module_command("cron_pipelines.cli", "run", "send_payment_reminders", "--date", D.isoformat())
            if profile is not None:  # sampled by py-spy; its own overhead is small but not nil
                profile.mkdir(parents=True, exist_ok=True)
                command = [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "--rate",
                    "50",
                    # Only the thread holding the GIL is sampled: where the run spends CPU, not where it waits.
                    "--gil",
                    "--threads",
                    "-o",
                    str(profile / f"project-{size}-{connections}.txt"),
                    "--",
                    *command,
                ]
            seconds, rss, cpu, output = _run_measured(command, environment)
            children = re.search(r"^children_peak_rss_kb=(\d+)$", output, re.MULTILINE)
            step_rss = int(children.group(1)) / 1024 if children and shards > 1 else None
            run_id = output.split("run_id=")[1].split()[0]
            events = _count_events(home, run_id)
        else:
            command = _module_command(
                "benchmarks.baseline",
                "--sql-url",
                sql_url,
                "--mongo-url",
                mongo_url,
                "--smtp-port",
                str(smtp_port),
                "--date",
                D.isoformat(),
                "--connections",
                str(connections),
                "--batch-size",
                os.environ.get("DELIVERY_BATCH_SIZE", str(DEFAULT_BATCH_SIZE)),
            )
            seconds, rss, cpu, output = _run_measured(command, _environment())
        after = request_counts(sql_url, mongo_url)
        sink = httpx.get(status_url).json()
        peers_cpu = _process_cpu_seconds(services_pid) + _process_cpu_seconds(sink_pid) - peers_before
    requests = {endpoint: after.get(endpoint, 0) - before.get(endpoint, 0) for endpoint in after}
    return Measurement(
        side=side,
        size=size,
        connections=connections,
        shards=shards,
        seconds=round(seconds, 2),
        per_second=round(sink["received"] / seconds, 1),
        peak_rss_mb=round(rss, 1),
        cpu_seconds=round(cpu, 1),
        emails_received=sink["received"],
        expected_emails=size if expected_emails is None else expected_emails,
        duplicate_emails=sink["duplicate_notification_ids"],
        http_requests={k: v for k, v in sorted(requests.items()) if v},
        dagster_events=events,
        max_emails_per_second=sink["max_per_second"],
        steady_emails_per_second=sink["steady_per_second"],
        largest_step_process_rss_mb=round(step_rss, 1) if side == "project" and step_rss else None,
        peers_cpu_seconds=round(peers_cpu, 1),
        repetition=repetition,
    )


def _process_cpu_seconds(pid: int) -> float:
    """User and system CPU of a running process (the stand-ins, the sink): /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _count_events(home: Path, run_id: str) -> int:
    output = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, dagster as dg; i = dg.DagsterInstance.get(); print(len(i.all_logs(sys.argv[1])))",
            run_id,
        ],
        env=_environment(DAGSTER_HOME=str(home)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(output.strip())


def time_ratio(
    measurements: list[Measurement], size: int, *, connections: int, shards: int
) -> tuple[float, list[float]] | None:
    """Project over baseline wall time at `size`: the median project run over the median baseline
    run, and each round's own ratio. Only project runs with the baseline's connections compare."""
    project = {
        m.repetition: m.seconds
        for m in measurements
        if m.side == "project" and m.size == size and m.connections == connections and m.shards == shards
    }
    baseline = {m.repetition: m.seconds for m in measurements if m.side == "baseline" and m.size == size}
    if not project or not baseline:
        return None
    each_round = [project[r] / baseline[r] for r in sorted(project.keys() & baseline.keys())]
    return statistics.median(project.values()) / statistics.median(baseline.values()), each_round


def _print(measurements: list[Measurement]) -> None:
    header = f"{'side':9} {'N':>7} {'conns':>5} {'shards':>6} {'seconds':>8} {'emails/s':>9} {'peak RSS MB':>11} {'CPU s':>6} {'CPU s/1k':>8} {'peers CPU s':>11} {'emails':>7} {'dups':>4} {'HTTP requests':>13} {'events':>6}"
    print(header)
    for m in measurements:
        per_thousand = round(m.cpu_seconds / max(m.emails_received, 1) * 1000, 3)
        print(
            f"{m.side:9} {m.size:>7} {m.connections:>5} {m.shards:>6} {m.seconds:>8} {m.per_second:>9} {m.peak_rss_mb or 0:>11} {m.cpu_seconds:>6} {per_thousand:>8} {m.peers_cpu_seconds:>11} "
            f"{m.emails_received:>7} {m.duplicate_emails:>4} {sum(m.http_requests.values()):>13} {m.dagster_events if m.dagster_events is not None else '-':>6}"
        )
    for m in measurements:
        print(
            f"  {m.side} N={m.size} conns={m.connections}: {m.http_requests}"
            + f" sending rate {m.steady_emails_per_second}/s, most in any one second {m.max_emails_per_second}"
            + (f", largest shard process {m.largest_step_process_rss_mb} MB" if m.largest_step_process_rss_mb else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--sizes", help="comma-separated sizes, e.g. 10000,100000,300000")
    parser.add_argument("--connections", default="4", help="MAIL_MAX_CONNECTIONS values, comma-separated")
    parser.add_argument(
        "--shards", default="1", help="DELIVERY_SHARDS values, comma-separated (multiprocess executor above 1)"
    )
    parser.add_argument("--smtp-latency", type=float, default=0.0, help="seconds added per SMTP command")
    parser.add_argument("--rate-limit", type=float, help="MAIL_RATE_LIMIT_PER_SECOND for the project side")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--profile", type=Path, help="write a py-spy profile (collapsed stacks) of the project run here"
    )
    parser.add_argument(
        "--preferences", action="store_true", help="10%% of users opted out, another 10%% on digest (v1.1)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of project and baseline, alternating; the ratio of their medians"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(value) for value in args.sizes.split(",")] if args.sizes else [args.size]
    connection_counts = [int(value) for value in args.connections.split(",")]
    shard_counts = [int(value) for value in args.shards.split(",")]
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="cron-pipelines-bench-") as scratch:
        work = Path(scratch)
        for size in sizes:
            pristine = work / f"pristine-{size}.sqlite3"
            seed(pristine, size, preferences=args.preferences)
            expected = sum(1 for n in range(size) if not opted_out(n)) if args.preferences else size
            # Rounds alternate the sides, so a slow spell of the machine falls on both.
            for repetition in range(1, args.repeat + 1):
                for connections in connection_counts:
                    for shards in shard_counts:
                        measurements.append(
                            measure(
                                "project",
                                pristine,
                                work,
                                size,
                                connections=connections,
                                latency=args.smtp_latency,
                                rate_limit=args.rate_limit,
                                shards=shards,
                                profile=args.profile,
                                expected_emails=expected,
                                repetition=repetition,
                            )
                        )
                        print(f"done: {asdict(measurements[-1])}", file=sys.stderr, flush=True)
                if not args.no_baseline:  # the same connections as the project's first setting
                    measurements.append(
                        measure(
                            "baseline",
                            pristine,
                            work,
                            size,
                            connections=connection_counts[0],
                            latency=args.smtp_latency,
                            rate_limit=None,
                            expected_emails=expected,
                            repetition=repetition,
                        )
                    )
                    print(f"done: {asdict(measurements[-1])}", file=sys.stderr, flush=True)
    failures = [m for m in measurements if m.emails_received != m.expected_emails or m.duplicate_emails]
    if args.json:
        print(
            json.dumps(
                {
                    "machine": {
                        "python": platform.python_version(),
                        "cpus": os.cpu_count(),
                        "platform": platform.platform(),
                    },
                    "measurements": [asdict(m) for m in measurements],
                },
                indent=2,
            )
        )
    else:
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        _print(measurements)
        for size in sizes:
            project = [m for m in measurements if m.side == "project" and m.size == size]
            ratio = time_ratio(measurements, size, connections=connection_counts[0], shards=shard_counts[0])
            if ratio is not None:
                median, each_round = ratio
                rounds = f" (median of {len(each_round)} rounds; each: {', '.join(f'{r:.2f}' for r in each_round)})"
                print(f"N={size}: project/baseline time = {median:.2f}" + (rounds if len(each_round) > 1 else ""))
            one = next((m for m in project if m.shards == 1), None)
            for m in project:
                if one is not None and m.shards > 1 and m.connections == one.connections:
                    print(f"N={size}: {m.shards} shards go {one.seconds / m.seconds:.2f}x as fast as 1")
    if failures:
        print(
            f"COUNT MISMATCH: {[(m.side, m.size, m.emails_received, m.duplicate_emails) for m in failures]}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
