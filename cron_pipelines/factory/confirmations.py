"""Confirmation emails whose send failed after their write: found again in the ledger, and sent by a later run."""

from __future__ import annotations

import itertools

from cron_pipelines.delivery.pipeline import Gate, NotificationPipeline
from cron_pipelines.models.notification import NotificationKind
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines.resources import MongoServiceResource
from cron_pipelines.rules.confirmations import confirmation_from_record

# Failed confirmations taken up per run. They are few (sends that failed after their
# write); the bound keeps memory flat after a long mail outage, and the next run goes on.
FAILED_CONFIRMATIONS_PER_RUN = 5_000


def resend_failed_confirmations(
    pipeline: NotificationPipeline, mongo_service: MongoServiceResource, kind: NotificationKind, gate: Gate
) -> int:
    """Claim, write again and send the confirmations of `kind` recorded `failed` or `released`; how many.

    Their subjects have left the service's lists once the write is done, so the ledger is
    where they are found. The gate repeats the write (idempotent): its `already` answer on
    a retried claim sends the email. Collected before delivering, because claiming changes
    the status the listing filters on.
    """
    failed = []
    records = mongo_service.client.iter_retryable(kind=kind)
    for record in itertools.islice(records, FAILED_CONFIRMATIONS_PER_RUN):
        if isinstance(record, InvalidRecord):
            pipeline.stats.count_invalid(record)
        else:
            failed.append(confirmation_from_record(record))
    pipeline.deliver(failed, gate=gate)
    return len(failed)
