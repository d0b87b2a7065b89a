"""How notifications are delivered whatever their channel: batch sizes and the attempt cap."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field


class DeliveryResource(ConfigurableResource):
    """The delivery core's settings (docs/delivery.md). Values come from Settings, where each is defined and validated."""

    batch_size: int = Field(
        description="Notifications claimed per ledger request; two batches at most are claimed and not recorded "
        "(DELIVERY_BATCH_SIZE)."
    )
    max_attempts: int = Field(
        description="Claims of one notification before one the server keeps refusing is skipped (MAIL_MAX_ATTEMPTS)."
    )
    source_chunk_size: int = Field(
        description="Source records decided together where a job reads in chunks (SOURCE_CHUNK_SIZE)."
    )
