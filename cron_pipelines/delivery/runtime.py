"""What a delivery changes in its process while it runs: signal timing and the garbage collector.

Both are process-wide: a signal that arrives while outcomes are half recorded waits for the
block to end, and the cyclic collector leaves alone the objects that existed before the
first delivery of the process began.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
from collections.abc import Iterator

logger = logging.getLogger("cron_pipelines.delivery")


class StopRequested(KeyboardInterrupt):
    """The run is being terminated, and no signal told this process: a step on a Celery worker.

    An interrupt like SIGINT, raised where the pipeline waits: every delivery stops the same way.
    """


@contextlib.contextmanager
def interrupts_deferred(*, redeliver: bool) -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, so bookkeeping is never half done.

    With `redeliver`, a signal that came meanwhile is raised again right after the block,
    where the run's state is consistent; otherwise (cleanup after a stop) it is only logged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        number: signal.signal(number, lambda signum, _frame: received.append(signum))
        for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received and redeliver:
            signal.raise_signal(received[0])
        elif received:
            logger.warning("interrupt received while recording outcomes; stopping once they are recorded")


# While delivering, the cyclic collector runs after this many new container objects instead of
# 700: a run makes a few dozen per message, nearly all freed by reference counting at once.
DELIVERY_GC_THRESHOLD = 10_000
_collector_lock = threading.Lock()
_deliveries_in_process = 0
_collector_thresholds: tuple[int, ...] = ()


@contextlib.contextmanager
def collector_spared() -> Iterator[None]:
    """While notifications are delivered, the cyclic garbage collector runs rarely and on new objects only.

    A full collection walks every object that imports and Dagster made (over 200,000, about
    140 ms with the GIL held, every few seconds of a long run), though none of them becomes
    garbage meanwhile: `gc.freeze()` sets them aside. Young collections every 700 new objects
    added as much again. When the last delivery of the process ends, the objects are given
    back (`gc.unfreeze()`) and the thresholds restored, so nothing is kept for good.
    """
    global _deliveries_in_process, _collector_thresholds
    with _collector_lock:
        if not _deliveries_in_process:
            _collector_thresholds = gc.get_threshold()
            gc.set_threshold(DELIVERY_GC_THRESHOLD, *_collector_thresholds[1:])
        _deliveries_in_process += 1
        gc.freeze()
    try:
        yield
    finally:
        with _collector_lock:
            _deliveries_in_process -= 1
            if not _deliveries_in_process:
                gc.unfreeze()
                gc.set_threshold(*_collector_thresholds)
