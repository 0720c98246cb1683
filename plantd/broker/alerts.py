"""Rate-limited warnings with counts, so trouble shows at the default log level without
costing a log line per request.

The core only records (:meth:`Alerts.note` is a dict update); the server asks for the due
lines on each tick (:meth:`Alerts.due`) and logs them. At most one line per kind per
``interval`` seconds, carrying how many times it happened since the previous line and the
latest detail.
"""

from __future__ import annotations

#: kind -> what the count in a line counts
KINDS = {
    "queue_full": "requests refused or dropped: queue full",
    "expired": "requests expired waiting for a worker",
    "unroutable": "messages to peers that are gone",
    "oversized": "oversized messages",
    "dropped": "messages dropped: peer not reading",
    "worker_lost": "requests lost with their worker",
}


class Alerts:
    """Counts per kind since the last line, the latest detail, and when each kind last logged."""

    __slots__ = ("_last", "_pending", "interval")

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._pending: dict[str, list[object]] = {}
        self._last: dict[str, float] = {}

    def note(self, kind: str, detail: str) -> None:
        entry = self._pending.get(kind)
        if entry is None:
            self._pending[kind] = [1, detail]
        else:
            entry[0] += 1  # type: ignore[operator]
            entry[1] = detail

    def due(self, now: float) -> list[str]:
        """Lines to log now: kinds with news whose last line is ``interval`` old or older."""
        lines = []
        for kind in list(self._pending):
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                continue
            count, detail = self._pending.pop(kind)
            self._last[kind] = now
            since = "" if last is None else f" in the last {now - last:.0f}s"
            lines.append(f"{KINDS.get(kind, kind)}: {count}{since} (latest: {detail})")
        return lines
