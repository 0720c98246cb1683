"""Textual-free view logic: rates, heartbeat classification, value parsing and formatting.

Kept apart from the widgets so the rules an operator relies on (when is a worker late, what does
an edited value become on the wire) are unit-tested without a terminal.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plantd.tui.source import WorkerInfo

SPARK_CHARS = "▁▂▃▄▅▆▇█"


class RateTracker:
    """Requests/s per service from cumulative counters, with a short history for sparklines."""

    def __init__(self, history: int = 30) -> None:
        self._last: dict[str, tuple[int, float]] = {}
        self.history: dict[str, deque[float]] = {}
        self._size = history

    def update(self, name: str, count: int | None, now: float, rate: float | None = None) -> float:
        """Record a sample; `rate` (reported by the broker) wins over the counter delta."""
        if rate is None:
            rate = 0.0
            if count is not None:
                prev = self._last.get(name)
                if prev is not None and now > prev[1] and count >= prev[0]:
                    rate = (count - prev[0]) / (now - prev[1])
                self._last[name] = (count, now)
        self.history.setdefault(name, deque(maxlen=self._size)).append(rate)
        return rate

    def forget_except(self, names: set[str]) -> None:
        """Drop services that disappeared so the tracker stays bounded."""
        for name in list(self.history):
            if name not in names:
                self.history.pop(name, None)
                self._last.pop(name, None)


def sparkline(values: Sequence[float], width: int = 12) -> str:
    """Unicode sparkline of the last `width` values (scaled to their own maximum)."""
    values = list(values)[-width:]
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return SPARK_CHARS[0] * len(values)
    last = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[min(last, int(v / top * last + 0.5))] for v in values)


def heartbeat_status(age: float | None, interval: float, liveness: int) -> str:
    """'ok', 'late' (missed a beat) or 'expired' (past the broker's liveness); '?' if unknown."""
    if age is None:
        return "?"
    if age >= interval * liveness:
        return "expired"
    if age > interval * 1.5:
        return "late"
    return "ok"


#: sort order of worker statuses (problems first)
SEVERITY = {"expired": 0, "late": 1, "?": 2, "ok": 3}


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One line of the workers table: a worker, or the healthy workers of a service folded."""

    key: str
    worker: str  # identity, or "N workers" for a folded group
    service: str
    state: str
    age: float | None  # heartbeat age (the oldest of a group)
    status: str  # ok | late | expired | ?


def worker_rows(
    workers: Sequence[WorkerInfo], statuses: dict[str, str], *, fold_healthy: bool
) -> list[WorkerRow]:
    """Problem workers first, one row each; with ``fold_healthy`` the healthy workers of a
    service with several of them become one row, so 32 State workers take one line at 80x24
    and a late worker never hides below them."""
    ordered = sorted(
        workers, key=lambda w: (SEVERITY.get(statuses[w.identity], 2), w.service, w.identity)
    )
    healthy: dict[str, list[WorkerInfo]] = {}
    if fold_healthy:
        for w in ordered:
            if statuses[w.identity] == "ok":
                healthy.setdefault(w.service, []).append(w)
    rows: list[WorkerRow] = []
    folded: set[str] = set()
    for w in ordered:
        group = healthy.get(w.service)
        if group is not None and len(group) > 1 and statuses[w.identity] == "ok":
            if w.service not in folded:
                folded.add(w.service)
                busy = sum(g.state == "busy" for g in group)
                ages = [g.heartbeat_age for g in group if g.heartbeat_age is not None]
                rows.append(
                    WorkerRow(
                        f"{w.service}/*",
                        f"{len(group)} workers",
                        w.service,
                        f"{busy} busy" if busy else "idle",
                        max(ages) if ages else None,
                        "ok",
                    )
                )
            continue
        rows.append(
            WorkerRow(
                f"{w.service}/{w.identity}",
                w.identity[:16],
                w.service,
                w.state,
                w.heartbeat_age,
                statuses[w.identity],
            )
        )
    return rows


def parse_value(text: str) -> Any:
    """An edited value: JSON when it parses (numbers, true, objects...), otherwise a string."""
    stripped = text.strip()
    if not stripped:
        return ""
    try:
        return json.loads(stripped)
    except ValueError:
        return text


def format_value(value: Any, limit: int | None = None) -> str:
    """Compact JSON, so a string "1" and a number 1 never look the same."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if limit is not None and len(text) > limit:
        return text[: max(0, limit - 1)] + "…"
    return text


def format_clock(epoch: float, tz: tzinfo | None = None) -> str:
    """HH:MM:SS.mmm of an epoch stamp in the console's time zone (UTC in tests)."""
    moment = datetime.fromtimestamp(epoch, tz=tz) if tz else datetime.fromtimestamp(epoch)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def format_updated(value: str | float, tz: tzinfo | None = None) -> str:
    """'YYYY-MM-DD HH:MM:SS' in the console's zone from epoch seconds (the state service) or
    an ISO stamp; anything else is shown trimmed rather than hidden."""
    from plantd.tui.source import parse_ts

    if value in ("", None):
        return ""
    ts = parse_ts(value)
    if ts is None:
        return str(value).replace("T", " ")[:19]
    return datetime.fromtimestamp(ts, tz=tz).strftime("%Y-%m-%d %H:%M:%S")


def format_rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:.0f}"
    return f"{rate:.1f}"


def format_age(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 60:
        return f"{age:.1f}s"
    return f"{age / 60:.0f}m"
