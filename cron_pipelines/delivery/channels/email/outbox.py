"""Email to a folder: one `.eml` file per message, for `make dev` and for a relay that picks files up."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cron_pipelines.delivery.channels.base import (
    STOPPED,
    ChannelUnavailable,
    OutgoingMessage,
    SendResult,
    ThreadedTransport,
)


class OutboxTransport(ThreadedTransport[OutgoingMessage]):
    """One `.eml` file per message, written atomically by one thread; names sort by time of writing.

    Messages hold names and addresses: the folder is 0700 and each file 0600, whatever the umask.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(1, "outbox")
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_uid == os.geteuid():
            self.directory.chmod(0o700)
        self._sequence = 0

    def check(self) -> None:
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise ChannelUnavailable(f"outbox {self.directory} is not writable", permanent=True)

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        if self._stopped.is_set():
            return SendResult(message.key, "stopped", STOPPED)
        try:
            self._write(message)
        except OSError as exc:
            # A full or read-only disk fails every later message the same way.
            return SendResult(message.key, "unavailable", f"outbox not writable: {exc.strerror}")
        return SendResult(message.key, "sent")

    def _write(self, message: OutgoingMessage) -> None:
        self._sequence += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{stamp}-{os.getpid()}-{self._sequence:06d}-{uuid.uuid4().hex[:8]}.eml"
        temporary = self.directory / f".{name}.tmp"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(message.data)
        # A reader never sees a half-written message: the rename is atomic.
        os.replace(temporary, self.directory / name)
