"""`cron-pipelines`: the operator's and auditor's command line.

run JOB --date D | --from D1 --to D2   run a job for days, on the Dagster instance (like the old seed-jobs.sh)
audit [--user ID] [--key K] [--run R] [--kind K] [--since D] [--json]
                                       which email went to whom, when, why and from which run
settle (--run R | --key K...) --as sent|failed [--dry-run] [--note TEXT]
                                       settle notifications a dead run left `claimed`
health [--json]                        instance, daemon, services, mail: exit 0 when all are fine
demo-services [--sql-port P] [--mongo-port P]
                                       serve the stand-in services for curl
demo-seed [--reset]                    (re)fill the embedded demo data for today
preview KIND|all [--locale L|all] [--digest] [--out DIR]
                                       render sample emails to .eml and .html, as the mailer would send them
"""

from __future__ import annotations

import argparse
import email
import email.message
import email.policy
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from cron_pipelines.log_format import REQUEST_LOGGER
from cron_pipelines.models.notification import NotificationKind
from cron_pipelines.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from dagster import DagsterInstance

    from cron_pipelines.clients.mongo_service import MongoServiceClient


def _dates(args: argparse.Namespace) -> list[date]:
    if args.date:
        return [args.date]
    if args.start > args.end:
        raise SystemExit("--from must not be after --to")
    return [args.start + timedelta(days=offset) for offset in range((args.end - args.start).days + 1)]


def _instance(settings: Settings) -> DagsterInstance:
    import dagster as dg

    # The same instance the webserver and daemon use: DAGSTER_HOME, or the project's default.
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if home.stat().st_uid == os.geteuid():
        home.chmod(0o700)  # run storage, compute logs and the outbox hold names and addresses
    return dg.DagsterInstance.get()


# --- run ------------------------------------------------------------------------


def command_run(settings: Settings, args: argparse.Namespace) -> int:
    import dagster as dg

    # dg.reconstructable needs a module-level job; a job of the code location by name needs the repository's
    # own reconstruction, which dagster's public API does not export.
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from cron_pipelines.definitions import definitions_for

    definitions = definitions_for(settings)
    jobs = sorted(job.name for job in definitions.resolve_all_job_defs() if not job.name.startswith("__"))
    if args.job not in jobs:
        raise SystemExit(f"unknown job {args.job!r}; jobs: {', '.join(jobs)}")
    job = definitions.resolve_job_def(args.job)
    failures = 0
    with _instance(settings) as instance:
        for day in _dates(args):
            # The console shows warnings and errors; the full log is in the run's page.
            run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            tags = {"cron_pipelines/trigger": "cli"}
            result: dg.ExecuteInProcessResult | dg.ExecuteJobResult
            if job.executor_def is dg.in_process_executor:
                result = job.execute_in_process(
                    partition_key=day.isoformat(),
                    instance=instance,
                    tags=tags,
                    run_config=run_config,
                    raise_on_error=False,
                )
            else:  # a sharded job: its executor runs the shards' steps in processes, workers or pods
                result = dg.execute_job(
                    ReconstructableRepository.for_module("cron_pipelines.definitions", "defs").get_reconstructable_job(
                        args.job
                    ),
                    instance,
                    run_config=run_config,
                    tags={**tags, "dagster/partition": day.isoformat()},
                    raise_on_error=False,
                )
            counts = {}
            for event in result.get_asset_materialization_events():
                metadata = event.step_materialization_data.materialization.metadata
                counts[event.asset_key.to_user_string() if event.asset_key else "?"] = {
                    name: value.value for name, value in metadata.items() if isinstance(value.value, int)
                }
            status = "succeeded" if result.success else "FAILED"
            print(f"{args.job} {day} {status} run_id={result.run_id} {json.dumps(counts)}")
            print(f"  {settings.dagster_webserver_url}/runs/{result.run_id}")
            failures += not result.success
    return 1 if failures else 0


# --- audit ------------------------------------------------------------------------


def mask_recipient(address: str | None) -> str:
    """`a***@example.com`: enough to recognise, not enough to harvest."""
    if not address:
        return ""
    local, at, domain = address.partition("@")
    return f"{local[:1]}***{at}{domain}" if at else "***"


def _audit_records(
    client: MongoServiceClient, args: argparse.Namespace, run_window: tuple[datetime, datetime] | None
) -> Iterator[Any]:
    from cron_pipelines.models.records import InvalidRecord

    kind = args.kind or (args.key.split(":", 1)[0] if args.key else None)
    since = datetime.combine(args.since, time(0), tzinfo=UTC) if args.since else None
    until = None
    if run_window is not None:
        since, until = run_window
    for record in client.iter_notifications(user_id=args.user, kind=kind, status=args.status, since=since, until=until):
        if isinstance(record, InvalidRecord):
            print(f"warning: unreadable ledger record {record.record_id}: {record.reason}", file=sys.stderr)
            continue
        if args.key and record.idempotency_key != args.key:
            continue
        if args.run and record.run_id != args.run:
            continue
        yield record


def _run_summary(
    instance: DagsterInstance | None, run_id: str | None, cache: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    if not run_id:
        return {}
    if run_id not in cache:
        record = instance.get_run_record_by_id(run_id) if instance is not None else None
        if record is None:
            cache[run_id] = {"run_status": "unknown to this Dagster instance"}
        else:
            run = record.dagster_run
            cache[run_id] = {
                "run_status": run.status.value,
                "run_job": run.job_name,
                "run_partition": run.tags.get("dagster/partition"),
                "run_trigger": run.tags.get("cron_pipelines/trigger")
                or ("schedule" if run.tags.get("dagster/schedule_name") else None)
                or ("backfill" if run.tags.get("dagster/backfill") else None)
                or ("sensor" if run.tags.get("dagster/sensor_name") else "manual"),
                "run_started_at": datetime.fromtimestamp(record.start_time, UTC).isoformat()
                if record.start_time
                else None,
            }
    return cache[run_id]


def _run_window(instance: DagsterInstance, run_id: str) -> tuple[datetime, datetime] | None:
    """The run's lifetime, a minute either side: claims happen inside it, so the ledger query is narrowed to it."""
    record = instance.get_run_record_by_id(run_id)
    if record is None or not record.start_time:
        return None
    started = datetime.fromtimestamp(record.start_time, UTC) - timedelta(minutes=1)
    ended = datetime.fromtimestamp(record.end_time, UTC) if record.end_time else datetime.now(UTC)
    return started, ended + timedelta(minutes=1)


def command_audit(settings: Settings, args: argparse.Namespace) -> int:
    from cron_pipelines.definitions import use_embedded_demo
    from cron_pipelines.resources import build_resources

    use_embedded_demo(settings)
    instance = None
    try:
        instance = _instance(settings)
    except Exception as exc:  # the ledger alone still answers most questions
        print(f"warning: no Dagster instance ({type(exc).__name__}: {exc}); runs are not joined", file=sys.stderr)
    run_window = _run_window(instance, args.run) if args.run and instance is not None else None
    rows: list[dict[str, Any]] = []
    runs: dict[str, dict[str, Any]] = {}
    # Resolves EnvVar secrets and opens the client the way a run does.
    with build_resources(settings)["mongo_service"].process_config_and_initialize_cm() as mongo:
        for record in _audit_records(mongo.client, args, run_window):
            row = record.model_dump()
            if not args.show_recipients:
                row["recipient"] = mask_recipient(record.recipient)
            row.update(_run_summary(instance, record.run_id, runs))
            row["run_url"] = f"{settings.dagster_webserver_url}/runs/{record.run_id}" if record.run_id else None
            rows.append(row)
            if len(rows) >= args.limit:
                break
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        _print_table(rows)
    if instance is not None:
        instance.dispose()
    return 0 if rows else 3


AUDIT_COLUMNS = (
    "claimed_at",
    "kind",
    "status",
    "recipient",
    "idempotency_key",
    "partition_key",
    "run_status",
    "run_url",
)


def _print_table(rows: Sequence[dict[str, Any]]) -> None:
    from cron_pipelines.safe_text import printable

    if not rows:
        print("no notifications match")
        return
    # Ledger fields may hold what a service or mail server sent: printed escaped, never raw.
    cells = [[printable(row.get(column) or "", 200) for column in AUDIT_COLUMNS] for row in rows]
    widths = [max(len(column), *(len(cell[index]) for cell in cells)) for index, column in enumerate(AUDIT_COLUMNS)]
    print("  ".join(column.ljust(width) for column, width in zip(AUDIT_COLUMNS, widths, strict=True)))
    for cell in cells:
        print("  ".join(value.ljust(width) for value, width in zip(cell, widths, strict=True)))
    for row in rows:
        if row.get("error"):
            print(f"{printable(row['idempotency_key'], 200)}: {row['status']}: {printable(row['error'], 600)}")


# --- settle ----------------------------------------------------------------------------

# A run in one of these states may still record its claims itself: leave them to it.
_UNFINISHED = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def _claimed_records(
    client: MongoServiceClient, instance: DagsterInstance, run_id: str | None, keys: list[str] | None
) -> Iterator[Any]:
    """The `claimed` ledger records of a run, or with one of these keys."""
    from cron_pipelines.models.records import InvalidRecord

    if run_id is not None:
        window = _run_window(instance, run_id)
        queries: list[dict[str, Any]] = [{"since": window[0], "until": window[1]} if window else {}]
    else:
        queries = [{"kind": kind} for kind in sorted({key.split(":", 1)[0] for key in keys or []})]
    wanted = set(keys or [])
    for query in queries:
        for record in client.iter_notifications(status="claimed", **query):
            if isinstance(record, InvalidRecord):
                print(f"warning: unreadable ledger record {record.record_id}: {record.reason}", file=sys.stderr)
            elif (run_id is not None and record.run_id == run_id) or record.idempotency_key in wanted:
                yield record


def command_settle(settings: Settings, args: argparse.Namespace) -> int:
    """Record stuck claims `sent` or `failed` after an operator checked the mail server's logs."""
    from cron_pipelines.definitions import use_embedded_demo
    from cron_pipelines.models.payloads import PLANNED_MESSAGE_ID, NotificationOutcome, format_instant
    from cron_pipelines.resources import build_resources
    from cron_pipelines.safe_text import printable

    if args.settle_as == "failed" and args.run and not (args.i_accept_duplicates or args.dry_run):
        print(
            "refused: `--run R --as failed` has a later run send every claim of R again, and some of them may "
            "have been delivered before the run died (up to the whole window). Look each planned Message-ID up "
            "in the mail server's log, then settle the delivered ones `--as sent` and the others with "
            "`--key K --as failed`; or, to resend them all knowing some may arrive twice, add --i-accept-duplicates",
            file=sys.stderr,
        )
        return 2
    use_embedded_demo(settings)
    instance = _instance(settings)
    note = f"settled as {args.settle_as} by an operator ({os.environ.get('USER') or 'unknown user'})"
    if args.note:
        note += f": {args.note}"
    outcomes, blocked = [], set()
    with build_resources(settings)["mongo_service"].process_config_and_initialize_cm() as mongo:
        for record in _claimed_records(mongo.client, instance, args.run, args.key):
            run = instance.get_run_by_id(record.run_id) if record.run_id else None
            if run is not None and run.status.value in _UNFINISHED and not args.force:
                blocked.add(f"{record.run_id} ({run.status.value})")
                continue
            planned = record.metadata.get(PLANNED_MESSAGE_ID)
            print(
                f"{printable(record.idempotency_key, 200)}  claimed_at={record.claimed_at}  "
                f"recipient={mask_recipient(record.recipient)}  Message-ID={printable(planned or 'unknown', 200)}"
            )
            outcomes.append(
                NotificationOutcome(
                    idempotency_key=record.idempotency_key,
                    status=args.settle_as,
                    message_id=planned if args.settle_as == "sent" and isinstance(planned, str) else None,
                    error=note,
                    at=format_instant(datetime.now(UTC)),
                )
            )
        if blocked:
            print(
                f"left alone: claims of run(s) still in progress, which record them themselves: "
                f"{', '.join(sorted(blocked))} (--force to settle anyway)",
                file=sys.stderr,
            )
        if not outcomes:
            print("no `claimed` notification matches")
            return 3
        if args.dry_run:
            print(f"dry run: {len(outcomes)} notification(s) would be recorded `{args.settle_as}`")
            return 0
        for batch in range(0, len(outcomes), 500):
            mongo.client.record_outcomes(outcomes[batch : batch + 500])
    consequence = "a later run sends them" if args.settle_as == "failed" else "no run sends them again"
    print(f"recorded {len(outcomes)} notification(s) `{args.settle_as}`: {consequence}")
    instance.dispose()
    return 0


# --- health ------------------------------------------------------------------------------


def command_health(settings: Settings, args: argparse.Namespace) -> int:
    from cron_pipelines.health import CheckResult, report, run_health_checks

    try:
        instance = _instance(settings)
    except Exception as exc:  # reported like every other failed check
        results = [CheckResult("instance storage", False, f"{type(exc).__name__}: {exc}", 0.0)]
    else:
        with instance:
            results = run_health_checks(settings, instance)
    summary = report(results)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for result in results:
            print(f"{'ok  ' if result.ok else 'FAIL'}  {result.name:18}  {result.detail}  ({result.seconds:.2f} s)")
        print("healthy" if summary["healthy"] else "UNHEALTHY")
    return 0 if summary["healthy"] else 1


# --- demo services ---------------------------------------------------------------------


def command_demo_services(settings: Settings, args: argparse.Namespace) -> int:
    from cron_pipelines.clients.tokens import TokenIssuer
    from demo_services.auth import TokenVerifier
    from demo_services.embedded import open_demo_store
    from demo_services.server import serve_demo_services

    issuer = TokenIssuer(
        algorithm=settings.internal_jwt_algorithm,
        signing_key=settings.jwt_signing_key,
        issuer=settings.internal_jwt_issuer,
        key_id=settings.internal_jwt_key_id,
    )
    db_path = args.db or settings.demo_services_db_path
    open_demo_store(db_path, timezone=settings.cron_timezone)
    serve_demo_services(
        db_path=db_path,
        sql_port=args.sql_port,
        mongo_port=args.mongo_port,
        verifier_for=lambda service: TokenVerifier.for_issuer(issuer, service),
        host=args.host,
    )
    return 0


def command_demo_seed(settings: Settings, args: argparse.Namespace) -> int:
    from demo_services.embedded import open_demo_store

    db_path = args.db or settings.demo_services_db_path
    store, seeded = open_demo_store(db_path, timezone=settings.cron_timezone, reseed=args.reset)
    if seeded:
        print(f"seeded {db_path} for {datetime.now(ZoneInfo(settings.cron_timezone)).date()}: {seeded}")
    else:
        print(f"{db_path} already holds data ({store.table_counts()}); use --reset to start over")
    return 0


# --- preview ---------------------------------------------------------------------------------


# The locales `make preview` renders: each shipped language, and the demo's readers.
PREVIEW_LOCALES = ("en", "en-IN", "de-DE")


def command_preview(settings: Settings, args: argparse.Namespace) -> int:
    """Render sample notifications as the mailer would send them: one .eml and one .html each."""
    from cron_pipelines.delivery.channels.email.composer import MessageComposer
    from cron_pipelines.delivery.channels.email.unsubscribe import UnsubscribeLinks, UnsubscribeTokens
    from cron_pipelines.models.notification import DIGEST_KINDS
    from cron_pipelines.models.reader import known_locale
    from cron_pipelines.rules.samples import sample_digest, sample_notifications

    locales = PREVIEW_LOCALES if args.locale == "all" else (args.locale,)
    unknown = [locale for locale in locales if known_locale(locale) is None]
    if unknown:
        print(f"unknown locale: {unknown[0]} (a BCP 47 tag such as en-IN or de-DE)", file=sys.stderr)
        return 2
    kinds = list(NotificationKind) if args.kind == "all" else [NotificationKind(args.kind)]
    if args.digest:
        if args.kind != "all" and kinds[0] not in DIGEST_KINDS:
            print(f"{args.kind} has no digest (only {', '.join(sorted(DIGEST_KINDS))})", file=sys.stderr)
            return 2
        kinds = [kind for kind in kinds if kind in DIGEST_KINDS]
    # Optional kinds show their unsubscribe header and footer, with the configured URL if any.
    links = UnsubscribeLinks(
        settings.unsubscribe_base_url or "https://unsubscribe.example.com/",
        UnsubscribeTokens(os.urandom(32).hex(), settings.internal_jwt_issuer),
    )
    composer = MessageComposer(settings.mail_from, links)
    day = datetime.now(ZoneInfo(settings.cron_timezone)).date()
    args.out.mkdir(parents=True, exist_ok=True)
    for locale in locales:
        samples = sample_notifications(day, settings.cron_timezone, known_locale(locale))
        for kind in kinds:
            if args.digest:
                message = composer.compose_digest(sample_digest(day, kind, known_locale(locale)))
                name = f"{kind.value}.digest.{locale}"
            else:
                message = composer.compose(samples[kind])
                name = f"{kind.value}.{locale}"
            (args.out / f"{name}.eml").write_bytes(message.data)
            parsed = email.message_from_bytes(message.data, policy=email.policy.default)
            html = parsed.get_body(("html",))
            assert isinstance(html, email.message.EmailMessage)  # the composer always writes both parts
            (args.out / f"{name}.html").write_text(html.get_content(), encoding="utf-8")
            print(f"{name:<34} {parsed['Subject']}  ({len(message.data):,} bytes) -> {args.out / name}.eml/.html")
    return 0


# --- entry point -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cron-pipelines", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a job for a day or a range of days")
    run.add_argument("job")
    days = run.add_mutually_exclusive_group(required=True)
    days.add_argument("--date", type=date.fromisoformat, help="the business day D (YYYY-MM-DD)")
    days.add_argument("--from", dest="start", type=date.fromisoformat, help="first day of a range")
    run.add_argument("--to", dest="end", type=date.fromisoformat, help="last day of a range (with --from)")
    run.set_defaults(handler=command_run)

    audit = commands.add_parser("audit", help="which notifications were sent, to whom, when, why, by which run")
    audit.add_argument("--user", help="user or employee id")
    audit.add_argument("--key", help="one idempotency key")
    audit.add_argument("--run", help="a Dagster run id")
    audit.add_argument("--kind", help="notification kind, e.g. payment_reminder")
    audit.add_argument("--status", choices=["claimed", "sent", "failed", "skipped"])
    audit.add_argument("--since", type=date.fromisoformat, help="claimed on or after this day (UTC)")
    audit.add_argument("--limit", type=int, default=1000)
    audit.add_argument("--json", action="store_true", help="print JSON instead of a table")
    audit.add_argument("--show-recipients", action="store_true", help="print addresses unmasked")
    audit.set_defaults(handler=command_audit)

    settle = commands.add_parser(
        "settle", help="record notifications a dead run left `claimed` as sent or failed, after checking the mail logs"
    )
    which = settle.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="every notification this Dagster run left `claimed`")
    which.add_argument("--key", action="append", help="an idempotency key (repeatable)")
    settle.add_argument(
        "--as",
        dest="settle_as",
        required=True,
        choices=["sent", "failed"],
        help="sent: delivered, never sent again; failed: not delivered, a later run sends it",
    )
    settle.add_argument("--note", help="why, for the audit trail (e.g. the mail log you checked)")
    settle.add_argument("--dry-run", action="store_true", help="list what would be settled, change nothing")
    settle.add_argument("--force", action="store_true", help="also settle claims of a run still in progress")
    settle.add_argument(
        "--i-accept-duplicates",
        action="store_true",
        help="with --run R --as failed: resend every claim of R, although some may have been delivered",
    )
    settle.set_defaults(handler=command_settle)

    health = commands.add_parser("health", help="check instance, daemon, services and mail; exit 1 if any fails")
    health.add_argument("--json", action="store_true")
    health.set_defaults(handler=command_health)

    preview = commands.add_parser("preview", help="render sample emails of a kind (or all) to .eml and .html")
    preview.add_argument("kind", choices=["all", *(kind.value for kind in NotificationKind)])
    preview.add_argument("--out", type=Path, default=Path("preview"), help="folder to write to (default ./preview)")
    preview.add_argument(
        "--locale", default="en", help=f"the reader's locale, BCP 47 (default en); all: {', '.join(PREVIEW_LOCALES)}"
    )
    preview.add_argument("--digest", action="store_true", help="the digest of three dues (payment kinds only)")
    preview.set_defaults(handler=command_preview)

    serve = commands.add_parser("demo-services", help="serve the stand-in services on loopback")
    serve.add_argument("--sql-port", type=int, default=8101)
    serve.add_argument("--mongo-port", type=int, default=8102)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--db", type=Path, help="SQLite file (default: DEMO_SERVICES_DB)")
    serve.set_defaults(handler=command_demo_services)

    seed = commands.add_parser("demo-seed", help="fill the demo services with data for today")
    seed.add_argument("--reset", action="store_true", help="empty them first")
    seed.add_argument("--db", type=Path, help="SQLite file (default: DEMO_SERVICES_DB)")
    seed.set_defaults(handler=command_demo_seed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Whatever the shell's umask: what the runs write (storage, compute logs, the outbox) is this user's alone.
    os.umask(0o077)
    args = _parser().parse_args(argv)
    if getattr(args, "start", None) and not getattr(args, "end", None):
        raise SystemExit("--from needs --to")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.handler is not command_run:
        # A line per service request belongs to runs; audit and health answer on stdout only.
        logging.getLogger(REQUEST_LOGGER).setLevel(logging.WARNING)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    return handler(settings, args)


if __name__ == "__main__":
    sys.exit(main())
