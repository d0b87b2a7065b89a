"""`deactivate_inactive_users`: deactivate users inactive for long whose warning went out in time; warn the rest."""

from collections import Counter
from collections.abc import Sequence
from typing import get_args

import dagster as dg

from cron_pipelines.batching import chunked
from cron_pipelines.clients.mongo_service import MongoServiceClient
from cron_pipelines.defs.services_data import NOTIFICATION_LEDGER, USER_ACTIVITY
from cron_pipelines.defs.users.inactivity_warnings import InactivityConfig
from cron_pipelines.delivery.pipeline import Gate
from cron_pipelines.factory.confirmations import resend_failed_confirmations
from cron_pipelines.factory.daily import DailyOptions, daily_job
from cron_pipelines.factory.notification_asset import Delivery, NotificationAssetSpec, notification_asset
from cron_pipelines.factory.summary import prefixed
from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import ClaimResult, Deactivation, InactiveUser
from cron_pipelines.models.records import InvalidRecord
from cron_pipelines.resources import MongoServiceResource
from cron_pipelines.rules import inactivity as rules
from cron_pipelines.rules.confirmations import claimed_before, confirmation_skip_reason

JOB = "deactivate_inactive_users"
INACTIVE_USER_DEACTIVATIONS = dg.AssetKey("inactive_user_deactivations")


def inactive_user_deactivations(
    delivery: Delivery, config: InactivityConfig, mongo_service: MongoServiceResource
) -> None:
    """Claiming each candidate's warning key answers both questions in one batch: a `claimed`
    warning was never sent (it is sent now), a `duplicate` carries the sent warning's record and its date."""
    day = delivery.day
    cutoff = day.days_before_start(config.deactivate_after_days)
    warning_states: Counter[str] = Counter()
    write_outcomes: Counter[str] = Counter()
    gate = _deactivation_gate(mongo_service.client, write_outcomes)
    pipeline = delivery.pipeline()
    users = mongo_service.client.iter_inactive_users(last_active_before=cutoff)
    for chunk in chunked(users, delivery.source_chunk_size):
        candidates: dict[str, InactiveUser] = {}  # by id: a user listed twice is decided once
        for user in chunk:
            if isinstance(user, InvalidRecord):
                pipeline.stats.count_invalid(user)
            elif rules.is_inactive(user, day, config.deactivate_after_days):
                candidates.setdefault(user.id, user)
        warnings = [rules.inactivity_warning(user, day, config) for user in candidates.values()]
        claims = pipeline.deliver_chunk(warnings)
        eligible = []
        for user, warning in zip(candidates.values(), warnings, strict=True):
            claim = claims.get(warning.key)
            if claim is None:  # not claimable (counted as invalid): nothing known about its warning
                continue
            state = rules.warning_state(claim.outcome, claim.record, day, config)
            warning_states[state] += 1
            if state == "deactivate":
                eligible.append(user)
        pipeline.deliver_chunk([rules.account_deactivated(user, day) for user in eligible], gate=gate)
    resent = resend_failed_confirmations(pipeline, mongo_service, NotificationKind.ACCOUNT_DEACTIVATED, gate)
    delivery.report(
        inactive_before=cutoff.isoformat(),
        **prefixed("write", write_outcomes, ("deactivated", "already_inactive", "active_again", "not_found")),
        **prefixed("warning", warning_states, get_args(rules.WarningState)),
        failed_confirmations_retried=resent,
    )


def _deactivation_gate(client: MongoServiceClient, write_outcomes: Counter[str]) -> Gate:
    """Deactivates the users whose `account_deactivated` email this run claimed; sends it where that worked."""

    def deactivate(owned: Sequence[tuple[Notification, ClaimResult]]) -> list[str | None]:
        requests = [
            Deactivation(user_id=notification.user_id, last_active_at=notification.metadata["last_active_at"])
            for notification, _ in owned
        ]
        reasons = []
        for (notification, claim), (_, result) in zip(owned, client.deactivate_users(requests), strict=True):
            write_outcomes[result.outcome] += 1
            reasons.append(
                confirmation_skip_reason(
                    result.outcome,
                    applied="deactivated",
                    already="already_inactive",
                    claimed_before=claimed_before(notification, claim),
                )
            )
        return reasons

    return deactivate


def definitions(options: DailyOptions) -> dg.Definitions:
    asset = notification_asset(
        inactive_user_deactivations,
        specs=[
            NotificationAssetSpec(
                INACTIVE_USER_DEACTIVATIONS,
                "Deactivates users inactive for deactivate_after_days whose warning was sent warning_grace_days ago; "
                "warns the rest.",
                deps=[USER_ACTIVITY, NOTIFICATION_LEDGER],
                kinds=frozenset({"python", "email", "mongodb"}),
            )
        ],
        config=InactivityConfig,
        options=options,
        group_name="user_lifecycle",
        owners=["team:accounts"],
        resources=["mongo_service"],
    )
    return daily_job(
        JOB,
        [asset],
        at=(11, 0),
        options=options,
        description="Deactivate users inactive long enough whose warning was sent in time; warn the others.",
    )
