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
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantd.logger.ingest import Batcher, BusStore, Database, parse_ts
from plantd.logger.paging import (
    REPLY_BUDGET,
    QueryError,
    fit_page,
    follow_pages,
    parse_limit,
    parse_record_cursor,
)
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
#: ``range``: samples per page by default and at most
RANGE_LIMIT = 1000
MAX_LIMIT = 10_000
#: ``list``/``latest``: channels per page by default and at most
CHANNEL_LIMIT = 1000
MAX_CHANNEL_LIMIT = 10_000
RETENTION_CHUNK = 20_000

Row = tuple[float, str, str, float, str, str | None]


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
    return {
        "timestamp": ts,
        "device": device,
        "channel": channel,
        "value": value,
        "units": units,
        "tags": tags or {},
    }


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
        units = u if isinstance(u := doc.get("units"), str) else ""
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
        return [self.channel_row(doc) for doc in self.latest_samples()]

    def channel_row(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A ``list`` row: the channel of the latest sample ``doc``."""
        key = (doc["device"], doc["channel"])
        return {
            "device": key[0],
            "channel": key[1],
            "units": doc["units"],
            "value": doc["value"],
            "timestamp": doc["timestamp"],
            "received": self.counts.get(key, 0),
        }

    def latest_samples(
        self, device: str | None = None, channel: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest sample of each channel matching ``device``/``channel`` (globs allowed)."""
        return [doc for _key, doc in self._matching(device, channel)]

    def _matching(
        self, device: str | None, channel: str | None
    ) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
        for (d, c), doc in sorted(self.latest.items()):
            if device and not fnmatch.fnmatchcase(d, device):
                continue
            if channel and not fnmatch.fnmatchcase(c, channel):
                continue
            yield (d, c), doc

    def channel_page(
        self, params: dict[str, Any], device: str | None = None, channel: str | None = None
    ) -> dict[str, Any]:
        """A page ``{items, more, next}`` of the latest samples matching ``device``/``channel``,
        by name: ``after`` is the ``[device, channel]`` a previous page ended with."""
        limit = parse_limit(params, CHANNEL_LIMIT, MAX_CHANNEL_LIMIT)
        after = _name_cursor(params.get("after"))
        out: list[dict[str, Any]] = []
        more = False
        for key, doc in self._matching(device, channel):
            if after is not None and key <= after:
                continue
            if len(out) == limit:
                more = True
                break
            out.append(doc)
        out, cut = fit_page(out)
        more = more or cut
        return {
            "items": out,
            "more": more,
            "next": [out[-1]["device"], out[-1]["channel"]] if more and out else None,
        }

    async def range(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Stored samples of one device/channel between ``since`` and ``until`` (first page)."""
        samples: list[dict[str, Any]] = (await self.range_page(params))["samples"]
        return samples

    async def range_page(
        self, params: dict[str, Any], budget: int = REPLY_BUDGET
    ) -> dict[str, Any]:
        """One page ``{samples, more, next}`` of a ``range`` request."""
        q = _parse_range(params)
        return await self._range_page(q, q.after, q.limit, budget)

    async def range_pages(
        self, params: dict[str, Any], budget: int = REPLY_BUDGET, total: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of a ``range`` request, up to ``total`` samples if given."""
        q = _parse_range(params)

        async def page(after: tuple[float, int] | None, limit: int) -> dict[str, Any]:
            return await self._range_page(q, after, limit, budget)

        async for doc in follow_pages(page, "samples", q.limit, q.after, total):
            yield doc

    async def _range_page(
        self, q: _Range, after: tuple[float, int] | None, limit: int, budget: int
    ) -> dict[str, Any]:
        where, args = list(q.where), list(q.args)
        if after is not None:
            where.append(f"(ts, id) {'<' if q.order == 'desc' else '>'} (?, ?)")
            args.extend(after)
        args.append(limit + 1)
        sql = (
            "SELECT ts, device, channel, value, units, tags, id FROM samples WHERE "
            + " AND ".join(where)
            + f" ORDER BY ts {q.order}, id {q.order} LIMIT ?"
        )
        rows = await self.db.read(lambda c: c.execute(sql, args).fetchall())
        ids = [row[6] for row in rows[:limit]]
        samples, cut = fit_page([_doc(*row[:6]) for row in rows[:limit]], budget)
        more = cut or len(rows) > limit
        last = len(samples) - 1
        return {
            "samples": samples,
            "more": more,
            "next": [samples[last]["timestamp"], ids[last]] if more and samples else None,
        }

    def counters(self) -> dict[str, Any]:
        b = self.batcher
        return {
            "received": self.received,
            "invalid": self.invalid,
            "stored": b.flushed,
            "pending": b.pending,
            "dropped": b.dropped,
            "failed": b.failed,
            "channels": len(self.latest),
            "trimmed": self.trimmed,
        }


@dataclass(frozen=True)
class _Range:
    """A validated ``range`` request."""

    where: tuple[str, ...]
    args: tuple[Any, ...]
    limit: int
    order: str
    after: tuple[float, int] | None


def _parse_range(params: dict[str, Any]) -> _Range:
    device, channel = params.get("device"), params.get("channel")
    if not isinstance(device, str) or not device:
        raise QueryError("device: range needs a device", "device")
    if not isinstance(channel, str) or not channel:
        raise QueryError("channel: range needs a channel", "channel")
    where = ["device = ?", "channel = ?"]
    args: list[object] = [device, channel]
    for name, op in (("since", ">="), ("until", "<=")):
        value = params.get(name)
        if value in (None, ""):
            continue
        ts = parse_ts(value)
        if ts is None:
            raise QueryError(f"{name}: expected epoch seconds or an ISO-8601 time", name)
        where.append(f"ts {op} ?")
        args.append(ts)
    order = str(params.get("order") or "asc").lower()
    if order not in ("asc", "desc"):
        raise QueryError("order: expected 'asc' or 'desc'", "order")
    limit = parse_limit(params, RANGE_LIMIT, MAX_LIMIT)
    cursor = parse_record_cursor(params.get("after"), "[timestamp, id]")
    return _Range(tuple(where), tuple(args), limit, order, cursor)


def _name_cursor(value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], str)
    ):
        return value[0], value[1]
    raise QueryError(
        f"after: expected the [device, channel] cursor of a previous page's next, got {value!r}",
        "after",
    )


def _load_latest(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT s.ts, s.device, s.channel, s.value, s.units, s.tags FROM samples s JOIN"
        " (SELECT max(id) AS id FROM samples GROUP BY device, channel) m ON s.id = m.id"
    ).fetchall()
