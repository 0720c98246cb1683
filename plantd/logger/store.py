"""The logger's record store: ``log`` and ``event`` bus records in one SQLite file.

Records arrive at bus speed, are parsed and gap-checked on the event loop (cheap), and are
written in batches by the :class:`~plantd.storage.ingest.Batcher` on the writer thread, so
10,000 records/s cost one transaction every ~100 ms. Retention trims by age and by row count
in bounded chunks between batches. Each producer ``(host, pid, service)`` has its last ``seq``
tracked: a jump from 41 to 45 counts 3 records missed, which is how bus loss becomes visible.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantd.storage.ingest import Batcher, BusStore, Database, parse_ts
from plantd.storage.paging import (
    REPLY_BUDGET,
    QueryError,
    fit_page,
    follow_pages,
    parse_limit,
    parse_record_cursor,
)
from plantd.vocabulary import LEVEL_NAMES, LOGGER_PRESENT_TOPIC, bus, level_name, level_number

__all__ = ["LogStore", "QueryError", "StoreSettings"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records(
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    received REAL NOT NULL,
    level INTEGER NOT NULL,
    service TEXT NOT NULL,
    host TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL DEFAULT 0,
    logger TEXT NOT NULL DEFAULT '',
    msg TEXT NOT NULL DEFAULT '',
    fields TEXT,
    seq INTEGER,
    source TEXT NOT NULL DEFAULT 'log',
    topic TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS records_ts ON records(ts);
CREATE INDEX IF NOT EXISTS records_service_ts ON records(service, ts);
CREATE INDEX IF NOT EXISTS records_level_ts ON records(level, ts);
CREATE TABLE IF NOT EXISTS producers(
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    service TEXT NOT NULL,
    first_seq INTEGER,
    last_seq INTEGER,
    received INTEGER NOT NULL DEFAULT 0,
    missed INTEGER NOT NULL DEFAULT 0,
    resets INTEGER NOT NULL DEFAULT 0,
    last_seen REAL NOT NULL,
    PRIMARY KEY(host, pid, service)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors(
    name TEXT PRIMARY KEY,
    id INTEGER NOT NULL
) WITHOUT ROWID;
"""

_INSERT = (
    "INSERT INTO records(ts, received, level, service, host, pid, logger, msg, fields, seq,"
    " source, topic) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_UPSERT_PRODUCER = (
    "INSERT INTO producers(host, pid, service, first_seq, last_seq, received, missed, resets,"
    " last_seen) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(host, pid, service) DO UPDATE SET"
    " first_seq=excluded.first_seq, last_seq=excluded.last_seq, received=excluded.received,"
    " missed=excluded.missed, resets=excluded.resets, last_seen=excluded.last_seen"
)
_COLUMNS = (
    "id",
    "ts",
    "received",
    "level",
    "service",
    "host",
    "pid",
    "logger",
    "msg",
    "fields",
    "seq",
    "source",
    "topic",
)
_KNOWN_EVENT_KEYS = frozenset(
    (
        "ts",
        "timestamp",
        "level",
        "service",
        "source",
        "host",
        "pid",
        "logger",
        "msg",
        "message",
        "fields",
        "seq",
    )
)
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
RETENTION_CHUNK = 20_000
#: a page of a query with filters no index serves (text, globs, host, ...) examines at most
#: this many records (~0.1 s), then answers, possibly short or empty, with ``more: true``
SCAN_ROWS = 100_000
MAX_PRODUCERS = 10_000

Row = tuple[Any, ...]  # the _INSERT parameters


@dataclass
class StoreSettings:
    """Tunables of the store (the logger daemon maps ``PLANTD_LOGGER_*`` onto these)."""

    path: Path
    log_backend: str | None = bus("log").subscribe
    event_backend: str | None = bus("event").subscribe
    #: seconds; records older than this are deleted (0 = keep forever)
    max_age: float = 7 * 24 * 3600.0
    #: rows; the oldest beyond this are deleted (0 = unlimited)
    max_rows: int = 1_000_000
    flush_records: int = 2000
    flush_interval: float = 0.05
    max_pending: int = 200_000
    retention_interval: float = 5.0
    hwm: int = 100_000
    #: records one page of a scanning query examines at most (:data:`SCAN_ROWS`)
    scan_rows: int = SCAN_ROWS


@dataclass
class Producer:
    """Sequence accounting of one ``(host, pid, service)``."""

    first_seq: int
    last_seq: int
    received: int = 1
    missed: int = 0
    resets: int = 0
    last_seen: float = 0.0
    #: the first seq that came in order (live): replays from it on are duplicates
    live_first: int = -1

    def __post_init__(self) -> None:
        if self.live_first < 0:
            self.live_first = self.first_seq

    def as_row(self, key: tuple[str, int, str]) -> tuple[Any, ...]:
        return (
            *key,
            self.first_seq,
            self.last_seq,
            self.received,
            self.missed,
            self.resets,
            self.last_seen,
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class LogStore(BusStore):
    """Subscribe, batch, store, trim, query. ``start()``/``stop()`` or ``async with``."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.batcher: Batcher[Row]
        super().__init__(
            Database(settings.path, _SCHEMA),
            Batcher(
                self._flush,
                size=settings.flush_records,
                interval=settings.flush_interval,
                max_pending=settings.max_pending,
            ),
            settings.retention_interval,
        )
        self.producers: dict[tuple[str, int, str], Producer] = {}
        self._dirty: set[tuple[str, int, str]] = set()
        #: called with each batch of record dicts as it is written (Loki forwarding); must
        #: not block
        self.listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        #: called (no arguments) after each batch is committed: a cheap wake-up for readers
        #: of the table such as the Loki forwarder; must not block
        self.on_commit: list[Callable[[], None]] = []
        #: the largest record id when the database was opened (where a new cursor starts)
        self.opened_at_id = 0
        #: the largest record id written so far (what a reader of the table has to catch up to)
        self.last_id = 0
        self.received = 0
        self.invalid = 0
        #: replayed records (see plantd.logbus) that had arrived live already: not stored
        self.replayed_duplicates = 0
        self.trimmed = 0
        self.started = time.time()

    # --- lifecycle --------------------------------------------------------------------

    name = "logger"

    async def _load(self) -> None:
        await self.db.write(self._load_producers)
        (top,) = await self.db.read(lambda c: c.execute("SELECT max(id) FROM records").fetchone())
        self.opened_at_id = self.last_id = int(top or 0)

    def _subscriptions(
        self,
    ) -> list[tuple[str, list[str], Callable[[list[bytes], float], None], int]]:
        s = self.settings
        subs: list[tuple[str, list[str], Callable[[list[bytes], float], None], int]] = []
        if s.log_backend:
            # the presence marker first: producers replay what they kept for the logger when
            # it arrives, and it must arrive before "" lets live records through
            subs.append((s.log_backend, [LOGGER_PRESENT_TOPIC, ""], self._log_message, s.hwm))
        if s.event_backend:
            subs.append((s.event_backend, [""], self._event_message, s.hwm))
        return subs

    # --- ingestion (hot path) ---------------------------------------------------------

    def _log_message(self, frames: list[bytes], received: float) -> None:
        self._ingest(frames, received, "log")

    def _event_message(self, frames: list[bytes], received: float) -> None:
        self._ingest(frames, received, "event")

    def _ingest(self, frames: list[bytes], received: float, source: str) -> None:
        self.received += 1
        try:
            topic = frames[0].decode("utf-8", "replace")
            doc = json.loads(frames[1]) if len(frames) > 1 else {}
        except (ValueError, IndexError):
            self.invalid += 1
            return
        self.add(topic, doc, source=source, received=received)

    def add(
        self, topic: str, doc: Any, *, source: str = "log", received: float | None = None
    ) -> bool:
        """Accept one record as it came off a bus; False if it was dropped (queue full)."""
        received = time.time() if received is None else received
        if not isinstance(doc, dict):
            doc = {"msg": _text(doc)}
        topic_service, _, topic_level = topic.rpartition(".")
        if source == "log":
            service = _text(doc.get("service")) or topic_service or topic
            level = level_number(doc.get("level") or topic_level)
            fields = doc.get("fields")
            msg = _text(doc.get("msg"))
        else:
            service = _text(doc.get("service") or doc.get("source")) or topic
            level = level_number(doc.get("level"))
            fields = {k: v for k, v in doc.items() if k not in _KNOWN_EVENT_KEYS}
            if isinstance(doc.get("fields"), dict):
                fields.update(doc["fields"])
            msg = _text(doc.get("msg") or doc.get("message") or doc.get("event")) or topic
        ts = parse_ts(doc.get("ts", doc.get("timestamp"))) or received
        host = _text(doc.get("host"))
        pid = _int(doc.get("pid"))
        seq = doc.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int):
            seq = None
        elif not self._track(host, pid, service, seq, received, doc.get("replay") is True):
            self.replayed_duplicates += 1
            return True
        fields_json = json.dumps(fields, separators=(",", ":"), default=str) if fields else None
        return self.batcher.add(
            (
                ts,
                received,
                level,
                service,
                host,
                pid,
                _text(doc.get("logger")),
                msg,
                fields_json,
                seq,
                source,
                topic,
            )
        )

    def _track(
        self, host: str, pid: int, service: str, seq: int, now: float, replay: bool = False
    ) -> bool:
        """Account ``seq``; False for a replayed record this logger already has.

        A producer replays what it published before it saw the logger subscribe
        (:mod:`plantd.logbus`): those below the first ``seq`` received are new (they fill in
        before it), those from the first to the last received came live already.
        """
        key = (host, pid, service)
        p = self.producers.get(key)
        if p is not None and replay and seq <= p.last_seq:
            if seq >= p.live_first:
                return False
            p.first_seq = min(p.first_seq, seq)
            p.received += 1
            self._dirty.add(key)
            return True
        if p is None:
            if len(self.producers) >= MAX_PRODUCERS:
                oldest = min(self.producers, key=lambda k: self.producers[k].last_seen)
                del self.producers[oldest]
                self._dirty.discard(oldest)
            self.producers[key] = Producer(seq, seq, last_seen=now)
        else:
            if seq > p.last_seq + 1:
                p.missed += seq - p.last_seq - 1
            elif seq <= p.last_seq:
                p.resets += 1  # restarted producer reusing the pid, or a duplicate
            p.last_seq = seq
            p.received += 1
            p.last_seen = now
        self._dirty.add(key)
        return True

    async def _flush(self, rows: list[Row]) -> None:
        dirty = [self.producers[k].as_row(k) for k in self._dirty if k in self.producers]
        self._dirty.clear()

        def write(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN")
            try:
                conn.executemany(_INSERT, rows)
                if dirty:
                    conn.executemany(_UPSERT_PRODUCER, dirty)
                (top,) = conn.execute("SELECT max(id) FROM records").fetchone()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return int(top or 0)

        self.last_id = await self.db.write(write)
        for wake in self.on_commit:
            wake()
        if self.listeners:
            docs = [_row_doc((None, *row)) for row in rows]
            for listener in self.listeners:
                try:
                    listener(docs)
                except Exception:
                    log.exception("log store listener failed")

    async def flush(self) -> None:
        """Write everything received so far (tests and shutdown)."""
        await self.batcher.flush_now()

    def _load_producers(self, conn: sqlite3.Connection) -> None:
        for row in conn.execute(
            "SELECT host, pid, service, first_seq, last_seq, received, missed, resets, last_seen"
            " FROM producers ORDER BY last_seen DESC LIMIT ?",
            (MAX_PRODUCERS,),
        ):
            self.producers[(row[0], row[1], row[2])] = Producer(*row[3:])

    # --- durable cursors (what a reader of the table, e.g. the Loki forwarder, has done) -

    async def cursor(self, name: str, default: int) -> int:
        """The id stored under ``name``; created as ``default`` if there is none."""

        def run(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT OR IGNORE INTO cursors(name, id) VALUES (?, ?)", (name, default))
            (value,) = conn.execute("SELECT id FROM cursors WHERE name = ?", (name,)).fetchone()
            return int(value)

        return await self.db.write(run)

    async def set_cursor(self, name: str, value: int) -> None:
        await self.db.write(
            lambda c: c.execute(
                "INSERT INTO cursors(name, id) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET"
                " id = excluded.id",
                (name, value),
            )
        )

    async def records_after(self, after_id: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` records with ``id > after_id`` in id (arrival) order, and the
        largest id in the table (0 when empty)."""

        def run(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
            rows = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM records WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
            (top,) = conn.execute("SELECT max(id) FROM records").fetchone()
            return rows, int(top or 0)

        rows, top = await self.db.read(run)
        return [_row_doc(row) for row in rows], top

    # --- retention --------------------------------------------------------------------

    async def apply_retention(self, now: float | None = None) -> int:
        """Delete records beyond ``max_age`` and ``max_rows``; returns how many went.

        Chunked so a large backlog never holds the writer for long: batches interleave.
        """
        s = self.settings
        now = time.time() if now is None else now
        deleted = 0
        if s.max_age > 0:
            cutoff = now - s.max_age
            while True:
                n = await self.db.write(
                    lambda c: (
                        c.execute(
                            "DELETE FROM records WHERE id IN (SELECT id FROM records WHERE ts < ?"
                            " LIMIT ?)",
                            (cutoff, RETENTION_CHUNK),
                        ).rowcount
                    )
                )
                deleted += n
                if n < RETENTION_CHUNK:
                    break
        if s.max_rows > 0:
            while True:

                def trim(c: sqlite3.Connection) -> int:
                    (max_id,) = c.execute("SELECT max(id) FROM records").fetchone()
                    (count,) = c.execute("SELECT count(*) FROM records").fetchone()
                    excess = count - s.max_rows
                    if max_id is None or excess <= 0:
                        return 0
                    # ids grow with arrival: the oldest arrivals are the smallest ids
                    return c.execute(
                        "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id"
                        " LIMIT ?)",
                        (min(excess, RETENTION_CHUNK),),
                    ).rowcount

                n = await self.db.write(trim)
                deleted += n
                if n < RETENTION_CHUNK:
                    break
        self.trimmed += deleted
        return deleted

    # --- queries ----------------------------------------------------------------------

    async def query(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` records matching ``params`` (a ``query`` document), in process: not
        bounded by the reply budget, following pages of queries that scan."""
        params = params or {}
        q = parse_query(params)

        async def page(after: tuple[float, int] | None, limit: int) -> dict[str, Any]:
            return await self._page(q, after, limit, None)

        records: list[dict[str, Any]] = []
        async for doc in follow_pages(page, "records", q.limit, q.after, q.limit):
            records.extend(doc["records"])
        return records

    async def query_page(
        self, params: dict[str, Any], budget: int | None = REPLY_BUDGET
    ) -> dict[str, Any]:
        """One page ``{records, more, next}`` of a ``query`` document (see :func:`parse_query`)."""
        q = parse_query(params)
        return await self._page(q, q.after, q.limit, budget)

    async def query_pages(
        self, params: dict[str, Any], budget: int = REPLY_BUDGET, total: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of a query (:func:`~plantd.storage.paging.follow_pages`)."""
        q = parse_query(params)

        async def page(after: tuple[float, int] | None, limit: int) -> dict[str, Any]:
            return await self._page(q, after, limit, budget)

        async for doc in follow_pages(page, "records", q.limit, q.after, total):
            yield doc

    async def _page(
        self, q: Query, after: tuple[float, int] | None, limit: int, budget: int | None
    ) -> dict[str, Any]:
        def run(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], Any]:
            bound = None
            if q.residual:
                # the key scan_rows records on (index only): the page's scan stops there
                skip = max(1, self.settings.scan_rows) - 1
                sql, args = q.statement(after, 1, columns=("ts", "id"), residual=False, offset=skip)
                bound = conn.execute(sql, args).fetchone()
            sql, args = q.statement(after, limit + 1, bound=bound)  # +1: is there more?
            return conn.execute(sql, args).fetchall(), bound

        rows, bound = await self.db.read(run)
        records = [_row_doc(row) for row in rows[:limit]]
        cut = False
        if budget is not None:
            records, cut = fit_page(records, budget, _shrink)
        if cut or len(rows) > limit:
            last = records[-1]
            return {"records": records, "more": True, "next": [last["ts"], last["id"]]}
        if bound is not None:  # scanned up to the bound: go on after it
            return {"records": records, "more": True, "next": [bound[0], bound[1]]}
        return {"records": records, "more": False, "next": None}

    async def stats(self) -> dict[str, Any]:
        """Records per level and service, missed per producer, ingestion counters."""

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            levels: dict[str, int] = {}
            services: dict[str, int] = {}
            total = 0
            for service, level, n in conn.execute(
                "SELECT service, level, count(*) FROM records GROUP BY service, level"
            ):
                name = level_name(level)
                levels[name] = levels.get(name, 0) + n
                services[service] = services.get(service, 0) + n
                total += n
            oldest, newest = conn.execute("SELECT min(ts), max(ts) FROM records").fetchone()
            return {
                "total": total,
                "levels": levels,
                "services": services,
                "oldest": oldest,
                "newest": newest,
            }

        doc = await self.db.read(run)
        producers = [
            {
                "host": k[0],
                "pid": k[1],
                "service": k[2],
                "first_seq": p.first_seq,
                "last_seq": p.last_seq,
                "received": p.received,
                "missed": p.missed,
                "resets": p.resets,
                "last_seen": p.last_seen,
            }
            for k, p in sorted(self.producers.items(), key=lambda kv: -kv[1].last_seen)
        ]
        doc["producers"] = producers
        doc["missed"] = sum(p["missed"] for p in producers)
        doc["ingest"] = self.counters()
        doc["database"] = {"path": str(self.settings.path), "bytes": self.db.size_bytes()}
        return doc

    def counters(self) -> dict[str, Any]:
        b = self.batcher
        return {
            "received": self.received,
            "invalid": self.invalid,
            "duplicates": self.replayed_duplicates,
            "stored": b.flushed,
            "pending": b.pending,
            "dropped": b.dropped,
            "failed": b.failed,
            "flushes": b.flushes,
            "last_flush_ms": round(b.last_flush_s * 1000, 3),
            "trimmed": self.trimmed,
            "uptime_s": round(time.time() - self.started, 3),
        }


def _row_doc(row: Iterable[Any]) -> dict[str, Any]:
    doc = dict(zip(_COLUMNS, row, strict=True))
    if doc["id"] is None:
        del doc["id"]
    doc["level"] = level_name(doc["level"])
    fields = doc.get("fields")
    doc["fields"] = json.loads(fields) if fields else {}
    return doc


def _shrink(doc: dict[str, Any], budget: int) -> dict[str, Any]:
    """A record too large for a whole page: its message cut, its fields dropped, marked."""
    # JSON spends at most 6 bytes on one character (\u001f): budget // 8 characters fit
    short = {k: v[:1024] if isinstance(v, str) else v for k, v in doc.items()}
    short["msg"] = str(doc.get("msg", ""))[: budget // 8]
    short["fields"] = {}
    short["truncated"] = True
    return short


def _time_arg(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    ts = parse_ts(value)
    if ts is None:
        raise QueryError(f"{name}: expected epoch seconds or an ISO-8601 time, got {value!r}", name)
    return ts


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _level_arms(minimum: int) -> list[tuple[str, list[int], bool]]:
    """``level >= minimum`` as disjoint parts: ``(condition, args, force the level index)``."""
    points = [n for n in sorted(LEVEL_NAMES) if n >= minimum]
    arms: list[tuple[str, list[int], bool]] = [("level = ?", [n], False) for n in points]
    if not points:
        return [("level >= ?", [minimum], True)]
    if minimum < points[0]:
        arms.append(("level >= ? AND level < ?", [minimum, points[0]], True))
    arms.extend(("level > ? AND level < ?", [a, b], True) for a, b in itertools.pairwise(points))
    arms.append(("level >= ?", [points[-1] + 1], True))  # levels are integers
    return arms


@dataclass(frozen=True)
class Query:
    """A validated ``query`` request: its filters, page size, order and cursor.

    ``where`` are the filters an index serves in time order (time range, exact service);
    ``residual`` the ones tested row by row (text, globs, host, pid, logger, source,
    ``after_id``), which is why a page of a query with any scans at most
    ``scan_rows`` records (see :meth:`LogStore._page`).
    """

    where: tuple[str, ...]
    args: tuple[Any, ...]
    limit: int
    order: str
    after: tuple[float, int] | None
    #: minimum level (``level >= N``), planned apart (see :meth:`statement`)
    level: int | None = None
    residual: tuple[str, ...] = ()
    residual_args: tuple[Any, ...] = ()

    def statement(
        self,
        after: tuple[float, int] | None,
        fetch: int,
        *,
        columns: tuple[str, ...] = _COLUMNS,
        residual: bool = True,
        bound: tuple[float, int] | None = None,
        offset: int = 0,
    ) -> tuple[str, list[Any]]:
        """SQL for ``fetch`` rows strictly after the cursor ``after`` in this query's order,
        not beyond ``bound`` (inclusive), skipping ``offset``; without the residual filters
        when ``residual`` is false."""
        where, args = list(self.where), list(self.args)
        if residual:
            where.extend(self.residual)
            args.extend(self.residual_args)
        # (ts, id) is the order: a row value comparison seeks the ts index (id rides along)
        if after is not None:
            where.append(f"(ts, id) {'<' if self.order == 'desc' else '>'} (?, ?)")
            args.extend(after)
        if bound is not None:
            where.append(f"(ts, id) {'>=' if self.order == 'desc' else '<='} (?, ?)")
            args.extend(bound)
        order = f" ORDER BY ts {self.order}, id {self.order} LIMIT ?"
        select = f"SELECT {', '.join(columns)} FROM records"
        tail, tail_args = (order + " OFFSET ?", [fetch, offset]) if offset else (order, [fetch])
        if self.level is None:
            sql = select + (" WHERE " + " AND ".join(where) if where else "") + tail
            return sql, [*args, *tail_args]
        # "level >= N" as one ordered scan of the (level, ts) index per standard level, merged:
        # a rare level costs its own rows, not a scan of everything newer. Non-standard
        # numbers (events may carry any) are the ranges between them, each an index seek.
        parts: list[str] = []
        part_args: list[Any] = []
        for condition, extra, indexed in _level_arms(self.level):
            source = select + (" INDEXED BY records_level_ts" if indexed else "")
            clause = " AND ".join([condition, *where])
            parts.append(f"SELECT * FROM ({source} WHERE {clause}{order})")
            part_args.extend([*extra, *args, fetch + offset])
        return " UNION ALL ".join(parts) + tail, [*part_args, *tail_args]


def parse_query(params: dict[str, Any]) -> Query:
    """Validate a ``query`` document; raises :class:`QueryError` naming the field."""
    if not isinstance(params, dict):
        raise QueryError("query expects a JSON object")
    where: list[str] = []
    args: list[Any] = []
    residual: list[str] = []
    residual_args: list[Any] = []
    since = _time_arg(params, "since")
    until = _time_arg(params, "until")
    if since is not None:
        where.append("ts >= ?")
        args.append(since)
    if until is not None:
        where.append("ts <= ?")
        args.append(until)
    level = params.get("level")
    min_level: int | None = None
    if level not in (None, ""):
        min_level = level_number(level, default=-1)
        if min_level < 0:
            names = ", ".join(LEVEL_NAMES.values())
            raise QueryError(f"level: unknown level {level!r} (use {names})", "level")
    for column in ("service", "host", "source", "logger"):
        value = params.get(column)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise QueryError(f"{column}: expected a string", column)
        if column == "service" and not any(ch in value for ch in "*?["):
            where.append("service = ?")  # the (service, ts) index
            args.append(value)
        elif any(ch in value for ch in "*?["):
            # unary + keeps SQLite off the (service, ts) index for a glob's prefix range: that
            # plan sorts every match (seconds at 10^7 records) where the time scan stops at
            # the page
            residual.append(f"+{column} GLOB ?")
            residual_args.append(value)
        else:
            residual.append(f"{column} = ?")
            residual_args.append(value)
    if params.get("pid") not in (None, ""):
        residual.append("pid = ?")
        residual_args.append(_int(params["pid"], -1))
    text = params.get("text")
    if text not in (None, ""):
        pattern = _like(str(text))
        residual.append("(msg LIKE ? ESCAPE '\\' OR fields LIKE ? ESCAPE '\\')")
        residual_args.extend([pattern, pattern])
    after_id = params.get("after_id")
    if after_id not in (None, ""):
        residual.append("id > ?")
        residual_args.append(_int(after_id, 0))
    order = str(params.get("order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise QueryError(f"order: expected 'asc' or 'desc', got {order!r}", "order")
    limit = parse_limit(params, DEFAULT_LIMIT, MAX_LIMIT)
    cursor = parse_record_cursor(params.get("after"))
    return Query(
        tuple(where),
        tuple(args),
        limit,
        order,
        cursor,
        min_level,
        tuple(residual),
        tuple(residual_args),
    )


def build_query(params: dict[str, Any]) -> tuple[str, list[Any]]:
    """SQL and arguments of the first page of a ``query`` document (``limit`` rows)."""
    q = parse_query(params)
    return q.statement(q.after, q.limit)
