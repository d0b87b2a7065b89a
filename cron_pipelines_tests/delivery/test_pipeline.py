"""The delivery pipeline's process-wide setting of the garbage collector, with deliveries overlapping."""

from __future__ import annotations

import gc

import pytest

from cron_pipelines.delivery.runtime import DELIVERY_GC_THRESHOLD, collector_spared


def test_overlapping_deliveries_give_objects_back_only_when_the_last_one_ends() -> None:
    thresholds = gc.get_threshold()
    first, second = collector_spared(), collector_spared()
    first.__enter__()
    assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == DELIVERY_GC_THRESHOLD
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == DELIVERY_GC_THRESHOLD
    second.__exit__(None, None, None)
    assert (gc.get_freeze_count(), gc.get_threshold()) == (0, thresholds)


def test_a_delivery_that_raises_gives_the_objects_back() -> None:
    thresholds = gc.get_threshold()
    with pytest.raises(RuntimeError), collector_spared():
        raise RuntimeError("the ledger is down")
    assert (gc.get_freeze_count(), gc.get_threshold()) == (0, thresholds)
