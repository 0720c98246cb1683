"""Denied messages go into the audit trail without slowing the broker's event loop.

Each audit row is one durable SQLite transaction (an fsync): far too slow for the loop that
routes every message. :class:`DenialAudit` takes rows into a bounded queue (never blocking:
a full queue counts the row as dropped) and one writer thread appends them to
``identity/audit.db``. A flood of denied requests therefore costs the loop a dict and a
queue put each, and the audit what the disk can take.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("plantd.broker")

#: rows waiting for the writer before new ones are dropped (and counted)
QUEUE_SIZE = 10_000


class DenialAudit:
    """A bounded queue of audit rows and the thread writing them to ``path``."""

    def __init__(self, path: Path, size: int = QUEUE_SIZE) -> None:
        self.path = path
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(size)
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        self.failed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._write, name="broker-audit", daemon=True)
        self._thread.start()

    def record(self, **row: Any) -> None:
        """Queue one row (AuditLog.append's keywords); never blocks."""
        row.setdefault("ts", time.time())
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then end the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None

    def _write(self) -> None:
        from plantd.identity.audit import AuditLog

        audit: AuditLog | None = None
        try:
            while (row := self._queue.get()) is not None:
                try:
                    if audit is None:
                        audit = AuditLog(self.path)
                    audit.append(**row)
                    self.written += 1
                except Exception as exc:  # a full disk must not kill the broker
                    self.failed += 1
                    log.warning("audit of a denial failed: %s", exc)
        finally:
            if audit is not None:
                audit.close()
