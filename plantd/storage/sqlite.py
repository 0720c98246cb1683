"""One ``sqlite3`` connection on its own thread: every job is one hand-off.

The stores run a whole synchronous job (a write batch, a round of gets, a page) as ONE
function on the raw connection, because each hand-off to a database thread costs a thread
switch and those round trips, not fsync, dominated the cost of a write batch. aiosqlite has
no public API for that (its ``_execute``/``_conn`` are private), so this small engine is ours:
a one-thread executor owning the connection, jobs in FIFO order, the event loop never waiting
on disk. The state store (writer, reader, page readers, backup) and :class:`~plantd.storage.
ingest.Database` (the logger's and metric module's writer and reader) are built on it.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["SqliteThread"]

T = TypeVar("T")


class SqliteThread:
    """A ``sqlite3`` connection owned by one thread; :meth:`run` hands it a whole job."""

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self._executor = executor
        self._conn = conn
        self._closed = False

    @classmethod
    async def connect(
        cls, database: str | Path, *, uri: bool = False, name: str = "sqlite"
    ) -> SqliteThread:
        """Open ``database`` (autocommit: the jobs say ``BEGIN``/``COMMIT``) on a new thread."""
        executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        opener = functools.partial(
            sqlite3.connect, database, uri=uri, isolation_level=None, check_same_thread=False
        )
        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, opener)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's thread, after every job queued before it."""
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        """One statement whose rows nobody reads (pragmas, ``BEGIN``)."""
        await self.run(lambda c: c.execute(sql, tuple(params)).close())

    async def execute_fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """The rows of one statement."""
        return await self.run(lambda c: c.execute(sql, tuple(params)).fetchall())

    async def backup(self, target: SqliteThread) -> None:
        """Copy this database into ``target`` in one step (one read snapshot); ``target``'s
        thread must be idle meanwhile (nothing else uses it)."""
        await self.run(lambda c: c.backup(target._conn))

    async def close(self) -> None:
        """Close the connection after the queued jobs, then end the thread."""
        if self._closed:
            return
        try:
            await self.run(lambda c: c.close())
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)
