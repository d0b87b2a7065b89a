"""The six jobs of the contract (§5), each a daily-partitioned selection of assets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from cron_pipelines.assets.verifications import DECISIONS, REMINDERS

if TYPE_CHECKING:  # the public API has no name for the type define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

JOB_SELECTIONS: dict[str, tuple[list[dg.AssetKey | str], str]] = {
    "send_payment_reminders": (["payment_reminders"], "Remind users of dues due in 7, 3, 1 and 0 days."),
    "mark_overdue_dues": (
        ["overdue_marks", "overdue_notices"],
        "Mark past-due dues overdue, then send notices 1, 7, 14 and 30 days past due.",
    ),
    "notify_inactive_users": (["inactivity_warnings"], "Warn users inactive for 30 days."),
    "deactivate_inactive_users": (
        ["inactive_user_deactivations"],
        "Deactivate users inactive for 90 days and warned at least 7 days ago.",
    ),
    "verify_employees": ([DECISIONS, REMINDERS], "Decide pending verifications and remind the open ones."),
    "maintenance": (["ledger_health"], "Report notifications claimed and never finished."),
}


def build_jobs() -> dict[str, UnresolvedAssetJobDefinition]:
    """The jobs; their daily partitions come from the assets they select."""
    # One process per run: every job has one or two steps, and the multiprocess
    # executor would spend seconds starting a process per step.
    return {
        name: dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*keys),
            executor_def=dg.in_process_executor,
            description=description,
        )
        for name, (keys, description) in JOB_SELECTIONS.items()
    }
