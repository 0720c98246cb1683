"""Reads beside the paged ones (plantd.state.pages): grouped gets and exports.

Reads go through read-only connections (WAL readers never block the writer) and see
committed data only; each runs as ONE hand-off to its connection's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite

from plantd.protocol import jsoncodec
from plantd.state import dbthread, pages
from plantd.state.errors import StorageError, storage_error

GET_SQL = (
    "SELECT EXISTS(SELECT 1 FROM scopes WHERE name=?1), k.value, k.create_revision,"
    " k.mod_revision, k.version, k.updated, k.expires,"
    " (SELECT value FROM meta WHERE name='revision')"
    " FROM (SELECT 1) LEFT JOIN kv k ON k.scope=?1 AND k.key=?2"
    " AND (k.expires IS NULL OR k.expires > ?3)"
)
"""``(scope exists, value, create, mod, version, updated, expires, revision)`` of a live key."""


def get_rows(reqs: list[tuple[str, str, float]], db: sqlite3.Connection) -> list[Any]:
    """Rows for a round of gets (reader thread); a failing statement fails only its get."""
    out: list[Any] = []
    for scope, key, now in reqs:
        try:
            out.append(db.execute(GET_SQL, (scope, key, now)).fetchone())
        except sqlite3.Error as e:
            out.append(e)
    return out


class GroupedGets:
    """Answer all pending gets in ONE hand-off per round (group read, like group commit).

    Each get is issued after the writes it must see were acknowledged (= committed), and
    its row is read after that, so read-your-writes holds; expiry uses each get's own call
    time.
    """

    def __init__(self, reader: aiosqlite.Connection) -> None:
        self._reader = reader
        self._gets: list[tuple[str, str, float, asyncio.Future[tuple[Any, ...]]]] = []
        self._task: asyncio.Task[None] | None = None

    async def get(self, scope: str, key: str, now: float) -> tuple[Any, ...]:
        """The :data:`GET_SQL` row of ``scope``/``key`` as of ``now``."""
        fut: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        self._gets.append((scope, key, now, fut))
        if self._task is None:
            self._task = asyncio.create_task(self._serve(), name="state-reads")
        return await fut

    async def drain(self) -> None:
        """Wait until the gets already issued are answered."""
        if self._task is not None:
            await asyncio.wait([self._task])

    async def _serve(self) -> None:
        try:
            while self._gets:
                batch, self._gets = self._gets, []
                batch = [g for g in batch if not g[3].done()]
                if not batch:
                    continue
                args = [(scope, key, now) for scope, key, now, _ in batch]
                try:
                    rows = await dbthread.on_db_thread(
                        self._reader, functools.partial(get_rows, args)
                    )
                except Exception as e:  # e.g. ValueError from a closed connection
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for (*_, fut), row in zip(batch, rows, strict=True):
                    if fut.done():
                        continue
                    if isinstance(row, sqlite3.Error):
                        fut.set_exception(storage_error("read", row))
                    else:
                        fut.set_result(row)
        finally:
            self._task = None
            pending, self._gets = self._gets, []
            for *_, fut in pending:
                if not fut.done():
                    fut.set_exception(StorageError("state store stopped before the read"))


def export_doc(
    rev: int, scopes: dict[str, dict[str, Any]], count: int, cursor: tuple[str, str] | None
) -> dict[str, Any]:
    """One export page: the export document of its scopes plus the paging fields."""
    return {
        "format": "plantd-state",
        "version": 1,
        "revision": rev,
        "scopes": scopes,
        "count": count,
        "more": cursor is not None,
        "next": {"scope": cursor[0], "key": cursor[1]} if cursor else None,
    }


def export_all(db: sqlite3.Connection, now: float) -> dict[str, Any]:
    """All scopes, keys and values live at ``now``, as an export document (one snapshot
    when run in one read transaction)."""
    rev = pages.revision(db)
    out: dict[str, dict[str, Any]] = {
        row[0]: {} for row in db.execute("SELECT name FROM scopes ORDER BY name")
    }
    rows = db.execute(
        "SELECT scope, key, value FROM kv WHERE expires IS NULL OR expires > ? ORDER BY scope, key",
        (now,),
    ).fetchall()
    for scope, key, text in rows:
        out.setdefault(scope, {})[key] = jsoncodec.loads(text)
    return {"format": "plantd-state", "version": 1, "revision": rev, "scopes": out}


async def export_pages(
    read_uri: str, *, after: tuple[str, str] | None, limit: int, max_bytes: int, now: float
) -> AsyncIterator[dict[str, Any]]:
    """Every page of an export from ONE snapshot: a private read-only connection holds one
    read transaction until the last page."""
    try:
        conn = await dbthread.read_only(read_uri)
    except sqlite3.Error as e:
        raise storage_error("export", e) from None
    try:
        await conn.execute("BEGIN")
        rev = await dbthread.on_db_thread(conn, pages.revision)  # pins the snapshot
        cursor = after
        while True:
            page = await dbthread.on_db_thread(
                conn,
                functools.partial(
                    pages.export_page, after=cursor, limit=limit, max_bytes=max_bytes, now=now
                ),
            )
            cursor = page[2]
            yield export_doc(rev, *page)
            if cursor is None:
                return
    except sqlite3.Error as e:
        raise storage_error("export", e) from None
    finally:
        with contextlib.suppress(sqlite3.Error, ValueError):
            await conn.execute("COMMIT")
        await conn.close()
