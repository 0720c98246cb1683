"""Building blocks shared by the logger and metric stores: high-rate bus ingestion into SQLite.

* :class:`Database`: one writer thread and one reader thread, each owning its own ``sqlite3``
  connection to a WAL database (two :class:`~plantd.storage.sqlite.SqliteThread`). Writes
  are serialized (SQLite 3.40 must not see two writers), queries run concurrently with writes
  and see committed rows only, and the event loop never waits on disk.
* :class:`Batcher`: collects items and flushes them every N items or T seconds with at most
  one flush in flight, so ingestion keeps receiving while a batch is written and a slow disk
  turns into bigger batches instead of a stall. Bounded: beyond ``max_pending`` items are
  dropped and counted.
* :class:`BusStore`: the lifecycle both stores share (database, batcher, bus readers,
  periodic retention, orderly stop), so neither writes it again.
* :func:`read_bus`: drains a SUB socket in bursts through the Cython receive path; one
  ``await`` per burst instead of per message is what makes 10,000 records/s cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import zmq
import zmq.asyncio

from plantd.protocol import jsoncodec
from plantd.storage.sqlite import SqliteThread
from plantd.transport import NOBLOCK, readable, recv_frames

__all__ = ["Batcher", "BusStore", "Database", "parse_ts", "read_bus"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def parse_ts(value: Any) -> float | None:
    """Epoch seconds from an epoch number or an ISO-8601 string; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        with contextlib.suppress(ValueError):
            return float(text)
        with contextlib.suppress(ValueError):
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return dt.timestamp()
    return None


class Database:
    """A WAL SQLite file with a writer thread and a reader thread (see module docstring)."""

    def __init__(self, path: str | Path, schema: str, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.schema = schema
        self.synchronous = synchronous
        self._writer: SqliteThread | None = None
        self._reader: SqliteThread | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await SqliteThread.connect(self.path, name=f"sqlite-w-{self.path.stem}")
        await self.write(self._configure_writer)
        self._reader = await SqliteThread.connect(
            f"file:{self.path}?mode=ro", uri=True, name=f"sqlite-r-{self.path.stem}"
        )
        await self.read(self._configure_reader)

    def _configure_writer(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a power cut may lose the last batches but never corrupts; logs and samples
        # are not worth an fsync per commit at 10,000 records/s
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(self.schema)

    @staticmethod
    def _configure_reader(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA query_only=1")

    async def write(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``fn(conn)`` on the writer thread (serialized with every other write)."""
        if self._writer is None:
            raise RuntimeError("database is not open")
        return await self._writer.run(fn)

    async def read(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``fn(conn)`` on the reader thread (never waits for writes, WAL)."""
        if self._reader is None:
            raise RuntimeError("database is not open")
        return await self._reader.run(fn)

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(sqlite3.Error):
                await writer.execute("PRAGMA optimize")
            await writer.close()

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total


class Batcher(Generic[T]):
    """Flush items through ``flush(batch)`` every ``size`` items or ``interval`` seconds."""

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[None]],
        *,
        size: int = 2000,
        interval: float = 0.1,
        max_pending: int = 200_000,
    ) -> None:
        self._flush = flush
        self.size = max(1, size)
        self.interval = interval
        self.max_pending = max_pending
        self._pending: list[T] = []
        self._full = asyncio.Event()
        self._oldest = 0.0
        self._current: asyncio.Future[None] | None = None
        self.added = 0
        self.flushed = 0
        self.dropped = 0
        self.failed = 0
        self.flushes = 0
        self.last_flush_s = 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, item: T) -> bool:
        """Queue one item (O(1), never blocks); False if dropped because the queue is full."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return False
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append(item)
        self.added += 1
        if len(self._pending) >= self.size:
            self._full.set()
        return True

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.add(item)

    async def flush_now(self) -> None:
        """Write everything pending and wait for it (shutdown, tests, read-your-writes)."""
        while True:
            if self._current is not None and not self._current.done():
                await asyncio.wait({self._current})  # the batch in flight goes first
                continue
            if not self._pending:
                return
            self._start_write()

    def _start_write(self) -> asyncio.Future[None]:
        batch, self._pending = self._pending, []
        self._full.clear()
        self._current = asyncio.ensure_future(self._write(batch))
        return self._current

    async def _write(self, batch: list[T]) -> None:
        started = time.monotonic()
        try:
            await self._flush(batch)
            self.flushed += len(batch)
        except Exception:
            # a failed batch is lost; it is counted, and the next one gets a fresh try
            self.failed += len(batch)
            log.exception("flush of %d items failed", len(batch))
        self.flushes += 1
        self.last_flush_s = time.monotonic() - started

    async def run(self) -> None:
        """Flush loop until cancelled; cancellation leaves pending items for :meth:`flush_now`."""
        while True:
            if self._pending:
                wait = self._oldest + self.interval - time.monotonic()
            else:
                wait = self.interval
            if wait > 0 and len(self._pending) < self.size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
            if self._current is not None and not self._current.done():
                await asyncio.wait({self._current})  # flush_now's batch: one write at a time
            if not self._pending:
                continue
            # shielded: cancelling the loop (shutdown) must not lose the batch being written
            await asyncio.shield(self._start_write())


async def read_bus(
    endpoint: str,
    topics: Iterable[str],
    on_message: Callable[[list[bytes], float], None],
    *,
    hwm: int = 100_000,
    burst: int = 2000,
    context: zmq.asyncio.Context | None = None,
    connected: asyncio.Event | None = None,
) -> None:
    """Subscribe to ``topics`` on a bus backend and call ``on_message(frames, received)``.

    Runs until cancelled. ``received`` is the wall-clock time of the burst. ``on_message``
    must be quick and must not raise (it is the ingestion hot path). With several bus
    endpoints (one per broker) each message is handed over once (plantd.client.dedup).
    """
    from plantd.client.dedup import BusDedup
    from plantd.client.secure import resolve
    from plantd.config import parse_endpoints

    endpoints = parse_endpoints(endpoint, "bus endpoint")
    sock = (context or zmq.asyncio.Context.instance()).socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, hwm)
    resolve(None).apply(sock)  # the process's CURVE keys (plantd.security.settings)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    for e in endpoints:
        sock.connect(e)
    if len(endpoints) > 1:
        dedup = BusDedup()
        deliver = on_message

        def on_message(frames: list[bytes], received: float) -> None:
            payload = frames[1] if len(frames) > 1 else b""
            try:
                doc = jsoncodec.loads(payload)
            except ValueError:
                doc = None
            if dedup.accept(frames[0], payload, doc):
                deliver(frames, received)

    if connected is not None:
        connected.set()
    try:
        while True:
            await sock.poll(1000)
            now = time.time()
            n = 0
            while n < burst and readable(sock):
                try:
                    frames = recv_frames(sock, NOBLOCK)
                except zmq.Again:
                    break
                n += 1
                on_message(frames, now)
            if n >= burst:
                await asyncio.sleep(0)  # let the flusher and the MDP worker run
    finally:
        sock.close(linger=0)


class BusStore:
    """A store fed from buses: a :class:`Database`, a :class:`Batcher` flushing into it, bus
    readers feeding the batcher and a periodic retention pass.

    ``start()`` opens the database, runs ``_load()``, starts the flusher, the retention loop
    and one reader per ``_subscriptions()`` entry, and returns once every reader is
    subscribed. ``stop()`` cancels them, writes the last batch and closes the database.
    """

    #: prefix of task names and of log messages
    name = "store"

    def __init__(self, db: Database, batcher: Batcher[Any], retention_interval: float) -> None:
        self.db = db
        self.batcher = batcher
        self.retention_interval = retention_interval
        self.subscribed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _load(self) -> None:
        """Read what must be in memory before ingestion starts."""

    def _subscriptions(
        self,
    ) -> Iterable[tuple[str, list[str], Callable[[list[bytes], float], None], int]]:
        """(backend endpoint, topics, handler, high-water mark) per bus to read."""
        return ()

    async def apply_retention(self) -> int:
        """Trim what is beyond the retention limits; returns how many rows went."""
        return 0

    async def start(self) -> None:
        await self.db.open()
        await self._load()
        self._spawn(self.batcher.run(), "flush")
        self._spawn(self._retention_loop(), "retention")
        waits = []
        for endpoint, topics, handler, hwm in self._subscriptions():
            ready = asyncio.Event()
            waits.append(ready.wait())
            self._spawn(read_bus(endpoint, topics, handler, hwm=hwm, connected=ready), "bus")
        await asyncio.gather(*waits)
        self.subscribed.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.batcher.flush_now()
        await self.db.close()

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Awaitable[None], what: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"{self.name}.{what}"))  # type: ignore[arg-type]

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retention_interval)
            try:
                await self.apply_retention()
            except sqlite3.Error:
                log.exception("%s retention failed", self.name)
