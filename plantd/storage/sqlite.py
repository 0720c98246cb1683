"""One ``sqlite3`` connection on its own thread: every job is one hand-off.

The stores run a whole synchronous job (a write batch, a round of gets, a page) as ONE
function on the raw connection, because each hand-off to a database thread costs a thread
switch and those round trips, not fsync, dominated the cost of a write batch. aiosqlite has
no public API for that (its ``_execute``/``_conn`` are private), so this small engine is ours:
a thread owning the connection, a queue of jobs in FIFO order, each result handed back with
one ``call_soon_threadsafe`` (cheaper than an executor's chained futures), the event loop
never waiting on disk. The state store (writer, reader, page readers, backup) and
:class:`~plantd.storage.ingest.Database` (the logger's and metric module's writer and reader)
are built on it.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["SqliteThread"]

T = TypeVar("T")

#: a job: the function, the future to settle, its loop; None ends the thread
_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop] | None


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not fut.done():  # the awaiting task may have been cancelled meanwhile
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
    """The connection's thread: run jobs in order, settle each future on its loop."""
    while (job := jobs.get()) is not None:
        fn, fut, loop = job
        try:
            result = (True, fn())
        except BaseException as exc:  # handed to the awaiting task, never lost here
            result = (False, exc)
        try:
            loop.call_soon_threadsafe(_settle, fut, *result)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


class SqliteThread:
    """A ``sqlite3`` connection owned by one thread; :meth:`run` hands it a whole job.

    The thread is a daemon: a process that forgets to close a store still exits (what was
    acknowledged is committed; SQLite rolls back a transaction cut short)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread = threading.Thread(target=_serve, args=(self._jobs,), name=name, daemon=True)
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def connect(
        cls, database: str | Path, *, uri: bool = False, name: str = "sqlite"
    ) -> SqliteThread:
        """Open ``database`` (autocommit: the jobs say ``BEGIN``/``COMMIT``) on a new thread."""
        self = cls(name)
        self._thread.start()
        try:
            self._conn = await self._submit(
                lambda: sqlite3.connect(
                    database, uri=uri, isolation_level=None, check_same_thread=False
                )
            )
        except BaseException:
            self._closed = True
            self._jobs.put(None)
            raise
        return self

    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, fut, loop))
        return fut

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's thread, after every job queued before it."""
        conn = self._conn
        if self._closed or conn is None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return await self._submit(lambda: fn(conn))

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        """One statement whose rows nobody reads (pragmas, ``BEGIN``)."""
        await self.run(lambda c: c.execute(sql, tuple(params)).close())

    async def execute_fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """The rows of one statement."""
        return await self.run(lambda c: c.execute(sql, tuple(params)).fetchall())

    async def backup(self, target: SqliteThread) -> None:
        """Copy this database into ``target`` in one step (one read snapshot); ``target``'s
        thread must be idle meanwhile (nothing else uses it)."""
        dest = target._conn
        if dest is None:
            raise sqlite3.ProgrammingError("Cannot back up into a closed database.")
        await self.run(lambda c: c.backup(dest))

    async def close(self) -> None:
        """Close the connection after the queued jobs, then end the thread."""
        if self._closed:
            return
        try:
            await self.run(lambda c: c.close())
        finally:
            self._closed = True
            self._jobs.put(None)
