"""Metric consumer: the latest sample per (device, channel) in memory, recent ones in SQLite.

``latest`` is answered from memory (it is what dashboards poll), ``range`` from SQLite. The
ingestion path is the logger's: burst reads off the bus, batched inserts on a writer thread,
chunked retention by age and row count.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantd.logger.ingest import Batcher, BusStore, Database, parse_ts
from plantd.metric import TOPIC_PREFIX

__all__ = ["MetricStore", "MetricStoreSettings", "QueryError"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples(
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    device TEXT NOT NULL,
    channel TEXT NOT NULL,
    value REAL NOT NULL,
    units TEXT NOT NULL DEFAULT '',
    tags TEXT
);
CREATE INDEX IF NOT EXISTS samples_channel_ts ON samples(device, channel, ts);
CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts);
"""
_INSERT = "INSERT INTO samples(ts, device, channel, value, units, tags) VALUES (?,?,?,?,?,?)"
MAX_LIMIT = 10_000
RETENTION_CHUNK = 20_000

Row = tuple[float, str, str, float, str, str | None]


class QueryError(ValueError):
    """A request argument is invalid (reported as ``invalid_argument``)."""


@dataclass
class MetricStoreSettings:
    path: Path
    backend: str | None = "tcp://127.0.0.1:13001"
    topics: tuple[str, ...] = (TOPIC_PREFIX,)
    #: seconds of samples kept (0 = forever)
    max_age: float = 24 * 3600.0
    #: rows kept (0 = unlimited)
    max_rows: int = 1_000_000
    flush_records: int = 2000
    flush_interval: float = 0.2
    retention_interval: float = 10.0


def _doc(
    ts: float, device: str, channel: str, value: float, units: str, tags: Any
) -> dict[str, Any]:
    if isinstance(tags, str):
        tags = json.loads(tags)
    return {"timestamp": ts, "device": device, "channel": channel, "value": value,
            "units": units, "tags": tags or {}}


class MetricStore(BusStore):
    """Subscribe to the metric bus and keep samples queryable."""

    def __init__(self, settings: MetricStoreSettings) -> None:
        self.settings = settings
        self.batcher: Batcher[Row]
        super().__init__(
            Database(settings.path, _SCHEMA),
            Batcher(self._flush, size=settings.flush_records, interval=settings.flush_interval),
            settings.retention_interval,
        )
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self.received = 0
        self.invalid = 0
        self.trimmed = 0

    name = "metric"

    async def _load(self) -> None:
        for row in await self.db.read(_load_latest):
            doc = _doc(*row)
            self.latest[(doc["device"], doc["channel"])] = doc

    def _subscriptions(
        self,
    ) -> list[tuple[str, list[str], Callable[[list[bytes], float], None], int]]:
        if not self.settings.backend:
            return []
        return [(self.settings.backend, list(self.settings.topics), self._message, 100_000)]

    # --- ingestion --------------------------------------------------------------------

    def _message(self, frames: list[bytes], received: float) -> None:
        self.received += 1
        try:
            doc = json.loads(frames[1])
        except (ValueError, IndexError):
            self.invalid += 1
            return
        if not self.add(doc, received):
            self.invalid += 1

    def add(self, doc: Any, received: float | None = None) -> bool:
        """Accept one sample document; False if it is not a valid sample."""
        if not isinstance(doc, dict):
            return False
        device, channel, value = doc.get("device"), doc.get("channel"), doc.get("value")
        if not isinstance(device, str) or not device or not isinstance(channel, str) or not channel:
            return False
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        value = float(value)
        if not math.isfinite(value):
            return False
        ts = parse_ts(doc.get("timestamp", doc.get("ts")))
        if ts is None:
            ts = time.time() if received is None else received
        units = doc.get("units") if isinstance(doc.get("units"), str) else ""
        tags = doc.get("tags") if isinstance(doc.get("tags"), dict) else {}
        key = (device, channel)
        sample = _doc(ts, device, channel, value, units, tags)
        current = self.latest.get(key)
        if current is None or ts >= current["timestamp"]:
            self.latest[key] = sample
        self.counts[key] = self.counts.get(key, 0) + 1
        tags_json = json.dumps(tags, separators=(",", ":"), default=str) if tags else None
        self.batcher.add((ts, device, channel, value, units, tags_json))
        return True

    async def _flush(self, rows: list[Row]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN")
            try:
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self.db.write(write)

    async def flush(self) -> None:
        await self.batcher.flush_now()

    # --- retention --------------------------------------------------------------------

    async def apply_retention(self, now: float | None = None) -> int:
        s = self.settings
        now = time.time() if now is None else now
        deleted = 0

        def by_age(c: sqlite3.Connection) -> int:
            return c.execute(
                "DELETE FROM samples WHERE id IN (SELECT id FROM samples WHERE ts < ? LIMIT ?)",
                (now - s.max_age, RETENTION_CHUNK),
            ).rowcount

        def by_rows(c: sqlite3.Connection) -> int:
            (count,) = c.execute("SELECT count(*) FROM samples").fetchone()
            excess = count - s.max_rows
            if excess <= 0:
                return 0
            return c.execute(
                "DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT ?)",
                (min(excess, RETENTION_CHUNK),),
            ).rowcount

        for enabled, step in ((s.max_age > 0, by_age), (s.max_rows > 0, by_rows)):
            while enabled:
                n = await self.db.write(step)
                deleted += n
                if n < RETENTION_CHUNK:
                    break
        self.trimmed += deleted
        return deleted

    # --- queries ----------------------------------------------------------------------

    def channels(self) -> list[dict[str, Any]]:
        """Every known (device, channel) with units, last value and samples seen."""
        return [
            {"device": d, "channel": c, "units": doc["units"], "value": doc["value"],
             "timestamp": doc["timestamp"], "received": self.counts.get((d, c), 0)}
            for (d, c), doc in sorted(self.latest.items())
        ]

    def latest_samples(
        self, device: str | None = None, channel: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest sample of each channel matching ``device``/``channel`` (globs allowed)."""
        out = []
        for (d, c), doc in sorted(self.latest.items()):
            if device and not fnmatch.fnmatchcase(d, device):
                continue
            if channel and not fnmatch.fnmatchcase(c, channel):
                continue
            out.append(doc)
        return out

    async def range(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Stored samples of one device/channel between ``since`` and ``until``."""
        device, channel = params.get("device"), params.get("channel")
        if not isinstance(device, str) or not device:
            raise QueryError("range needs a device")
        if not isinstance(channel, str) or not channel:
            raise QueryError("range needs a channel")
        where, args = ["device = ?", "channel = ?"], [device, channel]
        for name, op in (("since", ">="), ("until", "<=")):
            value = params.get(name)
            if value in (None, ""):
                continue
            ts = parse_ts(value)
            if ts is None:
                raise QueryError(f"{name}: expected epoch seconds or an ISO-8601 time")
            where.append(f"ts {op} ?")
            args.append(ts)
        order = str(params.get("order") or "asc").lower()
        if order not in ("asc", "desc"):
            raise QueryError("order: expected 'asc' or 'desc'")
        limit = params.get("limit", 1000)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise QueryError("limit: expected a non-negative integer")
        args.append(min(limit, MAX_LIMIT))
        sql = (
            "SELECT ts, device, channel, value, units, tags FROM samples WHERE "
            + " AND ".join(where)
            + f" ORDER BY ts {order}, id {order} LIMIT ?"
        )
        rows = await self.db.read(lambda c: c.execute(sql, args).fetchall())
        return [_doc(*row) for row in rows]

    def counters(self) -> dict[str, Any]:
        b = self.batcher
        return {"received": self.received, "invalid": self.invalid, "stored": b.flushed,
                "pending": b.pending, "dropped": b.dropped, "failed": b.failed,
                "channels": len(self.latest), "trimmed": self.trimmed}


def _load_latest(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT s.ts, s.device, s.channel, s.value, s.units, s.tags FROM samples s JOIN"
        " (SELECT max(id) AS id FROM samples GROUP BY device, channel) m ON s.id = m.id"
    ).fetchall()
