"""One JSON line per log event, with the run's context, for log shippers.

Installed as a handler of Dagster's loggers (`python_logs.dagster_handler_config` in
the instance's dagster.yaml), so it sees every Dagster event and every record of the
managed `cron_pipelines` loggers, with the run id, job, partition and step Dagster
attaches. Fields the project's own records carry (`request_id`, `outcome`, ...) are
kept. E-mail addresses are masked at INFO and above.

Every service request also gets a line of its own, with its X-Request-ID and outcome
(docs/services.md, "Talking to a service"), on the request log: the run's stderr, outside the event log, which
keeps the same size however many requests a run makes.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

# Fields the project's loggers pass with `extra=`; anything else on a record is ignored.
CONTEXT_FIELDS = (
    "run_id",
    "job",
    "partition",  # on request-log records, which do not pass through Dagster
    "service",
    "method",
    "endpoint",
    "status",
    "request_id",
    "outcome",
    "attempt",
    "elapsed_ms",
    "counts",
)
REQUEST_LOGGER = "cron_pipelines.requests"
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def mask_emails(text: str) -> str:
    """`asha.rao@example.com` → `a***@example.com`."""
    return _EMAIL.sub(r"\1***@\2", text)


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta: dict[str, Any] = getattr(record, "dagster_meta", None) or {}
        message = meta.get("orig_message") or record.getMessage()
        if record.levelno >= logging.INFO:
            message = mask_emails(message)
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if meta:
            event = meta.get("dagster_event")
            entry.update(
                run_id=meta.get("run_id"),
                job=meta.get("job_name"),
                partition=(meta.get("job_tags") or {}).get("dagster/partition"),
                step=meta.get("step_key"),
                # The enum's name (RUN_START), not its stored value (PIPELINE_START, for history).
                event=event.event_type.name if event is not None else None,
            )
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["error"] = mask_emails(self.formatException(record.exc_info))
        return json.dumps({key: value for key, value in entry.items() if value is not None}, default=str)


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is when a record comes (Dagster's log capture swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def request_log() -> logging.Logger:
    """The request log: one JSON line per service request on stderr, never in the event log."""
    log = logging.getLogger(REQUEST_LOGGER)
    if not any(isinstance(handler, _StderrHandler) for handler in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(JsonLogFormatter())
        log.addHandler(handler)
        if log.level == logging.NOTSET:  # a command may have quietened it already
            log.setLevel(logging.INFO)
        log.propagate = False  # Dagster's handler on `cron_pipelines` must not turn these into events
    return log
