"""The state store's connections: one hand-off to a connection's thread for a whole job.

Every call to a database thread is a round trip, and those round trips (not fsync)
dominated the cost of a write batch; the store therefore runs a whole batch, a round of
gets or a paged read as ONE synchronous function on the raw ``sqlite3`` connection, through
the shared engine :class:`plantd.storage.sqlite.SqliteThread` (no private aiosqlite API).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from plantd.storage.sqlite import SqliteThread

T = TypeVar("T")


def on_db_thread(conn: SqliteThread, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
    """Run ``fn(raw sqlite3 connection)`` on ``conn``'s thread as ONE hand-off (FIFO with the
    connection's other calls: same queue, same thread)."""
    return conn.run(fn)


async def writer(path: Path) -> SqliteThread:
    """The store's one writer connection."""
    return await SqliteThread.connect(path, name="state-w")


def read_only_uri(path: Path) -> str:
    """The URI that opens ``path`` read-only (resolved once: the store's file stays put)."""
    return f"{path.resolve().as_uri()}?mode=ro"


async def read_only(uri: str) -> SqliteThread:
    """A private read-only connection on :func:`read_only_uri` (WAL readers never block the
    writer)."""
    return await SqliteThread.connect(uri, uri=True, name="state-r")
