"""One hand-off to an aiosqlite connection's thread for a whole synchronous job.

Every aiosqlite call is a round trip to that thread, and those round trips (not fsync)
dominated the cost of a write batch; the store therefore runs a whole batch, a round of
gets or a paged read as ONE synchronous function on the raw ``sqlite3`` connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

from plantd.state.errors import StorageError

T = TypeVar("T")


def on_db_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
    """Run ``fn(raw sqlite3 connection)`` on ``conn``'s worker thread as ONE hand-off.

    FIFO order with the connection's other calls is kept (same queue, same thread).
    aiosqlite has no public API for this: ``_execute`` and ``_conn`` are private (0.17-0.22);
    tests/state/test_store_perf_paths.py fails if they disappear.
    """
    execute: Callable[[Callable[[], T]], Awaitable[T]] = conn._execute  # untyped in aiosqlite
    return execute(lambda: fn(conn._conn))


def check_db_thread_api(conn: aiosqlite.Connection) -> None:
    """Fail at open, not on the first write, if aiosqlite dropped the private API we use."""
    if not callable(getattr(conn, "_execute", None)) or not hasattr(type(conn), "_conn"):
        raise StorageError(
            f"aiosqlite {getattr(aiosqlite, '__version__', '?')} lacks Connection._execute/_conn"
            " (used to run a write batch in one call on the database thread)"
        )


def read_only_uri(path: Path) -> str:
    """The URI that opens ``path`` read-only (resolved once: the store's file stays put)."""
    return f"{path.resolve().as_uri()}?mode=ro"


async def read_only(uri: str) -> aiosqlite.Connection:
    """A private read-only connection on :func:`read_only_uri` (WAL readers never block the
    writer)."""
    return await aiosqlite.connect(uri, uri=True, isolation_level=None)
