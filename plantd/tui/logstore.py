"""Bounded, filterable log buffer with seq-gap accounting (Textual-free).

The subscriber pushes records at bus speed (thousands/s); the view drains them on a timer, so the
cost per record is a deque append and the widget work is per flush, not per record (Toolong's
lesson). Every buffer is bounded; overflow and producer gaps are counted, never silent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from plantd.tui.source import LogRecord
from plantd.vocabulary import LEVELS, level_rank

__all__ = ["LEVELS", "LogFilter", "LogStore", "level_rank"]


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which records the view shows: minimum level, one service (or all), a text search."""

    min_level: str = "debug"
    service: str | None = None
    text: str = ""

    def matches(self, rec: LogRecord) -> bool:
        if level_rank(rec.level) < level_rank(self.min_level):
            return False
        if self.service is not None and rec.service != self.service:
            return False
        if self.text:
            needle = self.text.lower()
            return (
                needle in rec.msg.lower()
                or needle in rec.service.lower()
                or any(needle in str(v).lower() for v in rec.fields.values())
            )
        return True


class LogStore:
    """All retained records, the filtered view of them, and the pending ingress queue."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.records: deque[LogRecord] = deque(maxlen=capacity)
        self.view: deque[LogRecord] = deque(maxlen=capacity)
        self._pending: deque[LogRecord] = deque()
        self.filter = LogFilter()
        self.missed = 0  # gaps in a producer's seq: records the bus dropped before us
        self.dropped = 0  # records we dropped because the console fell behind
        self.received = 0
        self.services: set[str] = set()
        self._last_seq: dict[tuple[str, str, int], int] = {}

    def push(self, rec: LogRecord) -> None:
        """Accept one record from the bus (cheap: gap check and append)."""
        self.received += 1
        if rec.seq is not None:
            producer = (rec.service, rec.host, rec.pid)
            last = self._last_seq.get(producer)
            if last is not None and rec.seq > last + 1:
                self.missed += rec.seq - last - 1
            if len(self._last_seq) > 4096 and producer not in self._last_seq:
                self._last_seq.clear()  # bound memory if producers churn
            self._last_seq[producer] = rec.seq
        if len(self._pending) >= self.capacity:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(rec)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def drain(self) -> tuple[int, int]:
        """Move pending records into the buffer; returns (added to view, evicted from view)."""
        if not self._pending:
            return 0, 0
        batch, self._pending = self._pending, deque()
        before = len(self.view)
        added = 0
        flt = self.filter
        for rec in batch:
            self.records.append(rec)
            self.services.add(rec.service)
            if flt.matches(rec):
                self.view.append(rec)
                added += 1
        evicted = before + added - len(self.view)
        return added, evicted

    def prepend_history(self, older: Iterable[LogRecord]) -> int:
        """Insert records from the logger service that predate what the bus delivered."""
        oldest = self.records[0].ts if self.records else float("inf")
        older = [r for r in older if r.ts < oldest]
        room = self.capacity - len(self.records)
        if room <= 0 or not older:
            return 0
        older = older[-room:]
        for rec in reversed(older):
            self.records.appendleft(rec)
            self.services.add(rec.service)
        self.refilter()
        return len(older)

    def set_filter(self, flt: LogFilter) -> None:
        self.filter = flt
        self.refilter()

    def refilter(self) -> None:
        flt = self.filter
        self.view = deque((r for r in self.records if flt.matches(r)), maxlen=self.capacity)

    def clear(self) -> None:
        self.records.clear()
        self.view.clear()
        self._pending.clear()
