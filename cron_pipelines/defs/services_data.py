"""The services' data, owned elsewhere: external assets so the lineage shows where each decision came from."""

from __future__ import annotations

import dagster as dg

DUES = dg.AssetKey(["sql_service", "dues"])
VERIFICATIONS = dg.AssetKey(["sql_service", "verifications"])
USER_ACTIVITY = dg.AssetKey(["mongo_service", "user_activity"])
VERIFICATION_ATTEMPTS = dg.AssetKey(["mongo_service", "verification_attempts"])
NOTIFICATION_LEDGER = dg.AssetKey(["mongo_service", "notification_ledger"])

SERVICES_DATA = [
    dg.AssetSpec(
        DUES,
        group_name="services",
        kinds={"sql"},
        description="Dues and their payment status (sql-service `GET /v1/dues`).",
    ),
    dg.AssetSpec(
        VERIFICATIONS,
        group_name="services",
        kinds={"sql"},
        description="Employee verifications (sql-service `GET /v1/verifications`).",
    ),
    dg.AssetSpec(
        USER_ACTIVITY,
        group_name="services",
        kinds={"mongodb"},
        description="Users and their last activity (mongo-service `GET /v1/users/inactive`).",
    ),
    dg.AssetSpec(
        VERIFICATION_ATTEMPTS,
        group_name="services",
        kinds={"mongodb"},
        description="Verification attempts (mongo-service `GET /v1/verification-attempts`).",
    ),
    dg.AssetSpec(
        NOTIFICATION_LEDGER,
        group_name="services",
        kinds={"mongodb"},
        description="Every notification claimed, sent, failed or skipped, by idempotency key "
        "(mongo-service `/v1/notifications`): the per-email audit trail.",
    ),
]
